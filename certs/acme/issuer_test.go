package acme_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chomhq/chom/certs"
	"github.com/chomhq/chom/certs/acme"
	"github.com/chomhq/chom/internal/testenv"
)

// memAccounts is an in-memory AccountStore that counts what it stores.
type memAccounts struct {
	mu      sync.Mutex
	acc     map[string]acme.Account
	creates int
}

func (m *memAccounts) LoadAccount(_ context.Context, dir, email string) (*acme.Account, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.acc[dir+" "+email]
	if !ok {
		return nil, acme.ErrNoAccount
	}
	return &a, nil
}

func (m *memAccounts) CreateAccount(_ context.Context, a acme.Account) (*acme.Account, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.creates++
	if m.acc == nil {
		m.acc = map[string]acme.Account{}
	}
	if old, ok := m.acc[a.DirectoryURL+" "+a.Email]; ok {
		return &old, nil
	}
	m.acc[a.DirectoryURL+" "+a.Email] = a
	return &a, nil
}

// webroot is a loopback HTTP server on Pebble's HTTP-01 port answering the
// tokens presented to it; with wrong set, it answers a wrong key authorization.
type webroot struct {
	mu      sync.Mutex
	tokens  map[string]string
	wrong   bool
	present int
}

func (w *webroot) Present(_ context.Context, domain, token, keyAuth string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tokens[token] = keyAuth
	w.present++
	return nil
}

func (w *webroot) CleanUp(_ context.Context, _, token string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.tokens, token)
	return nil
}

func (w *webroot) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.URL.Path, "/.well-known/acme-challenge/")
	w.mu.Lock()
	ka, found := w.tokens[token]
	wrong := w.wrong
	w.mu.Unlock()
	if !ok || !found {
		http.NotFound(rw, r)
		return
	}
	if wrong {
		ka = "not-the-key-authorization"
	}
	_, _ = io.WriteString(rw, ka)
}

// settlement is one Budget.Settle call.
type settlement struct {
	id                string
	orderSeen, issued bool
}

// fakeBudget records reservations; deny makes Reserve refuse.
type fakeBudget struct {
	mu      sync.Mutex
	n       int
	settled []settlement
	reserve [][]string
	deny    time.Time
}

type denied struct{ at time.Time }

func (d denied) Error() string      { return "budget spent" }
func (d denied) RetryAt() time.Time { return d.at }

func (b *fakeBudget) Reserve(_ context.Context, account string, registered []string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.deny.IsZero() {
		return "", denied{b.deny}
	}
	b.n++
	b.reserve = append(b.reserve, registered)
	return "r" + strconv.Itoa(b.n), nil
}

func (b *fakeBudget) Settle(_ context.Context, id string, orderSeen, issued bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.settled = append(b.settled, settlement{id, orderSeen, issued})
	return nil
}

func (b *fakeBudget) last() settlement {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.settled) == 0 {
		return settlement{}
	}
	return b.settled[len(b.settled)-1]
}

// silentDNS publishes nothing: DNS-01 propagation never completes.
type silentDNS struct{}

func (silentDNS) Present(context.Context, string, string) error { return nil }
func (silentDNS) CleanUp(context.Context, string, string) error { return nil }

// testBundle is one Pebble with its DNS server and HTTP-01 webroot.
type testBundle struct {
	dns     *testenv.ChallTestSrv
	pebble  *testenv.Pebble
	web     *webroot
	budget  *fakeBudget
	newAcct *countingTransport
}

// countingTransport counts the accounts the CA created (201 answers to its
// newAccount URL). Pebble sends no Retry-After with a pending challenge, and
// lego then polls after 5 s; the transport asks for 1 s, so the suite stays
// short (Let's Encrypt's answers are not changed in production).
type countingTransport struct {
	mu         sync.Mutex
	next       http.RoundTripper
	newAccount string
	accounts   int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	if err != nil {
		return resp, err
	}
	if r.Method == http.MethodPost && r.URL.String() == c.newAccount && resp.StatusCode == http.StatusCreated {
		c.mu.Lock()
		c.accounts++
		c.mu.Unlock()
	}
	if resp.Header.Get("Retry-After") == "" {
		resp.Header.Set("Retry-After", "1")
	}
	return resp, err
}

