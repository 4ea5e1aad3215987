package integration

import (
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/certs/seal"
	"github.com/chomhq/chom/drivers/tlstest"
	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// certKeys is a key ring for CHOM_CERT_ENCRYPTION_KEYS (32 bytes of test
// material, never used outside tests).
const certKeys = "test1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

// certSnapshot counts every row a certificate request could write.
func (s *stack) certSnapshot() [8]int {
	b := s.snapshot()
	return [8]int{b[0], b[1], b[2], b[3], b[4], b[5], s.count("certificate_uploads", ""), s.count("site_certificates", "")}
}

// activeHTTPSOffSite creates a site of the tenant of token with HTTPS off
// (so nothing is issued by itself) and runs its provision through the
// worker's handler: the site is active on the stack's server.
func (s *stack) activeHTTPSOffSite(t *testing.T, token, tenantID, domain string, aliases ...string) string {
	t.Helper()
	op := s.createSiteBody(token, map[string]any{"domain": domain, "site_type": "html", "https": "off", "aliases": aliases})
	if err := runTask(t, s.provision, queue.TypeSiteProvision, op, tenantID); err != nil {
		t.Fatalf("provision %s: %v", domain, err)
	}
	var site models.Site
	s.do("GET", "/api/v1/sites/"+op.TargetID, token, nil).json(t, &site)
	if site.Status != models.SiteStatusActive {
		t.Fatalf("site %s is %s after its provision", domain, site.Status)
	}
	return op.TargetID
}

// upload is the body of a certificate upload.
func upload(chain, key []byte) map[string]string {
	return map[string]string{"certificate_pem": string(chain), "private_key_pem": string(key)}
}

// keyMaterial is the base64 body of a PEM key, what must never come back.
func keyMaterial(t *testing.T, keyPEM []byte) string {
	t.Helper()
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		t.Fatal("no PEM key")
	}
	return base64.StdEncoding.EncodeToString(b.Bytes)[:40]
}

// TestSiteHTTPSFields: POST /sites takes https and hsts, the site shows
// both, and bad values are one 422 naming each field, writing nothing.
func TestSiteHTTPSFields(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true})
		for _, tc := range []struct {
			body  map[string]any
			https string
			hsts  bool
		}{
			{map[string]any{"domain": "plain.example", "site_type": "html"}, "auto", false},
			{map[string]any{"domain": "off.example", "site_type": "html", "https": "off", "hsts": true}, "off", true},
			{map[string]any{"domain": "auto.example", "site_type": "html", "https": "auto", "hsts": nil}, "auto", false},
		} {
			op := s.createSiteBody(s.tokenA, tc.body)
			var site models.Site
			s.do("GET", "/api/v1/sites/"+op.TargetID, s.tokenA, nil).json(t, &site)
			if site.HTTPS != tc.https || site.HSTS != tc.hsts {
				t.Errorf("%v: site https=%q hsts=%v, want %q %v", tc.body, site.HTTPS, site.HSTS, tc.https, tc.hsts)
			}
		}
		before := s.snapshot()
		r := s.do("POST", "/api/v1/sites", s.tokenA, map[string]any{"domain": "bad.example", "site_type": "html", "https": "on", "hsts": "yes"})
		p := assertProblem(t, r, http.StatusUnprocessableEntity, "https")
		got := map[string]string{}
		for _, e := range p.Errors {
			got[e.Field] = e.Detail
		}
		if diff := cmp.Diff(map[string]string{"https": "must be one of auto, off", "hsts": "must be a boolean"}, got); diff != "" {
			t.Errorf("fields named (-want +got):\n%s", diff)
		}
		assertProblem(t, s.do("POST", "/api/v1/sites", s.tokenA, map[string]any{"domain": "bad.example", "site_type": "html", "https": "AUTO"}),
			http.StatusUnprocessableEntity, "https")
		if after := s.snapshot(); after != before {
			t.Errorf("bad https/hsts wrote rows: before %v, after %v", before, after)
		}
		// https "auto" and an omitted https are the same request under an
		// Idempotency-Key.
		a := s.do("POST", "/api/v1/sites", s.tokenA, map[string]any{"domain": "same.example", "site_type": "html"}, "Idempotency-Key", "same-1")
		b := s.do("POST", "/api/v1/sites", s.tokenA, map[string]any{"domain": "same.example", "site_type": "html", "https": "auto", "hsts": false},
			"Idempotency-Key", "same-1")
		opA, opB := accepted(t, a), accepted(t, b)
		if opA.ID != opB.ID {
			t.Errorf("https auto and omitted made two operations: %s, %s", opA.ID, opB.ID)
		}
	})
}

