package input

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestUploadCertificateRequestNormalize(t *testing.T) {
	t.Parallel()
	const cert, key = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "-----BEGIN PRIVATE KEY-----\nsecret-bytes\n-----END PRIVATE KEY-----\n"
	good := UploadCertificateRequest{CertificatePEM: cert, PrivateKeyPEM: key}
	if got, err := good.Normalize(); err != nil || got != good {
		t.Fatalf("good request: %+v, %v", got, err)
	}
	for _, tc := range []struct {
		name string
		in   UploadCertificateRequest
		want []FieldError
	}{
		{"empty", UploadCertificateRequest{}, []FieldError{{"certificate_pem", "is required"}, {"private_key_pem", "is required"}}},
		{"blank", UploadCertificateRequest{CertificatePEM: " \n", PrivateKeyPEM: key}, []FieldError{{"certificate_pem", "is required"}}},
		{"not PEM", UploadCertificateRequest{CertificatePEM: "MIIB", PrivateKeyPEM: "secret-bytes"},
			[]FieldError{{"certificate_pem", "must be PEM text (-----BEGIN ...-----)"}, {"private_key_pem", "must be PEM text (-----BEGIN ...-----)"}}},
		{"chain too long", UploadCertificateRequest{CertificatePEM: cert + strings.Repeat("x", MaxCertificatePEMBytes), PrivateKeyPEM: key},
			[]FieldError{{"certificate_pem", "must be at most 65536 bytes"}}},
		{"key too long", UploadCertificateRequest{CertificatePEM: cert, PrivateKeyPEM: key + strings.Repeat("x", MaxPrivateKeyPEMBytes)},
			[]FieldError{{"private_key_pem", "must be at most 16384 bytes"}}},
	} {
		got, err := tc.in.Normalize()
		var v *ValidationError
		if !errors.As(err, &v) {
			t.Errorf("%s: err = %v, want a ValidationError", tc.name, err)
			continue
		}
		if diff := cmp.Diff(tc.want, v.Fields); diff != "" {
			t.Errorf("%s: fields (-want +got):\n%s", tc.name, diff)
		}
		if got != (UploadCertificateRequest{}) {
			t.Errorf("%s: returned %+v on error, want the zero value", tc.name, got)
		}
		if strings.Contains(err.Error(), "secret-bytes") {
			t.Errorf("%s: the error quotes the key: %v", tc.name, err)
		}
	}
}

// A route with a limit of its own decodes up to it and refuses one byte
// more, naming the limit.
func TestDecodeJSONLimit(t *testing.T) {
	t.Parallel()
	body := `{"certificate_pem":"` + strings.Repeat("a", 100) + `","private_key_pem":"b"}`
	var dst UploadCertificateRequest
	if err := DecodeJSONReader(strings.NewReader(body), "application/json", &dst); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		limit  int64
		status int
	}{{int64(len(body)), 0}, {int64(len(body)) - 1, 413}} {
		err := decodeReader(strings.NewReader(body), "application/json", tc.limit, &dst)
		var de *DecodeError
		switch {
		case tc.status == 0 && err != nil:
			t.Errorf("limit %d: %v", tc.limit, err)
		case tc.status != 0 && (!errors.As(err, &de) || de.Status != tc.status || !strings.Contains(de.Detail, "at most "+strconv.FormatInt(tc.limit, 10))):
			t.Errorf("limit %d: err = %v, want %d naming the limit", tc.limit, err, tc.status)
		}
	}
}