// directoryURL reads one URL of Pebble's directory.
func directoryURL(t *testing.T, p *testenv.Pebble, name string) string {
	t.Helper()
	resp, err := p.HTTPClient().Get(p.DirectoryURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var dir map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&dir); err != nil {
		t.Fatal(err)
	}
	u, _ := dir[name].(string)
	if u == "" {
		t.Fatalf("directory has no %s: %v", name, dir)
	}
	return u
}

func TestMain(m *testing.M) {
	acme.SetLegoLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	os.Exit(m.Run())
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	dns := testenv.StartChallTestSrv(t)
	p := testenv.StartPebble(t, dns, testenv.PebbleOptions{DomainBlocklist: []string{"blocked.test"}, CertificateValidity: 30 * 24 * time.Hour})
	web := &webroot{tokens: map[string]string{}}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.HTTPPort)))
	if err != nil {
		t.Fatalf("listen on Pebble's HTTP-01 port: %v", err)
	}
	srv := &http.Server{Handler: web, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return &testBundle{dns: dns, pebble: p, web: web, budget: &fakeBudget{},
		newAcct: &countingTransport{next: &http.Transport{TLSClientConfig: p.ClientTLS.Clone()},
			newAccount: directoryURL(t, p, "newAccount")}}
}

func (b *testBundle) issuer(t *testing.T, accounts acme.AccountStore) *acme.Issuer {
	t.Helper()
	iss, err := acme.New(acme.Config{
		DirectoryURL: b.pebble.DirectoryURL, Email: "ops@chom.test", Accounts: accounts,
		HTTPClient:   &http.Client{Timeout: 30 * time.Second, Transport: b.newAcct},
		DNS:          &acme.ChallTestSrvDNS{ManagementURL: b.dns.ManagementURL},
		DNSResolvers: []string{b.dns.DNSAddr}, DNSPollInterval: 100 * time.Millisecond,
		Budget: b.budget, Timeout: time.Minute,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// verify checks cert chains to Pebble's root and covers domains.
func (b *testBundle) verify(t *testing.T, cert *certs.Certificate, domains ...string) *x509.Certificate {
	t.Helper()
	chain, err := certs.ParseChain(cert.ChainPEM)
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for _, d := range domains {
		if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: strings.Replace(d, "*", "x", 1), Roots: b.pebble.Roots(t), Intermediates: inter}); err != nil {
			t.Errorf("verify %s against Pebble's root: %v", d, err)
		}
	}
	if _, err := certs.CheckUpload(cert.ChainPEM, cert.KeyPEM, domains, time.Now()); err != nil {
		t.Errorf("issued certificate fails the upload checks: %v", err)
	}
	if cert.Issuer == "" || cert.Serial == "" || !cert.NotAfter.After(cert.NotBefore) {
		t.Errorf("certificate facts = issuer %q serial %q %v..%v", cert.Issuer, cert.Serial, cert.NotBefore, cert.NotAfter)
	}
	return chain[0]
}

func wantCode(t *testing.T, err error, code string, temporary bool) *acme.Error {
	t.Helper()
	e := acme.AsError(err)
	if e == nil || e.Code != code || e.Temporary != temporary {
		t.Fatalf("err = %v (%#v); want code %s, temporary %v", err, e, code, temporary)
	}
	return e
}

// TestIssuerPebble issues from a real Pebble over real HTTP-01 and DNS-01
// validation, and checks each failure comes back classified.
func TestIssuerPebble(t *testing.T) {
	b := setup(t)
	accounts := &memAccounts{}
	iss := b.issuer(t, accounts)
	ctx := t.Context()

	var leaf *x509.Certificate
	t.Run("http-01", func(t *testing.T) {
		start := time.Now()
		cert, err := iss.Issue(ctx, acme.Request{SiteID: "s1", Domains: []string{"a.example.test", "www.a.example.test"},
			Challenge: acme.HTTP01, HTTP01: b.web})
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		t.Logf("HTTP-01 issuance of 2 domains took %v", time.Since(start))
		leaf = b.verify(t, cert, "a.example.test", "www.a.example.test")
		if life := cert.NotAfter.Sub(cert.NotBefore); life < 30*24*time.Hour-time.Minute || life > 30*24*time.Hour+time.Minute {
			t.Errorf("lifetime %v; want the 30 days Pebble was configured with", life)
		}
		if b.web.present != 2 || len(b.web.tokens) != 0 {
			t.Errorf("presented %d, %d tokens left; want 2 presented, all cleaned up", b.web.present, len(b.web.tokens))
		}
		if s := b.budget.last(); !s.orderSeen || !s.issued {
			t.Errorf("settlement = %+v; want order seen, issued", s)
		}
	})
	t.Run("dns-01 wildcard", func(t *testing.T) {
		start := time.Now()
		cert, err := iss.Issue(ctx, acme.Request{SiteID: "s2", Domains: []string{"w.example.test", "*.w.example.test"}, Challenge: acme.DNS01})
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		t.Logf("DNS-01 wildcard issuance took %v", time.Since(start))
		b.verify(t, cert, "w.example.test", "*.w.example.test")
	})
	t.Run("wildcard needs dns-01", func(t *testing.T) {
		_, err := iss.Issue(ctx, acme.Request{SiteID: "s3", Domains: []string{"*.x.example.test"}, Challenge: acme.HTTP01, HTTP01: b.web})
		e := wantCode(t, err, acme.CodeInvalidRequest, false)
		if e.Domain != "*.x.example.test" || !strings.Contains(e.Message, "DNS-01") {
			t.Errorf("error = %+v", e)
		}
	})
	t.Run("blocked domain", func(t *testing.T) {
		n := len(b.budget.settled)
		_, err := iss.Issue(ctx, acme.Request{SiteID: "s4", Domains: []string{"shop.blocked.test"}, Challenge: acme.HTTP01, HTTP01: b.web})
		e := wantCode(t, err, acme.CodeCARefused, false)
		t.Logf("blocked: %s", e.Message)
		if len(b.budget.settled) != n+1 || b.budget.last().orderSeen || b.budget.last().issued {
			t.Errorf("settlement = %+v; want the reservation given back (order not seen)", b.budget.last())
		}
	})
	t.Run("wrong answer", func(t *testing.T) {
		b.web.mu.Lock()
		b.web.wrong = true
		b.web.mu.Unlock()
		defer func() { b.web.mu.Lock(); b.web.wrong = false; b.web.mu.Unlock() }()
		_, err := iss.Issue(ctx, acme.Request{SiteID: "s5", Domains: []string{"b.example.test", "www.b.example.test"}, Challenge: acme.HTTP01, HTTP01: b.web})
		e := wantCode(t, err, acme.CodeChallengeFailed, false)
		t.Logf("wrong answer: %s", e.Message)
		if e.Domain == "" || !strings.Contains(e.Message, e.Domain) || !strings.Contains(e.Message, "key authorization") {
			t.Errorf("error = %+v; want the domain and what the CA said", e)
		}
		if s := b.budget.last(); !s.orderSeen || s.issued {
			t.Errorf("settlement = %+v; want order seen (it counts), not issued", s)
		}
	})
	t.Run("dns-01 never propagates", func(t *testing.T) {
		slow, err := acme.New(acme.Config{
			DirectoryURL: b.pebble.DirectoryURL, Email: "ops@chom.test", Accounts: accounts,
			HTTPClient: &http.Client{Timeout: 30 * time.Second, Transport: b.newAcct},
			DNS:        silentDNS{}, DNSResolvers: []string{b.dns.DNSAddr},
			DNSPropagationTimeout: time.Second, DNSPollInterval: 100 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = slow.Issue(ctx, acme.Request{SiteID: "s6", Domains: []string{"c.example.test"}, Challenge: acme.DNS01})
		e := wantCode(t, err, acme.CodeChallengeTimeout, true)
		t.Logf("timeout: %s", e.Message)
	})
	t.Run("budget denies", func(t *testing.T) {
		at := time.Now().Add(2 * time.Hour).UTC()
		b.budget.mu.Lock()
		b.budget.deny = at
		b.budget.mu.Unlock()
		defer func() { b.budget.mu.Lock(); b.budget.deny = time.Time{}; b.budget.mu.Unlock() }()
		present := b.web.present
		_, err := iss.Issue(ctx, acme.Request{SiteID: "s7", Domains: []string{"d.example.test"}, Challenge: acme.HTTP01, HTTP01: b.web})
		e := wantCode(t, err, acme.CodeDeferred, true)
		if !e.RetryAt.Equal(at) || b.web.present != present {
			t.Errorf("deferred until %v (want %v), %d presents; want no order at all", e.RetryAt, at, b.web.present-present)
		}
	})
	t.Run("account reused", func(t *testing.T) {
		other := b.issuer(t, accounts)
		if _, err := other.Issue(ctx, acme.Request{SiteID: "s8", Domains: []string{"e.example.test"}, Challenge: acme.HTTP01, HTTP01: b.web}); err != nil {
			t.Fatal(err)
		}
		u1, _ := iss.AccountURI(ctx)
		u2, _ := other.AccountURI(ctx)
		b.newAcct.mu.Lock()
		n := b.newAcct.accounts
		b.newAcct.mu.Unlock()
		if u1 == "" || u1 != u2 || n != 1 || accounts.creates != 1 {
			t.Errorf("accounts %q and %q, %d registered, %d stored; want one account registered and stored once", u1, u2, n, accounts.creates)
		}
	})
	t.Run("ari replacement", func(t *testing.T) {
		if leaf == nil {
			t.Skip("no certificate from the http-01 subtest")
		}
		// A renewal names the certificate it replaces; a second renewal of
		// the same one is refused by the CA (alreadyReplaced) and lego orders
		// again without it: both succeed.
		for i := range 2 {
			cert, err := iss.Issue(ctx, acme.Request{SiteID: "s1", Domains: []string{"a.example.test", "www.a.example.test"},
				Challenge: acme.HTTP01, HTTP01: b.web, Replaces: leaf})
			if err != nil {
				t.Fatalf("renewal %d: %v", i+1, err)
			}
			if renewed := b.verify(t, cert, "a.example.test"); renewed.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
				t.Fatalf("renewal %d returned the old certificate", i+1)
			}
		}
		if !strings.Contains(testenv.Tail(b.pebble.Log, 200), "is a replacement of") {
			t.Errorf("Pebble logged no ARI replacement:\n%s", testenv.Tail(b.pebble.Log, 20))
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		// One Issuer shared by a worker's concurrent jobs.
		const n = 4
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range n {
			wg.Go(func() {
				d := fmt.Sprintf("c%d.example.test", i)
				var cert *certs.Certificate
				cert, errs[i] = iss.Issue(ctx, acme.Request{SiteID: d, Domains: []string{d}, Challenge: acme.HTTP01, HTTP01: b.web})
				if errs[i] == nil && !certs.Covers(cert.Domains, d) {
					errs[i] = fmt.Errorf("certificate for %v, want %s", cert.Domains, d)
				}
			})
		}
		wg.Wait()
		t.Logf("%d concurrent issuances took %v", n, time.Since(start))
		for i, err := range errs {
			if err != nil {
				t.Errorf("issuance %d: %v", i, err)
			}
		}
	})
	t.Run("ari window", func(t *testing.T) {
		if leaf == nil {
			t.Skip("no certificate from the http-01 subtest")
		}
		w, err := iss.RenewalWindow(ctx, leaf)
		if err != nil || w == nil {
			t.Fatalf("RenewalWindow = %v, %v; want Pebble's window", w, err)
		}
		t.Logf("ARI window %v .. %v for a certificate valid %v .. %v", w.Start, w.End, leaf.NotBefore, leaf.NotAfter)
		if w.Start.Before(leaf.NotBefore) || !w.End.After(w.Start) || w.End.After(leaf.NotAfter) {
			t.Errorf("window %v..%v outside the certificate's life", w.Start, w.End)
		}
		at := certs.RenewAfter("s1", leaf.NotBefore, leaf.NotAfter, time.Now(), w)
		if at.Before(w.Start.Truncate(time.Second)) || at.After(w.End) {
			t.Errorf("RenewAfter = %v; want inside the window", at)
		}
	})
	t.Run("ca down", func(t *testing.T) {
		// Last: Pebble forgets its accounts when it stops.
		n := len(b.budget.settled)
		t.Logf("inject: Pebble stopped (SIGTERM) before an issuance")
		b.pebble.Stop(t)
		start := time.Now()
		_, err := iss.Issue(ctx, acme.Request{SiteID: "s9", Domains: []string{"f.example.test"}, Challenge: acme.HTTP01, HTTP01: b.web})
		e := wantCode(t, err, acme.CodeCAUnreachable, true)
		t.Logf("CA down: %s (after %v)", e.Message, time.Since(start))
		if len(b.budget.settled) != n+1 || b.budget.last().orderSeen {
			t.Errorf("settlement = %+v; want the reservation given back (the CA never saw the order)", b.budget.last())
		}
		b.pebble.Start(t)
	})
}

// TestIssuerUnreachable: a CA that does not answer is a temporary failure.
func TestIssuerUnreachable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	iss, err := acme.New(acme.Config{DirectoryURL: "https://" + addr + "/dir", Accounts: &memAccounts{},
		HTTPClient: &http.Client{Timeout: 5 * time.Second}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	_, err = iss.Issue(t.Context(), acme.Request{Domains: []string{"a.example.test"}, Challenge: acme.HTTP01, HTTP01: &webroot{}})
	e := wantCode(t, err, acme.CodeCAUnreachable, true)
	t.Logf("unreachable: %s", e.Message)
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	_, err := acme.New(acme.Config{})
	for _, want := range []string{"DirectoryURL", "Accounts", "Logger"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New(zero) = %v; want it to name %s", err, want)
		}
	}
}

func TestRegisteredDomains(t *testing.T) {
	t.Parallel()
	got, err := acme.RegisteredDomains([]string{"www.Example.co.uk", "*.shop.example.co.uk", "a.b.example.com", "example.com."})
	if err != nil || fmt.Sprint(got) != "[example.co.uk example.com]" {
		t.Errorf("RegisteredDomains = %v, %v", got, err)
	}
	if _, err := acme.RegisteredDomains([]string{"co.uk"}); err == nil {
		t.Error("a public suffix has a registered domain")
	}
}

func TestDNS01Record(t *testing.T) {
	t.Parallel()
	f1, v1 := acme.DNS01Record("*.example.com", "tok.thumb")
	f2, v2 := acme.DNS01Record("example.com", "tok.thumb")
	// RFC 8555 §8.4: base64url(SHA-256(keyAuth)), no padding.
	if f1 != "_acme-challenge.example.com." || f1 != f2 || v1 != v2 || len(v1) != 43 || strings.ContainsAny(v1, "+/=") {
		t.Errorf("records %s=%s, %s=%s", f1, v1, f2, v2)
	}
	_ = errors.New
}
