package ingress

import (
	"errors"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/chomhq/chom/certs"
	"github.com/chomhq/chom/ingress/input"
	"github.com/chomhq/chom/models"
)

// The certificate routes of a site:
//
//	GET  /sites/{id}/certificate  the record (no key, no chain); 404 while none
//	POST /sites/{id}/certificate  a new ACME certificate: 202 + certificate.issue
//	PUT  /sites/{id}/certificate  install an uploaded one: 202 + certificate.issue
//
// Issuing or installing stores a private key, sealed with the platform's key
// ring (CHOM_CERT_ENCRYPTION_KEYS). Without a ring (Config.Certificates nil)
// the platform cannot keep a key, so POST and PUT on a site of the caller
// answer 409 urn:chom:problem:https-not-configured before reading the body:
// nothing is accepted that no worker could finish. GET still reads
// the records (it never opens a key).
//
// Another tenant's site is a 404 whatever the body says and whether or not
// HTTPS is configured: POST and PUT look the site up first
// (certificateSite), like every route of a tenant's resource.

// errHTTPSNotConfigured: the platform has no key ring to seal certificate
// keys with.
var errHTTPSNotConfigured = errors.New("HTTPS is not configured on this platform")

// CertificateView is the answer of GET /sites/{id}/certificate.
type CertificateView struct {
	SiteID string `json:"site_id"`
	// Status is pending (no certificate yet), issued or failed (no
	// certificate, the last attempt failed).
	Status string `json:"status"`
	// Source is acme (issued and renewed by CHOM) or upload.
	Source  string   `json:"source"`
	Issuer  string   `json:"issuer"`
	Domains []string `json:"domains"`
	Serial  string   `json:"serial"`
	// NotBefore, NotAfter bound the certificate's validity; RenewAfter is
	// when CHOM renews it (or retries after a failure). Null when unknown.
	NotBefore  *time.Time `json:"not_before"`
	NotAfter   *time.Time `json:"not_after"`
	RenewAfter *time.Time `json:"renew_after"`
	// LastError is the last failed issuance or renewal, when there is one.
	LastError *CertificateError `json:"last_error,omitempty"`
	// OperationID is the site's unfinished certificate.issue; null when none.
	OperationID *string   `json:"operation_id"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// CertificateError is why the last issuance or renewal of a site failed.
type CertificateError struct {
	Code    string    `json:"code"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// certificateView renders a record for its tenant.
func certificateView(v *models.SiteCertificateView) CertificateView {
	out := CertificateView{
		SiteID: v.SiteID, Status: v.Status, Source: v.Source, Issuer: v.Issuer, Domains: v.Domains, Serial: v.Serial,
		NotBefore: utc(v.NotBefore), NotAfter: utc(v.NotAfter), RenewAfter: utc(v.RenewAfter), UpdatedAt: v.UpdatedAt.UTC(),
	}
	if out.Domains == nil {
		out.Domains = []string{}
	}
	if v.LastErrorCode != "" {
		out.LastError = &CertificateError{Code: v.LastErrorCode, Message: v.LastErrorMessage}
		if v.LastErrorAt != nil {
			out.LastError.At = v.LastErrorAt.UTC()
		}
	}
	if v.OperationID != "" {
		out.OperationID = &v.OperationID
	}
	return out
}

func (a *API) getCertificate(c *gin.Context) {
	id, ok := a.pathID(c, models.PrefixSite)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	v, err := a.reader(ctx).TenantSiteCertificate(ctx, principal(c).TenantID, id)
	if err != nil {
		a.fail(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(200, certificateView(v))
}

// certificateSite reads the :id of a certificate mutation and answers, and
// returns false, when it is not a live site of the caller's tenant (404) or
// when HTTPS is not configured (409), before the body is read.
func (a *API) certificateSite(c *gin.Context) (string, bool) {
	id, ok := a.pathID(c, models.PrefixSite)
	if !ok {
		return "", false
	}
	site, err := a.store.GetSite(c.Request.Context(), principal(c).TenantID, id)
	if err == nil && site.DeletedAt != nil {
		err = models.ErrNotFound
	}
	if err == nil && a.certs == nil {
		err = errHTTPSNotConfigured
	}
	if err != nil {
		a.fail(c, err)
		return "", false
	}
	return id, true
}

func (a *API) issueCertificate(c *gin.Context) {
	id, ok := a.certificateSite(c)
	if !ok {
		return
	}
	var (
		raw       input.IssueCertificateRequest
		decodeErr error
	)
	if c.Request.ContentLength != 0 {
		decodeErr = input.DecodeJSON(c.Request, &raw)
	}
	req, err := raw.Normalize()
	if err := input.Join(decodeErr, err); err != nil {
		a.fail(c, err)
		return
	}
	acc, err := a.accept(c, map[string]any{"site_id": id, "request": req})
	if err != nil {
		a.fail(c, err)
		return
	}
	ctx, cancel := mutationContext(c)
	defer cancel()
	res, err := a.store.StartCertificateIssue(ctx, acc, id, models.IssueRequest{HSTS: req.HSTS})
	if err != nil {
		a.fail(c, err)
		return
	}
	a.enqueue(c, res.Operation)
	writeAccepted(c, res.Operation)
}

func (a *API) uploadCertificate(c *gin.Context) {
	id, ok := a.certificateSite(c)
	if !ok {
		return
	}
	var raw input.UploadCertificateRequest
	decodeErr := input.DecodeJSONLimit(c.Request, input.MaxUploadBodyBytes, &raw)
	req, err := raw.Normalize()
	if err := input.Join(decodeErr, err); err != nil {
		a.fail(c, err)
		return
	}
	acc, err := a.accept(c, map[string]string{"site_id": id,
		"certificate_pem": req.CertificatePEM, "private_key_pem": req.PrivateKeyPEM})
	if err != nil {
		a.fail(c, err)
		return
	}
	chain, key, now := []byte(req.CertificatePEM), []byte(req.PrivateKeyPEM), a.now()
	ctx, cancel := mutationContext(c)
	defer cancel()
	res, err := a.certs.StartCertificateUpload(ctx, models.UploadParams{Accept: acc, SiteID: id, ChainPEM: chain, KeyPEM: key,
		Check: func(domains []string) error {
			_, err := certs.CheckUpload(chain, key, domains, now)
			return uploadFieldErrors(err)
		}})
	if err != nil {
		a.fail(c, err)
		return
	}
	a.enqueue(c, res.Operation)
	writeAccepted(c, res.Operation)
}

// keyUnparsable replaces the parser's message for a key that does not parse.
const keyUnparsable = "key: the PEM block is not a private key in PKCS #8, SEC 1 (EC) or PKCS #1 (RSA) form"

// uploadFieldErrors turns certs.CheckUpload's *certs.UploadError into the
// 422 of the upload: each problem goes to the field it is about (the key's
// own parse error and a key that does not belong to the certificate to
// private_key_pem, everything else to certificate_pem), one entry per field
// with its problems joined. Other errors are returned as they are. No
// problem describes the key beyond its PEM block type: a key that does not
// parse gets keyUnparsable, not the parser's message.
func uploadFieldErrors(err error) error {
	var ue *certs.UploadError
	if !errors.As(err, &ue) {
		return err
	}
	var chain, key []string
	for _, p := range ue.Problems {
		switch {
		case strings.HasPrefix(p, "key: no PEM block"), strings.HasPrefix(p, "key: PEM block is a"):
			key = append(key, p)
		case strings.HasPrefix(p, "key:"):
			// The parser's own words describe the secret's bytes (ASN.1
			// tags, lengths): say what was expected instead.
			key = append(key, keyUnparsable)
		case strings.Contains(p, "private key"):
			key = append(key, p)
		default:
			chain = append(chain, p)
		}
	}
	v := &input.ValidationError{}
	if len(chain) > 0 {
		v.Add("certificate_pem", "is refused: "+strings.Join(chain, "; "))
	}
	if len(key) > 0 {
		v.Add("private_key_pem", "is refused: "+strings.Join(key, "; "))
	}
	if len(v.Fields) == 0 {
		v.Add("certificate_pem", "is refused")
	}
	return v
}
