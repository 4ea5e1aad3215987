package ssh_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/ssh"
	"github.com/chomhq/chom/drivers/tlstest"
	"github.com/chomhq/chom/internal/vpsenv"
)

// Tokens and key authorizations shaped as ACME's (43 base64url characters).
const (
	tokenA   = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
	keyAuthA = tokenA + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
	tokenB   = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
	keyAuthB = tokenB + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
)

// httpsClient reaches the VPS's TLS port for any URL, trusting only ca's root,
// with the URL's host as SNI and Host; it speaks HTTP/2 when nginx offers it and
// follows no redirect.
func httpsClient(v *vpsenv.VPS, ca *tlstest.CA, keepAlive bool) *http.Client {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(v.HTTPSPort))
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: ca.Roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
		DisableKeepAlives: !keepAlive,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
		},
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// plainClient reaches the VPS's HTTP port for any URL and follows no redirect.
func plainClient(v *vpsenv.VPS) *http.Client {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(v.HTTPPort))
	return &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// fetched is one response, read whole.
type fetched struct {
	status int
	proto  int
	header http.Header
	body   string
	serial string // the leaf's serial, hex; "" over HTTP
}

func fetch(ctx context.Context, c *http.Client, url string) (fetched, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fetched{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fetched{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	f := fetched{status: resp.StatusCode, proto: resp.ProtoMajor, header: resp.Header, body: string(b)}
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		f.serial = resp.TLS.PeerCertificates[0].SerialNumber.Text(16)
	}
	return f, err
}

// eventuallyFetch fetches url until ok passes (nginx reloads asynchronously) or
// 10s pass.
func eventuallyFetch(t *testing.T, c *http.Client, url string, ok func(fetched) bool) fetched {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f, err := fetch(t.Context(), c, url)
		if err == nil && ok(f) {
			return f
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %+v, error %v", url, f, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func serial(l tlstest.Leaf) string { return l.X509.SerialNumber.Text(16) }

// testTLS takes one site through the whole TLS life on real nginx: an HTTP-01
// challenge served on every name, a certificate deployed (HTTPS with HTTP/2,
// verified against the test CA only, HTTP redirected, ACME still on HTTP), kept
// by a re-provision, replaced under a polling client (which must see no failed
// request), a deploy nginx refuses (the old certificate stays), bad input
// refused, and back to HTTP, then removed with the site.
func testTLS(t *testing.T, b *realBundle) {
	ctx := t.Context()
	v := b.vps
	ca := tlstest.NewCA(t)
	site := b.spec("site_tls1", "tls1.example.com", drivers.SiteTypeHTML)
	site.Aliases = []string{"www.tls1.example.com"}
	if _, err := b.prov.Provision(ctx, site, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.prov.Deprovision(context.WithoutCancel(ctx), site) })
	plain := plainClient(v)
	tlsDir := filepath.Join(v.StateDir, site.ID, "tls")

	// HTTP-01 on every name, idempotent both ways.
	start := time.Now()
	for range 2 {
		if err := b.prov.PutChallenge(ctx, site, tokenA, keyAuthA); err != nil {
			t.Fatal(err)
		}
	}
	for _, host := range site.ServerNames() {
		f := eventuallyFetch(t, plain, "http://"+host+"/.well-known/acme-challenge/"+tokenA, func(f fetched) bool { return f.status == 200 })
		if f.body != keyAuthA || !strings.HasPrefix(f.header.Get("Content-Type"), "text/plain") {
			t.Errorf("challenge on %s: %q, Content-Type %q; want the key authorization as text/plain", host, f.body, f.header.Get("Content-Type"))
		}
	}
	t.Logf("challenge put and answered on %d names in %v", len(site.ServerNames()), time.Since(start).Round(time.Millisecond))
	for range 2 {
		if err := b.prov.RemoveChallenge(ctx, site, tokenA); err != nil {
			t.Fatal(err)
		}
	}
	if f, err := fetch(ctx, plain, "http://"+site.Domain+"/.well-known/acme-challenge/"+tokenA); err != nil || f.status != 404 {
		t.Errorf("removed challenge: %+v, %v; want 404", f, err)
	}

	// The first certificate: HTTPS with HTTP/2 on both names, HTTP redirected.
	cert1 := ca.Issue(t, site.ServerNames(), tlstest.LeafOptions{})
	start = time.Now()
	if err := b.prov.DeployCertificate(ctx, site, cert1.Cert, drivers.TLSOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("first certificate deployed in %v", time.Since(start).Round(time.Millisecond))
	client := httpsClient(v, ca, false)
	for _, host := range site.ServerNames() {
		f := eventuallyFetch(t, client, "https://"+host+"/", func(f fetched) bool { return f.status == 200 })
		if f.serial != serial(cert1) || f.proto != 2 || !strings.Contains(f.body, "<h1>tls1.example.com</h1>") {
			t.Errorf("https://%s/: serial %s (want %s), HTTP/%d (want 2), body %q", host, f.serial, serial(cert1), f.proto, f.body)
		}
		if h := f.header.Get("Strict-Transport-Security"); h != "" {
			t.Errorf("https://%s/ sends HSTS %q without being asked", host, h)
		}
		// An old worker may still answer plain HTTP for a moment after the
		// reload: wait for the redirect, then check where it points.
		r := eventuallyFetch(t, plain, "http://"+host+"/some/page?x=1", func(f fetched) bool { return f.status == 301 })
		if loc := r.header.Get("Location"); loc != "https://"+host+"/some/page?x=1" {
			t.Errorf("http://%s/some/page?x=1 redirects to %q, want https://%[1]s/some/page?x=1", host, loc)
		}
	}
	// Renewal works on a TLS site: ACME is answered over HTTP, not redirected.
	if err := b.prov.PutChallenge(ctx, site, tokenB, keyAuthB); err != nil {
		t.Fatal(err)
	}
	if f, err := fetch(ctx, plain, "http://"+site.Domain+"/.well-known/acme-challenge/"+tokenB); err != nil || f.status != 200 || f.body != keyAuthB {
		t.Errorf("challenge on a TLS site over HTTP: %+v, %v", f, err)
	}
	// The key is root's alone.
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{tlsDir, 0o700 | os.ModeDir}, {filepath.Join(tlsDir, "privkey.pem"), 0o600}, {filepath.Join(tlsDir, "fullchain.pem"), 0o600}} {
		fi, err := os.Lstat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 || fi.Mode() != c.mode {
			t.Errorf("%s: uid %d gid %d mode %v, want root:root %v", c.path, st.Uid, st.Gid, fi.Mode(), c.mode)
		}
	}

	// Deploying the same certificate again changes nothing.
	block := filepath.Join(v.NginxAvailable, site.Domain+".conf")
	before := fileHash(t, block)
	if err := b.prov.DeployCertificate(ctx, site, cert1.Cert, drivers.TLSOptions{}); err != nil {
		t.Fatal(err)
	}
	if fileHash(t, block) != before {
		t.Error("a second deploy of the same certificate changed the server block")
	}

	// A re-provision keeps HTTPS.
	if _, err := b.prov.Provision(ctx, site, nil); err != nil {
		t.Fatal(err)
	}
	if fileHash(t, block) != before {
		t.Errorf("Provision of a TLS site changed its server block:\n%s", mustRead(t, block))
	}
	if r, err := fetch(ctx, plain, "http://"+site.Domain+"/"); err != nil || r.status != 301 {
		t.Errorf("after a re-provision http:// answers %d, %v; want 301", r.status, err)
	}

	// Replaced under a client polling HTTPS throughout (keep-alive, as a
	// browser): no request may fail, and the new serial (and HSTS) appears.
	cert2 := ca.Issue(t, site.ServerNames(), tlstest.LeafOptions{})
	poller := httpsClient(v, ca, true)
	var (
		requests, failures atomic.Int64
		sawNew             atomic.Bool
		firstErr           error
		errOnce            sync.Once
		stop               = make(chan struct{})
		done               = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			f, err := fetch(ctx, poller, "https://"+site.Domain+"/")
			requests.Add(1)
			if err != nil || f.status != 200 {
				failures.Add(1)
				errOnce.Do(func() { firstErr = fmt.Errorf("status %d, %v", f.status, err) })
				continue
			}
			if f.serial == serial(cert2) {
				sawNew.Store(true)
			}
			time.Sleep(5 * time.Millisecond) // a steady client, not a CPU hog on a shared machine
		}
	}()
	time.Sleep(300 * time.Millisecond)
	start = time.Now()
	if err := b.prov.DeployCertificate(ctx, site, cert2.Cert, drivers.TLSOptions{HSTS: true, HSTSMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	deployed := time.Since(start)
	// The poller's keep-alive connection ends when its old worker exits; a new
	// connection sees the new certificate.
	deadline := time.Now().Add(15 * time.Second)
	for !sawNew.Load() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	seen := time.Since(start)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	<-done
	if !sawNew.Load() {
		t.Errorf("the poller never saw the new certificate %s", serial(cert2))
	}
	if failures.Load() > 0 {
		t.Errorf("%d of %d requests failed during the replacement; first: %v", failures.Load(), requests.Load(), firstErr)
	}
	t.Logf("certificate replaced under a keep-alive HTTP/2 poller: deploy took %v, new serial served %v after the deploy began; %d requests, %d failed",
		deployed.Round(time.Millisecond), seen.Round(time.Millisecond), requests.Load(), failures.Load())
	f := eventuallyFetch(t, client, "https://"+site.Domain+"/", func(f fetched) bool { return f.serial == serial(cert2) })
	if h := f.header.Get("Strict-Transport-Security"); h != "max-age=3600" {
		t.Errorf("HSTS = %q, want max-age=3600", h)
	}

	// nginx refuses the next deploy: the old certificate, key and block stay.
	chain2, key2 := mustRead(t, filepath.Join(tlsDir, "fullchain.pem")), mustRead(t, filepath.Join(tlsDir, "privkey.pem"))
	block2 := mustRead(t, block)
	failing := newProvisioner(t, v, func(l *ssh.Layout) { l.NginxCheck = []string{"sh", "-c", "echo 'emerg: test says no' >&2; exit 1"} })
	cert3 := ca.Issue(t, site.ServerNames(), tlstest.LeafOptions{})
	err := failing.DeployCertificate(ctx, site, cert3.Cert, drivers.TLSOptions{})
	if !errors.Is(err, drivers.ErrConfigRejected) || !strings.Contains(err.Error(), "test says no") {
		t.Fatalf("deploy with a failing nginx -t: %v, want ErrConfigRejected with the check's output", err)
	}
	checkUnchanged := func(what string) {
		t.Helper()
		if mustRead(t, filepath.Join(tlsDir, "fullchain.pem")) != chain2 || mustRead(t, filepath.Join(tlsDir, "privkey.pem")) != key2 || mustRead(t, block) != block2 {
			t.Errorf("%s changed the chain, key or server block", what)
		}
		if left, _ := filepath.Glob(filepath.Join(tlsDir, "*.chom-*")); len(left) > 0 {
			t.Errorf("%s left %v", what, left)
		}
		reloadNginx(t, v)
		if f, err := fetch(ctx, client, "https://"+site.Domain+"/"); err != nil || f.serial != serial(cert2) {
			t.Errorf("after %s (and a reload) the site serves %+v, %v; want serial %s", what, f, err, serial(cert2))
		}
	}
	checkUnchanged("a rejected deploy")

	// Bad input is refused before anything is written.
	other := ca.Issue(t, site.ServerNames(), tlstest.LeafOptions{})
	noAlias := ca.Issue(t, []string{site.Domain}, tlstest.LeafOptions{})
	expired := ca.Issue(t, site.ServerNames(), tlstest.LeafOptions{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	for name, c := range map[string]drivers.TLSCertificate{
		"key of another certificate":   {ChainPEM: cert3.Cert.ChainPEM, KeyPEM: other.Cert.KeyPEM},
		"leaf without the alias":       noAlias.Cert,
		"expired leaf":                 expired.Cert,
		"chain out of order":           {ChainPEM: append(tlstest.PEM(ca.Intermediate), tlstest.PEM(cert3.X509)...), KeyPEM: cert3.Cert.KeyPEM},
		"garbage after the chain":      {ChainPEM: append(bytes.Clone(cert3.Cert.ChainPEM), "ssl_certificate /etc/shadow;"...), KeyPEM: cert3.Cert.KeyPEM},
		"private key in the chain":     {ChainPEM: append(bytes.Clone(cert3.Cert.ChainPEM), cert3.Cert.KeyPEM...), KeyPEM: cert3.Cert.KeyPEM},
		"empty":                        {},
		"a certificate as the key":     {ChainPEM: cert3.Cert.ChainPEM, KeyPEM: tlstest.PEM(cert3.X509)},
		"key followed by another":      {ChainPEM: cert3.Cert.ChainPEM, KeyPEM: append(bytes.Clone(cert3.Cert.KeyPEM), other.Cert.KeyPEM...)},
		"intermediate alone (CA leaf)": {ChainPEM: tlstest.PEM(ca.Intermediate), KeyPEM: cert3.Cert.KeyPEM},
	} {
		err := b.prov.DeployCertificate(ctx, site, c, drivers.TLSOptions{})
		if !errors.Is(err, drivers.ErrInvalidSpec) {
			t.Errorf("deploy of %s: %v, want ErrInvalidSpec", name, err)
		}
	}
	if err := b.prov.DeployCertificate(ctx, site, cert3.Cert, drivers.TLSOptions{HSTS: true, HSTSMaxAge: 100 * 365 * 24 * time.Hour}); !errors.Is(err, drivers.ErrInvalidSpec) {
		t.Errorf("deploy with a 100-year HSTS max-age: %v, want ErrInvalidSpec", err)
	}
	checkUnchanged("refused input")

	// OCSP: a leaf naming a responder (the chain holds its issuer) is stapled;
	// nginx -t takes the block.
	withOCSP := ca.Issue(t, site.ServerNames(), tlstest.LeafOptions{OCSP: "http://127.0.0.1:9/ocsp"})
	if err := b.prov.DeployCertificate(ctx, site, withOCSP.Cert, drivers.TLSOptions{}); err != nil {
		t.Fatal(err)
	}
	if conf := mustRead(t, block); !strings.Contains(conf, "ssl_stapling on;") || !strings.Contains(conf, "ssl_stapling_verify on;") {
		t.Errorf("a leaf with an OCSP responder, block without stapling:\n%s", conf)
	}
	eventuallyFetch(t, client, "https://"+site.Domain+"/", func(f fetched) bool { return f.serial == serial(withOCSP) && f.status == 200 })

	// Back to plain HTTP, twice.
	for range 2 {
		if err := b.prov.RemoveCertificate(ctx, site); err != nil {
			t.Fatal(err)
		}
	}
	eventuallyFetch(t, plain, "http://"+site.Domain+"/", func(f fetched) bool {
		return f.status == 200 && strings.Contains(f.body, "<h1>tls1.example.com</h1>")
	})
	// Old workers finish what they serve, then exit: wait for the handshake to
	// be refused (the VPS's default TLS server rejects unknown names).
	deadline = time.Now().Add(10 * time.Second)
	for {
		_, err := fetch(ctx, client, "https://"+site.Domain+"/")
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("https:// still answers 10s after RemoveCertificate")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if exists(tlsDir) {
		t.Errorf("%s still exists after RemoveCertificate", tlsDir)
	}
	if conf := mustRead(t, block); strings.Contains(conf, "ssl") || strings.Contains(conf, "return 301") {
		t.Errorf("block after RemoveCertificate:\n%s", conf)
	}

	// Deprovision takes the certificate and the challenges with the site.
	if err := b.prov.DeployCertificate(ctx, site, cert2.Cert, drivers.TLSOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.prov.Deprovision(ctx, site); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{tlsDir, filepath.Join(v.ChallengeDir, site.Domain)} {
		if exists(p) {
			t.Errorf("%s still exists after Deprovision", p)
		}
	}
	// A certificate for a site that is not there is refused, and creates nothing.
	if err := b.prov.DeployCertificate(ctx, site, cert2.Cert, drivers.TLSOptions{}); err == nil || exists(tlsDir) {
		t.Errorf("deploy to a deprovisioned site: %v (TLS dir exists: %v); want an error and nothing written", err, exists(tlsDir))
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// testTLSAttacks is what a hostile tenant (or a forged task payload) tries
// against the TLS side: tokens and key authorizations that are paths or
// break out of a file, reading its own private key as the site user, planting
// or reading a challenge token from its own code, and having its token
// answered on another site's domain.
func testTLSAttacks(t *testing.T, b *realBundle) {
	ctx := t.Context()
	v := b.vps
	ca := tlstest.NewCA(t)
	siteA := b.spec("site_tlsa", "a.tls-attack.example", drivers.SiteTypePHP)
	siteB := b.spec("site_tlsb", "b.tls-attack.example", drivers.SiteTypeHTML)
	siteB.TenantID = "ten_2"
	for _, s := range []drivers.SiteSpec{siteA, siteB} {
		if _, err := b.prov.Provision(ctx, s, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.prov.Deprovision(context.WithoutCancel(ctx), s) })
	}
	plain := plainClient(v)
	userA := drivers.SystemUser(siteA.ID)
	challengesA := filepath.Join(v.ChallengeDir, siteA.Domain)

	// Tokens that are paths, and key authorizations that break a line.
	target := filepath.Join(v.ChallengeDir, "escaped")
	for _, tok := range []string{"../escaped", "..", "../../../../tmp/x", "a/b/c/d/e/f/g/h/i/j", "%2e%2e%2fescaped-token-xx",
		tokenA + "\n", tokenA + " ", ".hidden-token-xxxxxxxx", ""} {
		if err := b.prov.PutChallenge(ctx, siteA, tok, tok+".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"); !errors.Is(err, drivers.ErrInvalidSpec) {
			t.Errorf("PutChallenge token %q: %v, want ErrInvalidSpec", tok, err)
		}
		if err := b.prov.RemoveChallenge(ctx, siteA, tok); !errors.Is(err, drivers.ErrInvalidSpec) {
			t.Errorf("RemoveChallenge token %q: %v, want ErrInvalidSpec", tok, err)
		}
	}
	for _, ka := range []string{keyAuthA + "\nssl_certificate /etc/shadow;", keyAuthA + `"`, keyAuthA + "'", "x" + keyAuthA,
		tokenB + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI", tokenA, tokenA + ".", keyAuthA + " "} {
		if err := b.prov.PutChallenge(ctx, siteA, tokenA, ka); !errors.Is(err, drivers.ErrInvalidSpec) {
			t.Errorf("PutChallenge key authorization %q: %v, want ErrInvalidSpec", ka, err)
		}
	}
	if exists(target) || exists(challengesA) {
		t.Errorf("refused challenges wrote something: %s %v, %s %v", target, exists(target), challengesA, exists(challengesA))
	}

	// A's token is answered on A's names only, never on B's.
	if err := b.prov.PutChallenge(ctx, siteA, tokenA, keyAuthA); err != nil {
		t.Fatal(err)
	}
	eventuallyFetch(t, plain, "http://"+siteA.Domain+"/.well-known/acme-challenge/"+tokenA, func(f fetched) bool { return f.body == keyAuthA })
	if f, err := fetch(ctx, plain, "http://"+siteB.Domain+"/.well-known/acme-challenge/"+tokenA); err != nil || f.status != 404 {
		t.Errorf("A's token on B's domain: %d %q, %v; want 404", f.status, f.body, err)
	}

	// The site user can neither read, plant nor replace a token in its
	// challenge directory, and a token planted in its document root is not
	// what /.well-known/acme-challenge/ serves.
	for _, attempt := range [][]string{
		{"cat", filepath.Join(challengesA, tokenA)},
		{"ls", challengesA},
		{"touch", filepath.Join(challengesA, tokenB)},
		{"ln", "-sfn", "/etc/shadow", filepath.Join(challengesA, tokenA)},
	} {
		out, err := asUser(userA, attempt...)
		if err == nil || !strings.Contains(out, "ermission denied") {
			t.Errorf("%v as the site user: %v: %s; want permission denied", attempt, err, out)
		}
	}
	planted := filepath.Join(v.WebRoot, siteA.Domain, "public", ".well-known", "acme-challenge")
	if out, err := asUser(userA, "mkdir", "-p", planted); err != nil {
		t.Fatalf("mkdir as the site user: %v: %s", err, out)
	}
	if out, err := asUser(userA, "sh", "-c", `printf '%s' "$1" > "$2"`, "sh", tokenB+".planted-by-the-tenant-xxxxxxxxxxxx", filepath.Join(planted, tokenB)); err != nil {
		t.Fatalf("write as the site user: %v: %s", err, out)
	}
	if f, err := fetch(ctx, plain, "http://"+siteA.Domain+"/.well-known/acme-challenge/"+tokenB); err != nil || f.status != 404 {
		t.Errorf("a token planted in the document root: %d %q, %v; want 404", f.status, f.body, err)
	}

	// The site user cannot read its own private key (or list its TLS directory).
	cert := ca.Issue(t, siteA.ServerNames(), tlstest.LeafOptions{})
	if err := b.prov.DeployCertificate(ctx, siteA, cert.Cert, drivers.TLSOptions{}); err != nil {
		t.Fatal(err)
	}
	tlsDir := filepath.Join(v.StateDir, siteA.ID, "tls")
	for _, attempt := range [][]string{{"cat", filepath.Join(tlsDir, "privkey.pem")}, {"ls", tlsDir}, {"cat", filepath.Join(tlsDir, "fullchain.pem")}} {
		out, err := asUser(userA, attempt...)
		if err == nil || !strings.Contains(out, "ermission denied") {
			t.Errorf("%v as the site user: %v: %s; want permission denied", attempt, err, out)
		}
	}
	// Nor through its PHP, requested over HTTPS.
	probe := filepath.Join(v.WebRoot, siteA.Domain, "public", "key.php")
	php := fmt.Sprintf("<?php var_dump(@file_get_contents(%q));", filepath.Join(tlsDir, "privkey.pem"))
	if out, err := asUser(userA, "sh", "-c", `printf '%s' "$1" > "$2"`, "sh", php, probe); err != nil {
		t.Fatalf("write key.php: %v: %s", err, out)
	}
	f := eventuallyFetch(t, httpsClient(v, ca, false), "https://"+siteA.Domain+"/key.php", func(f fetched) bool { return f.status == 200 })
	if strings.Contains(f.body, "PRIVATE KEY") || !strings.Contains(f.body, "bool(false)") {
		t.Errorf("PHP of the site read its key: %q", f.body)
	}
	// A real nginx -t failure (a neighbour's broken block, which stops nginx
	// reloading for every site) leaves B as it was: no TLS files, its block
	// unchanged. This runs here, in the sequential suite, because a broken
	// block would fail every other test's reload on a shared VPS.
	blockB := filepath.Join(v.NginxAvailable, siteB.Domain+".conf")
	beforeB := fileHash(t, blockB)
	broken := filepath.Join(v.NginxEnabled, "zz-broken.example.conf")
	if err := os.WriteFile(broken, []byte("server {\n    listen 127.0.0.1:1;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	certB := ca.Issue(t, siteB.ServerNames(), tlstest.LeafOptions{})
	err := b.prov.DeployCertificate(ctx, siteB, certB.Cert, drivers.TLSOptions{})
	if rmErr := os.Remove(broken); rmErr != nil {
		t.Fatal(rmErr)
	}
	if !errors.Is(err, drivers.ErrConfigRejected) || !strings.Contains(err.Error(), "zz-broken") {
		t.Errorf("deploy while real nginx -t fails: %v, want ErrConfigRejected naming the broken file", err)
	}
	tlsDirB := filepath.Join(v.StateDir, siteB.ID, "tls")
	if after := fileHash(t, blockB); after != beforeB {
		t.Error("a deploy nginx -t refused changed B's server block")
	}
	if entries, _ := os.ReadDir(tlsDirB); len(entries) > 0 {
		t.Errorf("a deploy nginx -t refused left %d files in %s (a first deploy has nothing to put back)", len(entries), tlsDirB)
	}
	if f, err := fetch(ctx, plain, "http://"+siteB.Domain+"/"); err != nil || f.status != 200 {
		t.Errorf("B after a refused first deploy: %d, %v; want still served over HTTP", f.status, err)
	}

	t.Logf("refused: 9 path tokens, 8 broken key authorizations; the site user cannot read, list, plant or link a token, nor read its key (shell: permission denied; PHP: %s); A's token is 404 on B's domain; a token planted in the document root is 404; a first deploy that real nginx -t refused (a neighbour's broken block) left B on HTTP with nothing written",
		strings.TrimSpace(f.body))
}

// HTTP/2 syntax follows the server's nginx: the listen parameter before
// 1.25.1 (and when the version is unknown), "http2 on;" from 1.25.1.
func TestHTTP2Listen(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]bool{"1.22.1": true, "1.18.0": true, "1.25.0": true, "1.25.1": false, "1.26.3": false,
		"1.27.0": false, "2.0.0": false, "0.9.9": true, "": true, "1.x.1": true, "1.25": true} {
		if got := ssh.HTTP2Listen(v); got != want {
			t.Errorf("HTTP2Listen(%q) = %v, want %v", v, got, want)
		}
	}
}

// The server's answer is read strictly: a certificate counts as deployed only
// with both recorded choices, values are digits, resolvers IP addresses.
func TestParseTLSState(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		out  string
		want ssh.TLSState
	}{
		{"block yes\ntls HSTS_MAX_AGE=3600\ntls OCSP=1\nnginx nginx version: nginx/1.22.1\nns 192.0.2.53\nns 2001:db8::1\n",
			ssh.TLSState{Provisioned: true, Deployed: true, HSTSMaxAge: 3600, OCSP: true, Nginx: "1.22.1", Resolvers: []string{"192.0.2.53", "[2001:db8::1]"}}},
		{"tls HSTS_MAX_AGE=0\nnginx nginx version: nginx/1.27.4 (Ubuntu)\n", ssh.TLSState{HSTSMaxAge: 0, Nginx: "1.27.4"}},
		{"tls HSTS_MAX_AGE=x\ntls OCSP=0\nnginx sh: 1: nginx: not found\nns resolver.example\nns 10.0.0.1;\n", ssh.TLSState{}},
	} {
		got := ssh.ParseTLSState(c.out)
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("ParseTLSState(%q) = %+v, want %+v", c.out, got, c.want)
		}
	}
}
