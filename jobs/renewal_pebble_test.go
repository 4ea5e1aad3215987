package jobs_test

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	legoacme "github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/lego"

	"github.com/chomhq/chom/certs"
	"github.com/chomhq/chom/certs/acme"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/jobs"
)

// webroot answers Pebble's HTTP-01 requests on its HTTP port with the key
// authorizations presented to it.
type webroot struct {
	mu     sync.Mutex
	tokens map[string]string
}

func (w *webroot) Present(_ context.Context, _, token, keyAuth string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tokens[token] = keyAuth
	return nil
}

func (w *webroot) CleanUp(_ context.Context, _, token string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.tokens, token)
	return nil
}

func (w *webroot) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	token, _ := strings.CutPrefix(r.URL.Path, "/.well-known/acme-challenge/")
	w.mu.Lock()
	ka, ok := w.tokens[token]
	w.mu.Unlock()
	if !ok {
		http.NotFound(rw, r)
		return
	}
	_, _ = io.WriteString(rw, ka)
}

// quickPolls asks lego to poll Pebble's pending challenges every second
// (Pebble sends no Retry-After there; lego would wait 5 s). Answers that
// carry one, ARI's included, are left as they are.
type quickPolls struct{ next http.RoundTripper }

func (q quickPolls) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := q.next.RoundTrip(r)
	if err == nil && resp.Header.Get("Retry-After") == "" {
		resp.Header.Set("Retry-After", "1")
	}
	return resp, err
}

// legoUser is the platform's ACME account, for revoking at Pebble as CHOM's
// account.
type legoUser struct {
	key crypto.Signer
	uri string
}

func (u legoUser) GetEmail() string { return "" }
func (u legoUser) GetRegistration() *legoacme.ExtendedAccount {
	return &legoacme.ExtendedAccount{Location: u.uri}
}
func (u legoUser) GetPrivateKey() crypto.Signer { return u.key }

// TestRenewSweepPebble: against a real Pebble (which serves ARI), a
// certificate revoked at the CA (an ACME revocation by the platform's
// account) and one the CA asks to replace early (its management API) become
// due at the next sweep that asks the CA, and their renewals start; an
// untouched one does not. The CA's Retry-After (6 h at Pebble) spaces the
// questions even when CHOM_CERT_ARI_INTERVAL is shorter.
func TestRenewSweepPebble(t *testing.T) {
	t.Parallel()
	start := time.Now()
	ctx := t.Context()
	dns := testenv.StartChallTestSrv(t)
	p := testenv.StartPebble(t, dns, testenv.PebbleOptions{})
	web := &webroot{tokens: map[string]string{}}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.HTTPPort)))
	if err != nil {
		t.Fatalf("listen on Pebble's HTTP-01 port: %v", err)
	}
	srv := &http.Server{Handler: web, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	clk := &renewClock{}
	b := setupRenewal(t, testenv.Postgres(t), clk)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: quickPolls{&http.Transport{TLSClientConfig: p.ClientTLS.Clone()}}}
	const email = "ops@chom.test"
	iss, err := acme.New(acme.Config{DirectoryURL: p.DirectoryURL, Email: email, Accounts: acme.StoreAccounts{Store: b.certs},
		HTTPClient: hc, Budget: b.certs, Timeout: time.Minute, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	issued := map[string]*certs.Certificate{}
	for _, name := range []string{"revoked", "early", "kept"} {
		domain := name + ".example.test"
		ids[name] = b.site(t, domain)
		cert, err := iss.Issue(ctx, acme.Request{SiteID: ids[name], Domains: []string{domain}, Challenge: acme.HTTP01, HTTP01: web})
		if err != nil {
			t.Fatalf("issue %s at Pebble: %v", domain, err)
		}
		issued[name] = cert
		b.put(t, ids[name], cert, certs.RenewAfter(ids[name], cert.NotBefore, cert.NotAfter, clk.Now(), nil))
	}
	t.Logf("Pebble and 3 certificates ready in %v", time.Since(start))

	h := b.sweeper(t, jobs.RenewSweepConfig{Advisor: iss, ARIInterval: time.Hour})
	rep := sweepOnce(t, h)
	if rep.ARIChecked != 3 || rep.ARIErrors != 0 || rep.Started != 0 {
		t.Fatalf("first sweep %+v; want 3 asked, none due", rep)
	}

	// The CA revokes one (the platform's account asks it to) and wants
	// another replaced now.
	acc, err := b.certs.ACMEAccount(ctx, p.DirectoryURL, email)
	if err != nil {
		t.Fatal(err)
	}
	key, err := certs.ParseKey(acc.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	lc := lego.NewConfig(legoUser{key: key, uri: acc.URI})
	lc.CADirURL, lc.HTTPClient = p.DirectoryURL, hc
	client, err := lego.NewClient(lc)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Certificate.Revoke(ctx, issued["revoked"].ChainPEM); err != nil {
		t.Fatalf("revoke at Pebble: %v", err)
	}
	past := time.Now().UTC()
	leaf, _ := pem.Decode(issued["early"].ChainPEM)
	ari, _ := json.Marshal(map[string]any{"suggestedWindow": map[string]string{
		"start": past.Add(-2 * time.Hour).Format(time.RFC3339), "end": past.Add(-time.Hour).Format(time.RFC3339)}})
	body, _ := json.Marshal(map[string]string{"Certificate": string(pem.EncodeToMemory(leaf)), "ARIResponse": string(ari)})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.ManagementURL+"/set-renewal-info/", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := p.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("set-renewal-info: %s", resp.Status)
	}

	// Pebble's Retry-After is 6 h: a sweep 2 h on asks nothing, though
	// CHOM's own interval (1 h) has passed.
	clk.set(2 * time.Hour)
	if rep := sweepOnce(t, h); rep.ARIChecked != 0 || rep.Started != 0 {
		t.Errorf("sweep 2 h on %+v; want nothing asked (the CA's Retry-After), nothing started", rep)
	}
	clk.set(6*time.Hour + time.Minute)
	rep = sweepOnce(t, h)
	got := renewalsOf(t, b.store, b.enq.take())
	t.Logf("sweep after the revocation: %+v; the whole test took %v", rep, time.Since(start))
	if rep.ARIChecked != 3 || rep.ARIMoved < 2 || rep.Started != 2 || len(got) != 2 {
		t.Fatalf("sweep after the revocation %+v started %v; want 3 asked, revoked and early started", rep, got)
	}
	for _, id := range got {
		if id != ids["revoked"] && id != ids["early"] {
			t.Errorf("started the renewal of %s; want only revoked (%s) and early (%s)", id, ids["revoked"], ids["early"])
		}
	}
}
