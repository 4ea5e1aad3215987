package integration

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chomhq/chom/certs"
	"github.com/chomhq/chom/certs/acme"
	"github.com/chomhq/chom/certs/seal"
	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/ssh"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/internal/tlsenv"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/models"
)

// presenterLedger wraps an HTTP-01 presenter and counts what it was asked to
// put and to take away, so a test can check every token put was removed.
type presenterLedger struct {
	next acme.HTTP01Presenter

	mu              sync.Mutex
	present, remove map[string]int // token → calls
}

func newPresenterLedger(next acme.HTTP01Presenter) *presenterLedger {
	return &presenterLedger{next: next, present: map[string]int{}, remove: map[string]int{}}
}

func (p *presenterLedger) Present(ctx context.Context, domain, token, keyAuth string) error {
	p.mu.Lock()
	p.present[token]++
	p.mu.Unlock()
	return p.next.Present(ctx, domain, token, keyAuth)
}

func (p *presenterLedger) CleanUp(ctx context.Context, domain, token string) error {
	p.mu.Lock()
	p.remove[token]++
	p.mu.Unlock()
	return p.next.CleanUp(ctx, domain, token)
}

// tokens returns the tokens presented, and those never cleaned up.
func (p *presenterLedger) tokens() (all, left []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for tok := range p.present {
		all = append(all, tok)
		if p.remove[tok] == 0 {
			left = append(left, tok)
		}
	}
	return all, left
}

// silentPresenter puts nothing anywhere: the CA's validation finds no token.
type silentPresenter struct{}

func (silentPresenter) Present(context.Context, string, string, string) error { return nil }
func (silentPresenter) CleanUp(context.Context, string, string) error         { return nil }

// tlsBundle is what TestTLSEndToEnd's steps share.
type tlsBundle struct {
	env  *tlsenv.Env
	prov *ssh.Provisioner
	iss  *acme.Issuer

	// The ledger the budget must agree with (subtests run in parallel).
	issued, failedOrders atomic.Int64
}

// issue asks the CA for site's certificate, answering HTTP-01 through p, and
// checks the answer left no token on the server.
func (b *tlsBundle) issue(t *testing.T, site drivers.SiteSpec, p acme.HTTP01Presenter, replaces *x509.Certificate) (*certs.Certificate, time.Duration, error) {
	t.Helper()
	start := time.Now()
	cert, err := b.iss.Issue(t.Context(), acme.Request{SiteID: site.ID, Domains: site.ServerNames(), Challenge: acme.HTTP01,
		HTTP01: p, Replaces: replaces})
	took := time.Since(start)
	if left := b.challengeFiles(t, site); len(left) > 0 {
		t.Errorf("challenge files left on the server after the issuance: %v", left)
	}
	if err == nil {
		b.issued.Add(1)
		if !sameSet(cert.Domains, site.ServerNames()) {
			t.Errorf("certificate for %v, want %v", cert.Domains, site.ServerNames())
		}
	}
	return cert, took, err
}

// challengeFiles lists what the site's ACME directory on the server holds.
func (b *tlsBundle) challengeFiles(t *testing.T, site drivers.SiteSpec) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(b.env.VPS.ChallengeDir, site.Domain))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// deploy installs cert for site, waits for nginx's reload to finish and
// returns how long the driver took.
func (b *tlsBundle) deploy(t *testing.T, site drivers.SiteSpec, cert *certs.Certificate, hsts bool) time.Duration {
	t.Helper()
	before := b.env.VPS.NginxWorkers(t)
	start := time.Now()
	if err := b.prov.DeployCertificate(t.Context(), site, drivers.TLSCertificate{ChainPEM: cert.ChainPEM, KeyPEM: cert.KeyPEM},
		drivers.TLSOptions{HSTS: hsts}); err != nil {
		t.Fatalf("deploy %s: %v", cert.Serial, err)
	}
	took := time.Since(start)
	b.env.VPS.WaitNginxReload(t, before)
	return took
}

// provision puts site on the VPS, waits for nginx's reload to finish and
// checks every name answers the site's page over plain HTTP.
func (b *tlsBundle) provision(t *testing.T, site drivers.SiteSpec) {
	t.Helper()
	before := b.env.VPS.NginxWorkers(t)
	if _, err := b.prov.Provision(t.Context(), site, nil); err != nil {
		t.Fatal(err)
	}
	b.env.VPS.WaitNginxReload(t, before)
	b.checkHTTP(t, site)
}