// TestCertificateAPI drives GET, POST and PUT /sites/{id}/certificate
// through the production wiring (the worker's handlers run by the test, so
// certificate operations stay pending): every answer, hostile input
// included, and that a refused request writes nothing.
func TestCertificateAPI(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true, env: map[string]string{"CHOM_CERT_ENCRYPTION_KEYS": certKeys}})
		ca := tlstest.NewCA(t)
		site := s.activeHTTPSOffSite(t, s.tokenA, s.tenantA, "shop.example", "www.shop.example")
		path := "/api/v1/sites/" + site + "/certificate"
		good := ca.Issue(t, []string{"shop.example", "www.shop.example"}, tlstest.LeafOptions{})
		secret := keyMaterial(t, good.Cert.KeyPEM)

		assertProblem(t, s.do("GET", path, s.tokenA, nil), http.StatusNotFound, "")

		// Hostile input: each is refused, names what is wrong, never
		// echoes the key, and writes nothing.
		before := s.certSnapshot()
		other := ca.Issue(t, []string{"other.example"}, tlstest.LeafOptions{})
		expired := ca.Issue(t, []string{"shop.example", "www.shop.example"},
			tlstest.LeafOptions{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
		apexOnly := ca.Issue(t, []string{"shop.example"}, tlstest.LeafOptions{})
		garbage := []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
		for _, tc := range []struct {
			name   string
			token  string
			body   any
			status int
			fields map[string]string // field → a phrase its detail must hold
		}{
			{"another tenant's site", s.tokenB, upload(good.Cert.ChainPEM, good.Cert.KeyPEM), http.StatusNotFound, nil},
			{"another tenant's site, bad body", s.tokenB, `{"frequency":"daily"}`, http.StatusNotFound, nil},
			{"key of another certificate", s.tokenA, upload(good.Cert.ChainPEM, other.Cert.KeyPEM), http.StatusUnprocessableEntity,
				map[string]string{"private_key_pem": "does not belong to the first certificate"}},
			{"expired chain", s.tokenA, upload(expired.Cert.ChainPEM, expired.Cert.KeyPEM), http.StatusUnprocessableEntity,
				map[string]string{"certificate_pem": "the certificate expired at"}},
			{"chain for another domain", s.tokenA, upload(other.Cert.ChainPEM, other.Cert.KeyPEM), http.StatusUnprocessableEntity,
				map[string]string{"certificate_pem": "does not cover shop.example, www.shop.example (it names other.example)"}},
			{"chain missing an alias", s.tokenA, upload(apexOnly.Cert.ChainPEM, apexOnly.Cert.KeyPEM), http.StatusUnprocessableEntity,
				map[string]string{"certificate_pem": "does not cover www.shop.example"}},
			{"garbage PEM", s.tokenA, upload(garbage, []byte("-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n")),
				http.StatusUnprocessableEntity, map[string]string{"certificate_pem": "chain: certificate 1",
					"private_key_pem": "is refused: key: the PEM block is not a private key in PKCS #8"}},
			{"not PEM at all", s.tokenA, upload([]byte("hello"), []byte("world")), http.StatusUnprocessableEntity,
				map[string]string{"certificate_pem": "must be PEM", "private_key_pem": "must be PEM"}},
			{"key pasted into the chain", s.tokenA, upload(append(append([]byte{}, good.Cert.ChainPEM...), good.Cert.KeyPEM...), good.Cert.KeyPEM),
				http.StatusUnprocessableEntity, map[string]string{"certificate_pem": `is a "PRIVATE KEY", want CERTIFICATE`}},
			{"fields missing, one unknown", s.tokenA, map[string]string{"certificate": "x"}, http.StatusUnprocessableEntity,
				map[string]string{"certificate": "is not a known field", "certificate_pem": "is required", "private_key_pem": "is required"}},
			{"chain over 64 KiB", s.tokenA, upload(append(append([]byte{}, good.Cert.ChainPEM...), strings.Repeat("A", 64<<10)...), good.Cert.KeyPEM),
				http.StatusUnprocessableEntity, map[string]string{"certificate_pem": "must be at most 65536 bytes"}},
			{"huge body", s.tokenA, `{"certificate_pem":"` + strings.Repeat("A", 200<<10) + `","private_key_pem":"x"}`, http.StatusRequestEntityTooLarge, nil},
			{"not JSON", s.tokenA, `certificate_pem=x`, http.StatusBadRequest, nil},
		} {
			r := s.do("PUT", path, tc.token, tc.body)
			p := assertProblem(t, r, tc.status, "")
			got := map[string]string{}
			for _, e := range p.Errors {
				got[e.Field] = e.Detail
			}
			for f, phrase := range tc.fields {
				if !strings.Contains(got[f], phrase) {
					t.Errorf("%s: %s = %q, want it to say %q (all: %v)", tc.name, f, got[f], phrase, got)
				}
			}
			if len(tc.fields) > 0 && len(got) != len(tc.fields) {
				t.Errorf("%s: fields named %v, want only %v", tc.name, got, tc.fields)
			}
			if strings.Contains(string(r.body), secret) || strings.Contains(string(r.body), keyMaterial(t, other.Cert.KeyPEM)) {
				t.Errorf("%s: the answer echoes key material: %s", tc.name, r.body)
			}
			t.Logf("%s: %d %s", tc.name, r.status, r.body)
		}
		assertProblem(t, s.do("GET", path, s.tokenB, nil), http.StatusNotFound, "")
		assertProblem(t, s.do("POST", path, s.tokenB, `{"hsts":"yes"}`), http.StatusNotFound, "")
		assertProblem(t, s.do("POST", path, s.tokenA, map[string]any{"hsts": "yes"}), http.StatusUnprocessableEntity, "hsts")
		assertProblem(t, s.do("PUT", "/api/v1/sites/site_00000000000000000000000000000000/certificate", s.tokenA,
			upload(good.Cert.ChainPEM, good.Cert.KeyPEM)), http.StatusNotFound, "")
		if after := s.certSnapshot(); after != before {
			t.Fatalf("refused requests wrote rows: before %v, after %v", before, after)
		}

		// A good upload: 202 + certificate.issue; the key is stored sealed;
		// a replay gives the same operation; the record shows it.
		r := s.do("PUT", path, s.tokenA, upload(good.Cert.ChainPEM, good.Cert.KeyPEM), "Idempotency-Key", "up-1")
		op := accepted(t, r)
		if op.Type != models.OpTypeCertificateIssue || op.TargetID != site || op.Status != models.OpPending {
			t.Fatalf("upload operation %+v", op)
		}
		if strings.Contains(string(r.body), secret) {
			t.Errorf("the 202 echoes the key: %s", r.body)
		}
		var sealed string
		if err := s.db.NewSelect().Table("certificate_uploads").Column("key_sealed").Where("operation_id = ?", op.ID).Scan(t.Context(), &sealed); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(sealed, "v1:test1:") || strings.Contains(sealed, secret) {
			t.Errorf("stored key %.40q…: want it sealed under test1", sealed)
		}
		if again := accepted(t, s.do("PUT", path, s.tokenA, upload(good.Cert.ChainPEM, good.Cert.KeyPEM), "Idempotency-Key", "up-1")); again.ID != op.ID {
			t.Errorf("replayed upload made operation %s, want %s", again.ID, op.ID)
		}
		assertProblem(t, s.do("PUT", path, s.tokenA, upload(apexOnly.Cert.ChainPEM, apexOnly.Cert.KeyPEM), "Idempotency-Key", "up-1"),
			http.StatusUnprocessableEntity, "Idempotency-Key")
		if n := s.count("certificate_uploads", ""); n != 1 {
			t.Errorf("%d uploads stored, want 1", n)
		}
		var cert ingress.CertificateView
		gr := s.do("GET", path, s.tokenA, nil)
		gr.json(t, &cert)
		if gr.status != http.StatusOK || cert.Status != models.CertificatePending || cert.Source != models.SourceUpload || cert.OperationID == nil || *cert.OperationID != op.ID ||
			!cmp.Equal(cert.Domains, []string{"shop.example", "www.shop.example"}) || cert.LastError != nil {
			t.Errorf("GET certificate = %d %s", gr.status, gr.body)
		}

		// Tenant B still sees nothing of it: the same 404 as before.
		assertProblem(t, s.do("GET", path, s.tokenB, nil), http.StatusNotFound, "")

		// While it is unfinished, a request and another upload are 409s
		// naming it, and write nothing.
		before = s.certSnapshot()
		for _, req := range []struct {
			method string
			body   any
		}{{"POST", nil}, {"POST", map[string]bool{"hsts": true}}, {"PUT", upload(good.Cert.ChainPEM, good.Cert.KeyPEM)}} {
			r := s.do(req.method, path, s.tokenA, req.body)
			p := assertProblem(t, r, http.StatusConflict, "")
			if p.OperationID != op.ID || r.header.Get("Location") != "/api/v1/operations/"+op.ID {
				t.Errorf("%s while an upload is unfinished: %s (Location %q)", req.method, r.body, r.header.Get("Location"))
			}
		}
		if after := s.certSnapshot(); after != before {
			t.Errorf("refused requests wrote rows: before %v, after %v", before, after)
		}

		// The operations listing filters on the type.
		var page ingress.Page[ingress.OperationView]
		s.do("GET", "/api/v1/operations?type=certificate.issue", s.tokenA, nil).json(t, &page)
		if len(page.Data) != 1 || page.Data[0].ID != op.ID {
			t.Errorf("operations of type certificate.issue: %+v", page.Data)
		}

		// POST on another active site: 202, and hsts is changed.
		second := s.activeHTTPSOffSite(t, s.tokenA, s.tenantA, "blog.example")
		issue := accepted(t, s.do("POST", "/api/v1/sites/"+second+"/certificate", s.tokenA, map[string]bool{"hsts": true}, "Idempotency-Key", "issue-1"))
		if issue.Type != models.OpTypeCertificateIssue || issue.TargetID != second {
			t.Errorf("issue operation %+v", issue)
		}
		if again := accepted(t, s.do("POST", "/api/v1/sites/"+second+"/certificate", s.tokenA, map[string]bool{"hsts": true}, "Idempotency-Key", "issue-1")); again.ID != issue.ID {
			t.Errorf("replayed request made operation %s, want %s", again.ID, issue.ID)
		}
		var st models.Site
		s.do("GET", "/api/v1/sites/"+second, s.tokenA, nil).json(t, &st)
		if !st.HSTS {
			t.Error(`POST {"hsts":true} left the site without HSTS`)
		}
		s.do("GET", "/api/v1/sites/"+second+"/certificate", s.tokenA, nil).json(t, &cert)
		if cert.Status != models.CertificatePending || cert.Source != models.SourceACME || cert.OperationID == nil || *cert.OperationID != issue.ID {
			t.Errorf("certificate of %s: %+v", second, cert)
		}

		// What the job writes reads back in the documented shape: an issued
		// certificate whose renewal failed keeps its dates and shows the error.
		ring, err := seal.ParseKeys(certKeys)
		if err != nil {
			t.Fatal(err)
		}
		cs, err := models.NewCertificateStore(models.CertificateStoreConfig{Store: s.store, Ring: ring})
		if err != nil {
			t.Fatal(err)
		}
		nb, na := good.X509.NotBefore.UTC(), good.X509.NotAfter.UTC()
		ra := na.Add(-30 * 24 * time.Hour)
		if err := cs.PutCertificate(t.Context(), models.SiteCertificate{SiteID: second, Status: models.CertificateIssued, Source: models.SourceACME,
			Issuer: "CHOM test intermediate", Domains: []string{"blog.example"}, Serial: "0a1b", NotBefore: &nb, NotAfter: &na, RenewAfter: &ra,
			ChainPEM: string(good.Cert.ChainPEM), KeyPEM: good.Cert.KeyPEM}); err != nil {
			t.Fatal(err)
		}
		if err := cs.RecordCertificateError(t.Context(), second, "challenge_failed", "the CA could not reach blog.example", time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		gr = s.do("GET", "/api/v1/sites/"+second+"/certificate", s.tokenA, nil)
		cert = ingress.CertificateView{}
		gr.json(t, &cert)
		if cert.Status != models.CertificateIssued || cert.NotAfter == nil || !cert.NotAfter.Equal(na.Truncate(time.Microsecond)) ||
			cert.LastError == nil || cert.LastError.Code != "challenge_failed" || cert.LastError.At.IsZero() || cert.OperationID == nil {
			t.Errorf("issued certificate with a failed renewal: %s", gr.body)
		}
		if strings.Contains(string(gr.body), "BEGIN") || strings.Contains(string(gr.body), secret) {
			t.Errorf("GET certificate shows chain or key material: %s", gr.body)
		}

		// A site that is not active (its provision never ran): 409.
		idle := s.createSiteBody(s.tokenA, map[string]any{"domain": "idle.example", "site_type": "html", "https": "off"})
		before = s.certSnapshot()
		assertProblem(t, s.do("POST", "/api/v1/sites/"+idle.TargetID+"/certificate", s.tokenA, nil), http.StatusConflict, "")
		idleCert := ca.Issue(t, []string{"idle.example"}, tlstest.LeafOptions{})
		assertProblem(t, s.do("PUT", "/api/v1/sites/"+idle.TargetID+"/certificate", s.tokenA, upload(idleCert.Cert.ChainPEM, idleCert.Cert.KeyPEM)),
			http.StatusConflict, "")
		if after := s.certSnapshot(); after != before {
			t.Errorf("requests on an inactive site wrote rows: before %v, after %v", before, after)
		}
	})
}

