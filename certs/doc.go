// Package certs holds what CHOM knows about a site's TLS certificate,
// whoever issued it: the certificate value (Certificate, parsed from PEM),
// the checks an uploaded certificate must pass (CheckUpload) and when a
// certificate is due for renewal (RenewAfter).
//
// Issuing through ACME is certs/acme; encryption at rest is certs/seal;
// the stored record is models.SiteCertificate.
package certs
