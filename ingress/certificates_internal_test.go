package ingress

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/chomhq/chom/certs"
	"github.com/chomhq/chom/ingress/input"
)

// Each problem of certs.CheckUpload goes to the field it is about, one entry
// per field, and a key that does not parse is described without the
// parser's words.
func TestUploadFieldErrors(t *testing.T) {
	t.Parallel()
	other := errors.New("database down")
	if got := uploadFieldErrors(other); got != other {
		t.Errorf("other errors: %v, want them as they are", got)
	}
	err := uploadFieldErrors(&certs.UploadError{Problems: []string{
		"chain: certificate 1: x509: malformed certificate",
		"key: asn1: structure error: tags don't match (16 vs {class:1 tag:7 length:97})",
		"the private key does not belong to the first certificate",
		"the certificate does not cover a.example (it names b.example)",
		"key: PEM block is a \"CERTIFICATE\", not a private key",
	}})
	var v *input.ValidationError
	if !errors.As(err, &v) {
		t.Fatalf("err = %v, want a ValidationError", err)
	}
	want := []input.FieldError{
		{Field: "certificate_pem", Detail: "is refused: chain: certificate 1: x509: malformed certificate; the certificate does not cover a.example (it names b.example)"},
		{Field: "private_key_pem", Detail: "is refused: " + keyUnparsable + "; the private key does not belong to the first certificate; key: PEM block is a \"CERTIFICATE\", not a private key"},
	}
	if diff := cmp.Diff(want, v.Fields); diff != "" {
		t.Errorf("fields (-want +got):\n%s", diff)
	}
	if err := uploadFieldErrors(&certs.UploadError{}); err == nil {
		t.Error("an UploadError without problems let the upload through")
	}
}
