package integration

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/chomhq/chom/certs/acme"
	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/internal/tlsenv"
	"github.com/chomhq/chom/models"
)

// waitOpFor polls operation id until it has finished, for up to d (an
// issuance through the worker waits on the CA: seconds per name).
func (s *stack) waitOpFor(token, id string, d time.Duration) ingress.OperationView {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		var op ingress.OperationView
		r := s.do("GET", "/api/v1/operations/"+id+"?wait=5s", token, nil)
		if r.status != http.StatusOK {
			s.t.Fatalf("GET operation %s: %d %s", id, r.status, r.body)
		}
		r.json(s.t, &op)
		if models.IsTerminal(op.Status) {
			return op
		}
	}
	s.t.Fatalf("operation %s did not finish in %v", id, d)
	return ingress.OperationView{}
}

// certificateOps lists the site's certificate.issue operations through the
// API.
func (s *stack) certificateOps(token, siteID string) []ingress.OperationView {
	s.t.Helper()
	var page struct {
		Data []ingress.OperationView `json:"data"`
	}
	r := s.do("GET", "/api/v1/operations?type=certificate.issue&target_id="+siteID, token, nil)
	if r.status != http.StatusOK {
		s.t.Fatalf("list certificate operations: %d %s", r.status, r.body)
	}
	r.json(s.t, &page)
	return page.Data
}

