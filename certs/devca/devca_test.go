package devca_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/chomhq/chom/certs"
	"github.com/chomhq/chom/certs/acme"
	"github.com/chomhq/chom/certs/devca"
	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/local"
	"github.com/chomhq/chom/jobs"
)

// memAccounts is an in-memory acme.AccountStore.
type memAccounts struct {
	mu  sync.Mutex
	acc map[string]acme.Account
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
	if m.acc == nil {
		m.acc = map[string]acme.Account{}
	}
	if old, ok := m.acc[a.DirectoryURL+" "+a.Email]; ok {
		return &old, nil
	}
	m.acc[a.DirectoryURL+" "+a.Email] = a
	return &a, nil
}

// testBundle is a development CA answering from a local driver's files, and
// an issuer of the worker's kind talking to it.
type testBundle struct {
	ca     *devca.CA
	root   string
	prov   *local.Provisioner
	issuer *acme.Issuer
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	root := filepath.Join(t.TempDir(), "vps")
	prov, err := local.New(local.Config{Root: root, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ca, err := devca.Start(t.Context(), devca.Config{HTTP01: prov.ChallengeHandler(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("devca.Start took %s", time.Since(start))
	t.Cleanup(func() {
		if err := ca.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca.ClientRootsPEM()) {
		t.Fatal("ClientRootsPEM holds no certificate")
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	issuer, err := acme.New(acme.Config{DirectoryURL: ca.DirectoryURL(), Accounts: &memAccounts{}, HTTPClient: hc,
		Logger: log, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return &testBundle{ca: ca, root: root, prov: prov, issuer: issuer}
}

// site provisions an html site with a www. alias on the local driver.
func (b *testBundle) site(t *testing.T, domain string) drivers.SiteSpec {
	t.Helper()
	s := drivers.SiteSpec{
		ID: "site_" + strings.NewReplacer(".", "_", "-", "_").Replace(domain), TenantID: "ten_1",
		Domain: domain, SiteType: drivers.SiteTypeHTML, Aliases: []string{"www." + domain},
		Server: drivers.Server{ID: "vps_1", Hostname: "vps1.dev.chom.internal", IPAddress: "127.0.0.1", SSHPort: 22},
	}
	if _, err := b.prov.Provision(t.Context(), s, nil); err != nil {
		t.Fatal(err)
	}
	return s
}

// notPut is a presenter that writes nothing where the site serves tokens.
type notPut struct{}

func (notPut) Present(context.Context, string, string, string) error { return nil }
func (notPut) CleanUp(context.Context, string, string) error         { return nil }

// TestIssue: a certificate for a site and its alias, issued over HTTP-01
// answered from the local driver's files (what the certificate job does in
// chom dev), chains to IssuedRootsPEM and to nothing else.
func TestIssue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	site := b.site(t, "shop.example.com")

	start := time.Now()
	cert, err := b.issuer.Issue(t.Context(), acme.Request{SiteID: site.ID, Domains: site.ServerNames(),
		Challenge: acme.HTTP01, HTTP01: jobs.SitePresenter(b.prov, site)})
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	t.Logf("issued %v in %s (issuer %q, not after %s)", cert.Domains, time.Since(start), cert.Issuer, cert.NotAfter)

	chain, err := certs.ParseChain(cert.ChainPEM)
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	issued := x509.NewCertPool()
	if !issued.AppendCertsFromPEM(b.ca.IssuedRootsPEM()) {
		t.Fatal("IssuedRootsPEM holds no certificate")
	}
	for _, name := range site.ServerNames() {
		if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: name, Roots: issued, Intermediates: inter}); err != nil {
			t.Errorf("verify for %s against IssuedRootsPEM: %v", name, err)
		}
	}
	// The directory's TLS root is not the issuing root.
	client := x509.NewCertPool()
	client.AppendCertsFromPEM(b.ca.ClientRootsPEM())
	if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: site.Domain, Roots: client, Intermediates: inter}); err == nil {
		t.Error("the certificate verifies against ClientRootsPEM too; want the two roots apart")
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life < devca.CertificateLifetime-time.Hour || life > devca.CertificateLifetime+time.Hour {
		t.Errorf("lifetime %s, want about %s", life, devca.CertificateLifetime)
	}
	// The local driver deploys it (its reload check loads chain and key as
	// nginx would), as the certificate job will in chom dev.
	if err := b.prov.DeployCertificate(t.Context(), site, drivers.TLSCertificate{ChainPEM: cert.ChainPEM, KeyPEM: cert.KeyPEM},
		drivers.TLSOptions{}); err != nil {
		t.Errorf("deploy the issued certificate: %v", err)
	}
	// The presenter's tokens were taken away again.
	if left, err := os.ReadDir(filepath.Join(b.root, site.Server.ID, "acme", site.Domain)); err != nil || len(left) != 0 {
		t.Errorf("challenge files left after issuance: %v %v", left, err)
	}
}

// TestChallengeNotAnswered: validation is real. A token nobody put, or put
// where another site serves it, is a failed challenge naming the domain, as
// with a public CA.
func TestChallengeNotAnswered(t *testing.T) {
	t.Parallel()
	b := setup(t)
	site := b.site(t, "nothing.example.com")
	other := b.site(t, "other.example.com")

	cases := map[string]acme.HTTP01Presenter{
		"token not put":        notPut{},
		"put for another site": jobs.SitePresenter(b.prov, other),
	}
	for name, presenter := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			_, err := b.issuer.Issue(t.Context(), acme.Request{SiteID: site.ID, Domains: []string{site.Domain},
				Challenge: acme.HTTP01, HTTP01: presenter})
			t.Logf("failed in %s: %v", time.Since(start), err)
			e := acme.AsError(err)
			if e == nil || e.Code != acme.CodeChallengeFailed || e.Domain != site.Domain || !strings.Contains(e.Message, "404") {
				t.Fatalf("Issue: %v (%+v), want %s for %s quoting the 404", err, e, acme.CodeChallengeFailed, site.Domain)
			}
		})
	}
}

// TestStartRefusesAlwaysValid: a process environment that would turn
// Pebble's validation off stops Start.
func TestStartRefusesAlwaysValid(t *testing.T) {
	t.Setenv("PEBBLE_VA_ALWAYS_VALID", "1")
	_, err := devca.Start(t.Context(), devca.Config{HTTP01: http.NotFoundHandler(), Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "PEBBLE_VA_ALWAYS_VALID") {
		t.Fatalf("Start: %v, want a refusal naming PEBBLE_VA_ALWAYS_VALID", err)
	}
}

// TestConfig: a config missing its parts is refused with every problem.
func TestConfig(t *testing.T) {
	t.Parallel()
	err := devca.Config{}.Validate()
	if err == nil || !strings.Contains(err.Error(), "HTTP01") || !strings.Contains(err.Error(), "Logger") {
		t.Fatalf("Validate: %v", err)
	}
	if _, err := devca.Start(t.Context(), devca.Config{}); err == nil {
		t.Fatal("Start with an empty config succeeded")
	}
}

// TestResolver: the CA's DNS server answers 127.0.0.1 for any name, and no
// IPv6 address (the VA would dial it first, and nothing listens there).
func TestResolver(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
	for _, name := range []string{"shop.example.com.", "www.anything.test.", "a.b.c.d.example.org."} {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		in, _, err := c.ExchangeContext(t.Context(), q, b.ca.DNSAddr())
		if err != nil {
			t.Fatal(err)
		}
		if len(in.Answer) != 1 || in.Answer[0].(*dns.A).A.String() != "127.0.0.1" {
			t.Errorf("A %s: %v", name, in.Answer)
		}
		q.SetQuestion(name, dns.TypeAAAA)
		in, _, err = c.ExchangeContext(t.Context(), q, b.ca.DNSAddr())
		if err != nil || in.Rcode != dns.RcodeSuccess || len(in.Answer) != 0 {
			t.Errorf("AAAA %s: %v %v, want no record", name, in, err)
		}
	}
}

// TestStartCancelled: a start whose ctx is already cancelled returns
// promptly, with an error or a CA that closes, and never hangs.
func TestStartCancelled(t *testing.T) {
	t.Parallel()
	for range 20 {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		done := make(chan error, 1)
		go func() {
			ca, err := devca.Start(ctx, devca.Config{HTTP01: http.NotFoundHandler(), Logger: slog.New(slog.DiscardHandler)})
			if err == nil {
				err = ca.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Start with a cancelled ctx: %v, want context.Canceled or a CA", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Start with a cancelled ctx hung")
		}
	}
}