// TestCertificateAPIWithoutKeys: without CHOM_CERT_ENCRYPTION_KEYS the
// platform cannot keep a key: POST and PUT answer 409 https-not-configured
// (for any site, before reading the body) and write nothing; GET still reads.
func TestCertificateAPIWithoutKeys(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true})
		site := s.activeHTTPSOffSite(t, s.tokenA, s.tenantA, "nokeys.example")
		path := "/api/v1/sites/" + site + "/certificate"
		good := tlstest.NewCA(t).Issue(t, []string{"nokeys.example"}, tlstest.LeafOptions{})
		before := s.certSnapshot()
		for _, tc := range []struct {
			method, token string
			body          any
		}{
			{"POST", s.tokenA, nil},
			{"POST", s.tokenA, map[string]bool{"hsts": true}},
			{"PUT", s.tokenA, upload(good.Cert.ChainPEM, good.Cert.KeyPEM)},
			{"PUT", s.tokenA, `not even JSON`},
		} {
			p := assertProblem(t, s.do(tc.method, path, tc.token, tc.body), http.StatusConflict, "")
			if p.Type != "urn:chom:problem:https-not-configured" || !strings.Contains(p.Detail, "HTTPS is not configured on this platform") {
				t.Errorf("%s: problem %+v", tc.method, p)
			}
		}
		// Another tenant's site is a 404 still, whatever the body.
		for _, m := range []string{"POST", "PUT", "GET"} {
			assertProblem(t, s.do(m, path, s.tokenB, `{"frequency":"daily"}`), http.StatusNotFound, "")
		}
		assertProblem(t, s.do("GET", path, s.tokenA, nil), http.StatusNotFound, "")
		if after := s.certSnapshot(); after != before {
			t.Errorf("refused requests wrote rows: before %v, after %v", before, after)
		}
	})
}
