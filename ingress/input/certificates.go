package input

import (
	"fmt"
	"strings"
)

// Size limits of a certificate upload: a chain is a few kB (a leaf and one
// or two intermediates), a key well under 4 kB (RSA 4096 in PKCS #8 is about
// 3.3 kB). The same limits as the drivers apply when they deploy one.
const (
	// MaxCertificatePEMBytes is the longest certificate_pem accepted.
	MaxCertificatePEMBytes = 64 << 10
	// MaxPrivateKeyPEMBytes is the longest private_key_pem accepted.
	MaxPrivateKeyPEMBytes = 16 << 10
	// MaxUploadBodyBytes is the largest body of a certificate upload: both
	// fields at their limits, JSON-escaped (each newline takes two bytes),
	// with room to spare. One byte more is a 413.
	MaxUploadBodyBytes = 96 << 10
)

// IssueCertificateRequest is the (optional) body of POST
// /api/v1/sites/{id}/certificate.
type IssueCertificateRequest struct {
	// HSTS, when given, changes the site's HSTS opt-in; the new certificate
	// is deployed with it. Omitted or null: unchanged.
	HSTS *bool `json:"hsts,omitempty"`
}

// Normalize returns the request as it is: every value of its one field is
// valid, and a mistyped one is the decoder's 422.
func (r IssueCertificateRequest) Normalize() (IssueCertificateRequest, error) { return r, nil }

// UploadCertificateRequest is the body of PUT /api/v1/sites/{id}/certificate:
// a certificate chain (the site's certificate first, then its
// intermediates) and its private key, both PEM.
type UploadCertificateRequest struct {
	CertificatePEM string `json:"certificate_pem"`
	PrivateKeyPEM  string `json:"private_key_pem"`
}

// Normalize checks what can be checked without parsing: both fields are
// present, within their limits (MaxCertificatePEMBytes,
// MaxPrivateKeyPEMBytes) and hold a PEM block ("-----BEGIN "). Whether the
// chain and key are good and fit the site is certs.CheckUpload's job. Error
// details never quote the values (the key is secret). On error the returned
// request is the zero value.
func (r UploadCertificateRequest) Normalize() (UploadCertificateRequest, error) {
	var v ValidationError
	pemField(&v, "certificate_pem", r.CertificatePEM, MaxCertificatePEMBytes)
	pemField(&v, "private_key_pem", r.PrivateKeyPEM, MaxPrivateKeyPEMBytes)
	if err := v.Err(); err != nil {
		return UploadCertificateRequest{}, err
	}
	return r, nil
}

// pemField checks one PEM member.
func pemField(v *ValidationError, field, value string, limit int) {
	switch {
	case strings.TrimSpace(value) == "":
		v.Add(field, "is required")
	case len(value) > limit:
		v.Add(field, fmt.Sprintf("must be at most %d bytes", limit))
	case !strings.Contains(value, "-----BEGIN "):
		v.Add(field, "must be PEM text (-----BEGIN ...-----)")
	}
}