// settled fetches url with a new client (a new connection) each time until
// ok holds for 10 answers in a row: after a reload, nginx's workers of
// before it answer new connections for a moment, and the test cannot know
// when the job reloaded. It fails after 30 s with the last answer.
func settled(t *testing.T, client func() *http.Client, url string, ok func(tlsenv.Fetched) bool) tlsenv.Fetched {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var f tlsenv.Fetched
	var err error
	for run := 0; run < 10; {
		f, err = tlsenv.Fetch(t.Context(), client(), url)
		if err == nil && ok(f) {
			run++
			continue
		}
		run = 0
		if time.Now().After(deadline) {
			t.Fatalf("%s: never settled; last answer %v %s", url, err, f)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return f
}

func (s *stack) certificate(token, siteID string) (int, ingress.CertificateView) {
	s.t.Helper()
	var v ingress.CertificateView
	r := s.do("GET", "/api/v1/sites/"+siteID+"/certificate", token, nil)
	if r.status == http.StatusOK {
		r.json(s.t, &v)
	}
	return r.status, v
}

// TestHTTPSThroughTheAPI is the end-to-end proof through the
// product, on real parts: the API, PostgreSQL, Redis and the worker, the SSH
// driver on a real sshd and nginx, Pebble as the CA (its DNS resolving every
// name to this machine). A site is created with a www. alias; its provision
// starts the certificate by itself; the certificate is served over HTTPS for
// both names (verified against Pebble's root only, HTTP/2, HTTP redirected);
// the tenant then forces a renewal (turning HSTS on) while two clients poll
// the site throughout: neither sees a failed request, and the new
// certificate is served. A site whose alias resolves elsewhere fails with
// challenge_failed, keeps serving plain HTTP, and succeeds when asked again
// after the DNS is fixed. Every event written matches its schema.
func TestHTTPSThroughTheAPI(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts sshd, nginx, php-fpm, MariaDB and Pebble")
	}
	ctx := t.Context()
	start := time.Now()
	env := tlsenv.Start(t, tlsenv.Options{})
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	prov := env.Provisioner(t)
	s := newStack(t, testenv.Postgres(t), stackOpts{
		remote: &remoteDriver{driver: prov, sshPort: env.VPS.SSHPort, hostKey: env.VPS.HostKey},
		env: map[string]string{
			"CHOM_CERT_ENCRYPTION_KEYS": "k1:" + base64.StdEncoding.EncodeToString(key),
			"CHOM_ACME_DIRECTORY_URL":   env.Pebble.DirectoryURL,
			"CHOM_ACME_CA_CERTS":        env.Pebble.ClientCAFile,
			"CHOM_ACME_EMAIL":           "ops@chom.test",
			"CHOM_ACME_TIMEOUT":         "2m",
		},
	})
	t.Logf("step %-28s %v", "servers and stack up", time.Since(start).Round(time.Millisecond))

	const domain, alias = "shop.api-e2e.test", "www.shop.api-e2e.test"
	t0 := time.Now()
	created := accepted(t, s.do("POST", "/api/v1/sites", s.tokenA,
		map[string]any{"domain": domain, "site_type": "html", "aliases": []string{alias}}))
	siteID := created.TargetID
	if op := s.waitOpFor(s.tokenA, created.ID, time.Minute); op.Status != models.OpSucceeded {
		t.Fatalf("provision: %s %+v", op.Status, op.Error)
	}
	t.Logf("step %-28s %v", "provision", time.Since(t0).Round(time.Millisecond))

	// The provision started the certificate by itself.
	t0 = time.Now()
	ops := s.certificateOps(s.tokenA, siteID)
	if len(ops) != 1 {
		t.Fatalf("%d certificate operations after the provision, want 1", len(ops))
	}
	if op := s.waitOpFor(s.tokenA, ops[0].ID, 2*time.Minute); op.Status != models.OpSucceeded {
		t.Fatalf("automatic issuance: %s %+v", op.Status, op.Error)
	}
	status, first := s.certificate(s.tokenA, siteID)
	if status != http.StatusOK || first.Status != models.CertificateIssued || first.Source != models.SourceACME ||
		fmt.Sprint(first.Domains) != fmt.Sprint([]string{domain, alias}) || first.Serial == "" || first.NotAfter == nil ||
		first.RenewAfter == nil || !first.RenewAfter.Before(*first.NotAfter) || first.OperationID != nil {
		t.Fatalf("GET certificate: %d %+v", status, first)
	}
	t.Logf("step %-28s %v (serial %s, renew after %s)", "automatic issuance", time.Since(t0).Round(time.Millisecond),
		first.Serial, first.RenewAfter.Format(time.RFC3339))

	// Served over HTTPS for both names, verified against Pebble's root only.
	for _, host := range []string{domain, alias} {
		f := settled(t, env.HTTPSClient, "https://"+host+"/", func(f tlsenv.Fetched) bool { return f.Serial == first.Serial })
		if f.Status != http.StatusOK || f.Proto != "HTTP/2.0" || !strings.Contains(f.Body, domain) ||
			f.Header.Get("Strict-Transport-Security") != "" {
			t.Errorf("https://%s/: %s", host, f)
		}
		p, err := tlsenv.Fetch(ctx, env.HTTPClient(), "http://"+host+"/some/page?x=1")
		if err != nil || (p.Status != http.StatusMovedPermanently && p.Status != http.StatusPermanentRedirect) ||
			p.Header.Get("Location") != "https://"+host+"/some/page?x=1" {
			t.Errorf("http://%s/ is not redirected to HTTPS: %v %s", host, err, p)
		}
	}

	// A forced renewal (HSTS on) under two polling clients.
	keep := env.StartPoller(t, "https://"+domain+"/", tlsenv.PollOptions{KeepAlive: true})
	fresh := env.StartPoller(t, "https://"+alias+"/", tlsenv.PollOptions{})
	time.Sleep(300 * time.Millisecond)
	t0 = time.Now()
	workers := env.VPS.NginxWorkers(t)
	renewal := accepted(t, s.do("POST", "/api/v1/sites/"+siteID+"/certificate", s.tokenA, map[string]any{"hsts": true}))
	if op := s.waitOpFor(s.tokenA, renewal.ID, 2*time.Minute); op.Status != models.OpSucceeded {
		t.Fatalf("renewal: %s %+v", op.Status, op.Error)
	}
	_, second := s.certificate(s.tokenA, siteID)
	if second.Serial == first.Serial || second.Status != models.CertificateIssued {
		t.Fatalf("after the renewal: %+v", second)
	}
	keep.WaitServed(t, second.Serial, time.Second)
	fresh.WaitServed(t, second.Serial, time.Second)
	time.Sleep(300 * time.Millisecond)
	for name, p := range map[string]*tlsenv.Poller{"keep-alive": keep, "new connection each": fresh} {
		r := p.Stop()
		t.Logf("poller %-19s %s", name, r)
		if len(r.Errors) > 0 {
			t.Errorf("poller %s saw %d failed requests during the renewal, first: %v", name, len(r.Errors), r.Errors[0])
		}
		_, sawOld := r.Seen(first.Serial)
		_, sawNew := r.Seen(second.Serial)
		if !sawOld || !sawNew {
			t.Errorf("poller %s saw serials %v; want %s then %s", name, r.SerialList(), first.Serial, second.Serial)
		}
	}
	t.Logf("step %-28s %v", "renewal under polling", time.Since(t0).Round(time.Millisecond))
	env.VPS.WaitNginxReload(t, workers)
	if f, err := tlsenv.Fetch(ctx, env.HTTPSClient(), "https://"+domain+"/"); err != nil ||
		!strings.HasPrefix(f.Header.Get("Strict-Transport-Security"), "max-age=") {
		t.Errorf("HSTS asked with the renewal is not served: %v %s", err, f)
	}

	// A fault: the alias of another site resolves elsewhere.
	t0 = time.Now()
	const other, otherAlias = "blog.api-e2e.test", "www.blog.api-e2e.test"
	t.Logf("inject: %s resolves to 127.0.0.2, where nothing listens", otherAlias)
	if err := env.DNS.AddA(ctx, otherAlias, "127.0.0.2"); err != nil {
		t.Fatal(err)
	}
	created = accepted(t, s.do("POST", "/api/v1/sites", s.tokenA,
		map[string]any{"domain": other, "site_type": "html", "aliases": []string{otherAlias}}))
	otherID := created.TargetID
	if op := s.waitOpFor(s.tokenA, created.ID, time.Minute); op.Status != models.OpSucceeded {
		t.Fatalf("provision: %s %+v", op.Status, op.Error)
	}
	ops = s.certificateOps(s.tokenA, otherID)
	if len(ops) != 1 {
		t.Fatalf("%d certificate operations, want 1", len(ops))
	}
	failed := s.waitOpFor(s.tokenA, ops[0].ID, 2*time.Minute)
	if failed.Status != models.OpFailed || failed.Error == nil || failed.Error.Code != acme.CodeChallengeFailed ||
		!strings.Contains(failed.Error.Message, otherAlias) {
		t.Fatalf("issuance for a name resolving elsewhere: %s %+v; want failed, challenge_failed naming %s", failed.Status, failed.Error, otherAlias)
	}
	if _, c := s.certificate(s.tokenA, otherID); c.Status != models.CertificateFailed || c.LastError == nil ||
		c.LastError.Code != acme.CodeChallengeFailed {
		t.Errorf("certificate after the failure: %+v", c)
	}
	if f, err := tlsenv.Fetch(ctx, env.HTTPClient(), "http://"+other+"/"); err != nil || f.Status != http.StatusOK {
		t.Errorf("the site stopped serving plain HTTP after a failed issuance: %v %s", err, f)
	}
	t.Logf("failed with %s in %v: %s", failed.Error.Code, time.Since(t0).Round(time.Millisecond), failed.Error.Message)
	t0 = time.Now()
	if err := env.DNS.ClearA(ctx, otherAlias); err != nil {
		t.Fatal(err)
	}
	retry := accepted(t, s.do("POST", "/api/v1/sites/"+otherID+"/certificate", s.tokenA, nil))
	if op := s.waitOpFor(s.tokenA, retry.ID, 2*time.Minute); op.Status != models.OpSucceeded {
		t.Fatalf("retry after the DNS fix: %s %+v", op.Status, op.Error)
	}
	if _, c := s.certificate(s.tokenA, otherID); c.Status != models.CertificateIssued || c.LastError != nil {
		t.Errorf("certificate after the retry: %+v", c)
	}
	t.Logf("step %-28s %v", "fix DNS and retry", time.Since(t0).Round(time.Millisecond))

	// The ledger: one event per finished certificate operation, each matching
	// its schema.
	want := map[string]string{ops[0].ID: events.TypeSiteCertificateFailed, retry.ID: events.TypeSiteCertificateIssued,
		renewal.ID: events.TypeSiteCertificateIssued}
	for opID, typ := range want {
		rows := s.outboxOf(t, opID)
		if len(rows) != 1 || rows[0].Type != typ {
			t.Errorf("operation %s: %d events %v; want one %s", opID, len(rows), rows, typ)
			continue
		}
		data, err := jsonschema.UnmarshalJSON(strings.NewReader(rows[0].Data))
		if err != nil {
			t.Fatal(err)
		}
		if err := compileSchema(t, typ).Validate(data); err != nil {
			t.Errorf("%s does not match its schema: %v", typ, err)
		}
	}
	t.Logf("whole test %v", time.Since(start).Round(time.Millisecond))
}