// checkHTTP checks every name of site answers its page over plain HTTP and
// has no certificate (the TLS port refuses the handshake), once nginx has
// settled (settle).
func (b *tlsBundle) checkHTTP(t *testing.T, site drivers.SiteSpec) {
	t.Helper()
	settle(t, func() []string {
		var bad []string
		for _, host := range site.ServerNames() {
			f, err := tlsenv.Fetch(t.Context(), b.env.HTTPClient(), "http://"+host+"/")
			if err != nil || f.Status != 200 || !strings.Contains(f.Body, "<h1>"+site.Domain+"</h1>") {
				bad = append(bad, fmt.Sprintf("http://%s/: %v, %v; want the site's page over plain HTTP", host, f, err))
			}
			if f, err := tlsenv.Fetch(t.Context(), b.env.HTTPSClient(), "https://"+host+"/"); err == nil {
				bad = append(bad, fmt.Sprintf("https://%s/ answers %v; want no certificate (handshake refused)", host, f))
			}
		}
		return bad
	})
	if _, err := os.Stat(filepath.Join(b.env.VPS.StateDir, site.ID, "tls")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the site has a TLS directory (%v); want none", err)
	}
}

// settle runs check (each call on new connections) until it finds nothing
// wrong 5 times in a row, and reports what it found last after 15 s.
// VPS.WaitNginxReload proves the workers of before a change are gone, but
// the subtests run in parallel and reload nginx too: another subtest's
// reload can retire those workers before this change's reload is applied,
// and the workers it starts still hold the configuration of before. What a
// check needs is that nginx serves this change, so it waits for exactly
// that, and an nginx that never serves it fails.
func settle(t *testing.T, check func() []string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for good := 0; good < 5; {
		bad := check()
		if len(bad) == 0 {
			good++
			continue
		}
		good = 0
		if time.Now().After(deadline) {
			for _, b := range bad {
				t.Error(b)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkHTTPS checks every name of site serves serial over HTTP/2, verified
// against Pebble's root, with HSTS exactly when hsts, and that plain HTTP
// redirects to the same host and path over HTTPS, once nginx has settled
// (settle).
func (b *tlsBundle) checkHTTPS(t *testing.T, site drivers.SiteSpec, serial string, hsts bool) {
	t.Helper()
	settle(t, func() []string {
		var bad []string
		for _, host := range site.ServerNames() {
			f, err := tlsenv.Fetch(t.Context(), b.env.HTTPSClient(), "https://"+host+"/")
			if err != nil || f.Status != 200 || f.Proto != "HTTP/2.0" || f.Serial != serial || !strings.Contains(f.Body, "<h1>"+site.Domain+"</h1>") {
				bad = append(bad, fmt.Sprintf("https://%s/: %v, %v; want 200 over HTTP/2.0 with serial %s and the site's page", host, f, err, serial))
			}
			switch h := f.Header.Get("Strict-Transport-Security"); {
			case hsts && h != "max-age=31536000":
				bad = append(bad, fmt.Sprintf("https://%s/ sends HSTS %q; want max-age=31536000 (a year, the default)", host, h))
			case !hsts && h != "":
				bad = append(bad, fmt.Sprintf("https://%s/ sends HSTS %q without TLSOptions.HSTS", host, h))
			}
			r, err := tlsenv.Fetch(t.Context(), b.env.HTTPClient(), "http://"+host+"/some/page?x=1")
			if loc := r.Header.Get("Location"); err != nil || (r.Status != 301 && r.Status != 308) || loc != "https://"+host+"/some/page?x=1" {
				bad = append(bad, fmt.Sprintf("http://%s/some/page?x=1: %v, %v; want 301 or 308 to https://%[1]s/some/page?x=1", host, r, err))
			}
		}
		return bad
	})
}

// checkStillServing checks a fault left site as it was: every poller saw no
// error and only serial; or, with serial "", the site still answers plain
// HTTP and has no certificate.
func (b *tlsBundle) checkStillServing(t *testing.T, site drivers.SiteSpec, serial string, pollers ...*tlsenv.Poller) {
	t.Helper()
	for _, p := range pollers {
		r := p.Stop()
		if len(r.Errors) > 0 || !slices.Equal(r.SerialList(), []string{serial}) {
			t.Errorf("during the fault: %v; want no error and only serial %s", r, serial)
		}
		t.Logf("ledger: during the fault %d requests, %d errors, serials served %v (want only %s)", r.Requests, len(r.Errors), r.SerialList(), serial)
	}
	if serial == "" {
		b.checkHTTP(t, site)
		t.Logf("ledger: the site kept serving plain HTTP, no certificate on the server")
	}
}

func wantIssueError(t *testing.T, err error, code string, site drivers.SiteSpec) *acme.Error {
	t.Helper()
	e := acme.AsError(err)
	if e == nil || e.Code != code {
		t.Fatalf("issue: %v; want an *acme.Error with code %s", err, code)
	}
	if e.Temporary {
		t.Errorf("%s is temporary; want permanent until the cause is fixed", code)
	}
	if e.Domain != "" && !slices.Contains(site.ServerNames(), e.Domain) {
		t.Errorf("error names domain %q, not one of the site's %v", e.Domain, site.ServerNames())
	}
	return e
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// HTTPS end to end at the level of the parts, on real nginx (over the SSH
// driver) and Pebble: a site with a www. alias is provisioned, issued a
// certificate over HTTP-01 answered by its own nginx, deployed, and fetched
// over HTTPS (HTTP/2, verified against Pebble's root, HTTP redirected, HSTS
// only when asked); a forced renewal is deployed under two polling clients,
// which must see no failed request and the serials old → new. Then three
// faults, each with a classified error while the site keeps serving what it
// served, and a retry that succeeds once the cause is fixed: a name that
// resolves elsewhere, a CA that refuses a name, a challenge never answered.
// The rate-limit ledger in PostgreSQL must count exactly the orders the CA saw
// and the certificates it issued.
func TestTLSEndToEnd(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts sshd, nginx, php-fpm, MariaDB, Pebble and its DNS server")
	}
	begin := time.Now()
	env := tlsenv.Start(t, tlsenv.Options{DomainBlocklist: []string{"blocked.test"}})
	t.Logf("harness (vpsenv, challtestsrv, Pebble) up in %v", time.Since(begin).Round(time.Millisecond))
	ctx := t.Context()

	// The account and the rate-limit budget live where the worker keeps
	// them: the CertificateStore on PostgreSQL, the account key sealed.
	db := testenv.Postgres(t)
	if _, err := models.MigrateUp(ctx, db); err != nil {
		t.Fatal(err)
	}
	store, err := models.New(models.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	ring, err := seal.ParseKeys("k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	if err != nil {
		t.Fatal(err)
	}
	cs, err := models.NewCertificateStore(models.CertificateStoreConfig{Store: store, Ring: ring})
	if err != nil {
		t.Fatal(err)
	}
	cfg := env.IssuerConfig(acme.StoreAccounts{Store: cs})
	cfg.Budget = cs
	iss, err := acme.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b := &tlsBundle{env: env, prov: env.Provisioner(t), iss: iss}

	site := env.Site("site_tlse2e", "shop.e2e.test", "www.shop.e2e.test")
	start := time.Now()
	t.Cleanup(func() { _ = b.prov.Deprovision(context.WithoutCancel(ctx), site) })
	b.provision(t, site)
	t.Logf("provisioned %v over SSH in %v", site.ServerNames(), time.Since(start).Round(time.Millisecond))

	// Issued over HTTP-01 answered by the site's nginx, through the driver.
	ledger := newPresenterLedger(jobs.SitePresenter(b.prov, site))
	cert1, took, err := b.issue(t, site, ledger, nil)
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	tokens, left := ledger.tokens()
	if len(tokens) != len(site.ServerNames()) || len(left) > 0 {
		t.Errorf("tokens presented %v, never cleaned up %v; want one per name, all cleaned up", tokens, left)
	}
	for _, tok := range tokens {
		if f, err := tlsenv.Fetch(ctx, env.HTTPClient(), "http://"+site.Domain+"/.well-known/acme-challenge/"+tok); err != nil || f.Status != 404 {
			t.Errorf("token %s after issuance: %v, %v; want 404", tok, f, err)
		}
	}
	t.Logf("issued %s (%s, %v .. %v) in %v", cert1.Serial, cert1.Issuer, cert1.NotBefore.Format(time.RFC3339),
		cert1.NotAfter.Format(time.RFC3339), took.Round(time.Millisecond))

	// Served over HTTPS: both names, HTTP/2, verified, redirect, no HSTS
	// (the renewal's deploy turns it on).
	d := b.deploy(t, site, cert1, false)
	t.Logf("deployed in %v", d.Round(time.Millisecond))
	b.checkHTTPS(t, site, cert1.Serial, false)
	leaf1, err := certs.ParseChain(cert1.ChainPEM)
	if err != nil {
		t.Fatal(err)
	}

	// Forced renewal under two clients: one keeps its HTTP/2 connection (a
	// browser), one opens a new connection per request (a crawler). The
	// deploy also turns HSTS on.
	t.Run("renewal", func(t *testing.T) {
		url := "https://" + site.Domain + "/"
		keep := env.StartPoller(t, url, tlsenv.PollOptions{KeepAlive: true})
		fresh := env.StartPoller(t, url, tlsenv.PollOptions{})
		keep.WaitServed(t, cert1.Serial, 200*time.Millisecond)
		fresh.WaitServed(t, cert1.Serial, 200*time.Millisecond)
		cert2, took, err := b.issue(t, site, jobs.SitePresenter(b.prov, site), leaf1[0])
		if err != nil {
			t.Fatalf("renew: %v", err)
		}
		if cert2.Serial == cert1.Serial {
			t.Fatal("the renewal returned the old certificate")
		}
		deployStart := time.Now()
		d := b.deploy(t, site, cert2, true)
		reloaded := time.Since(deployStart)
		keep.WaitServed(t, cert2.Serial, time.Second)
		fresh.WaitServed(t, cert2.Serial, time.Second)
		for name, p := range map[string]*tlsenv.Poller{"keep-alive": keep, "new connection": fresh} {
			r := p.Stop()
			if len(r.Errors) > 0 {
				t.Errorf("%s client: %d of %d requests failed during the renewal: %v", name, len(r.Errors), r.Requests, r)
			}
			if got := r.SerialList(); !slices.Equal(got, []string{cert1.Serial, cert2.Serial}) {
				t.Errorf("%s client saw serials %v; want %s then %s", name, got, cert1.Serial, cert2.Serial)
			}
			first, _ := r.Seen(cert2.Serial)
			t.Logf("%s client: %d requests during the renewal (%v), %d errors, %d serial switches; new serial first served %v after the deploy began",
				name, r.Requests, r.Stopped.Sub(r.Started).Round(time.Millisecond), len(r.Errors), r.Switches,
				first.First.Sub(deployStart).Round(time.Millisecond))
		}
		t.Logf("renewal: issued in %v, deployed in %v (the driver's call; nginx's old workers gone %v after it began)",
			took.Round(time.Millisecond), d.Round(time.Millisecond), reloaded.Round(time.Millisecond))
		b.checkHTTPS(t, site, cert2.Serial, true)
		cert1 = cert2
	})
	if t.Failed() {
		return
	}

	// retry issues again with the cause fixed, deploys, and reports how
	// long from the fix to the new certificate served.
	retry := func(t *testing.T, site drivers.SiteSpec, fixed time.Time, replaces *x509.Certificate, hsts bool) *certs.Certificate {
		t.Helper()
		cert, _, err := b.issue(t, site, jobs.SitePresenter(b.prov, site), replaces)
		if err != nil {
			t.Fatalf("retry after the fix: %v", err)
		}
		b.deploy(t, site, cert, hsts)
		b.checkHTTPS(t, site, cert.Serial, hsts)
		t.Logf("recovered: the retry's certificate %s served %v after the fix", cert.Serial, time.Since(fixed).Round(time.Millisecond))
		return cert
	}
	current := func(t *testing.T) *x509.Certificate {
		chain, err := certs.ParseChain(cert1.ChainPEM)
		if err != nil {
			t.Fatal(err)
		}
		return chain[0]
	}

	// The faults. Site A's renewals (its HTTPS kept under a poller) run
	// beside a second site's first issuance, whose deploys reload the same
	// nginx under A's poller.
	t.Run("faults", func(t *testing.T) {
		t.Run("renewals of a served site", func(t *testing.T) {
			t.Parallel()
			t.Run("name resolves elsewhere", func(t *testing.T) {
				alias := site.Aliases[0]
				t.Logf("inject: %s resolves to 127.0.0.2, where nothing listens, during a renewal", alias)
				if err := env.DNS.AddA(ctx, alias, "127.0.0.2"); err != nil {
					t.Fatal(err)
				}
				p := env.StartPoller(t, "https://"+site.Domain+"/", tlsenv.PollOptions{KeepAlive: true})
				p.WaitServed(t, cert1.Serial, 100*time.Millisecond)
				_, took, err := b.issue(t, site, jobs.SitePresenter(b.prov, site), current(t))
				b.failedOrders.Add(1)
				e := wantIssueError(t, err, acme.CodeChallengeFailed, site)
				if e.Domain != alias || !strings.Contains(e.Message, alias) {
					t.Errorf("error %+v; want it to name %s", e, alias)
				}
				t.Logf("failed in %v: %s", took.Round(time.Millisecond), e.Message)
				b.checkStillServing(t, site, cert1.Serial, p)
				if err := env.DNS.ClearA(ctx, alias); err != nil {
					t.Fatal(err)
				}
				cert1 = retry(t, site, time.Now(), current(t), true)
			})

			t.Run("challenge never answered", func(t *testing.T) {
				t.Logf("inject: a presenter that puts no token, during a renewal")
				p := env.StartPoller(t, "https://"+site.Domain+"/", tlsenv.PollOptions{KeepAlive: true})
				p.WaitServed(t, cert1.Serial, 100*time.Millisecond)
				_, took, err := b.issue(t, site, silentPresenter{}, current(t))
				b.failedOrders.Add(1)
				e := wantIssueError(t, err, acme.CodeChallengeFailed, site)
				if e.Domain == "" || !strings.Contains(e.Message, e.Domain) {
					t.Errorf("error %+v; want it to name the domain that failed", e)
				}
				t.Logf("failed in %v: %s", took.Round(time.Millisecond), e.Message)
				b.checkStillServing(t, site, cert1.Serial, p)
				cert1 = retry(t, site, time.Now(), current(t), true)
			})
		})
		t.Run("ca refuses a name", func(t *testing.T) {
			t.Parallel()
			// A site that never had a certificate: it keeps serving plain HTTP.
			brand := env.Site("site_tlse2e_brand", "brand.e2e.test", "brand.blocked.test")
			t.Cleanup(func() { _ = b.prov.Deprovision(context.WithoutCancel(ctx), brand) })
			b.provision(t, brand)
			t.Logf("inject: Pebble's blocklist holds blocked.test; the site's alias is brand.blocked.test")
			_, took, err := b.issue(t, brand, jobs.SitePresenter(b.prov, brand), nil)
			e := wantIssueError(t, err, acme.CodeCARefused, brand)
			if !strings.Contains(e.Message, "brand.blocked.test") {
				t.Errorf("error %+v; want it to name brand.blocked.test", e)
			}
			t.Logf("failed in %v: %s", took.Round(time.Millisecond), e.Message)
			b.checkStillServing(t, brand, "")
			// The tenant drops the name the CA refuses.
			fixed := time.Now()
			brand.Aliases = nil
			b.provision(t, brand)
			retry(t, brand, fixed, nil, false)
		})
	})

	// The ledger: the budget counts each order the CA saw (issued or failed
	// validation; the refused one never became an order) and each
	// certificate issued, nothing more.
	account, err := iss.AccountURI(ctx)
	if err != nil {
		t.Fatal(err)
	}
	orders, err := cs.BudgetUse(ctx, "order", account)
	if err != nil {
		t.Fatal(err)
	}
	issued, err := cs.BudgetUse(ctx, "cert", "e2e.test")
	if err != nil {
		t.Fatal(err)
	}
	blocked, err := cs.BudgetUse(ctx, "cert", "blocked.test")
	if err != nil {
		t.Fatal(err)
	}
	wantIssued, wantFailed := int(b.issued.Load()), int(b.failedOrders.Load())
	if orders != wantIssued+wantFailed || issued != wantIssued || blocked != 0 {
		t.Errorf("budget counts %d orders, %d certificates of e2e.test, %d of blocked.test; want %d, %d, 0",
			orders, issued, blocked, wantIssued+wantFailed, wantIssued)
	}
	t.Logf("ledger: %d certificates issued, %d orders failed validation; the budget counts %d orders, %d certificates; whole test %v",
		wantIssued, wantFailed, orders, issued, time.Since(begin).Round(time.Millisecond))
}
