package domainverify_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chomhq/chom/domainverify"
	"github.com/chomhq/chom/internal/testenv"
)

// bundle is one test's DNS server and a loopback HTTP server answering the
// challenge path with whatever handler the test sets.
type bundle struct {
	dns  *testenv.ChallTestSrv
	srv  *httptest.Server
	port int
}

func setup(t *testing.T, h http.Handler) *bundle {
	t.Helper()
	b := &bundle{dns: testenv.StartChallTestSrv(t)}
	if h != nil {
		b.srv = httptest.NewServer(h)
		t.Cleanup(b.srv.Close)
		_, p, _ := net.SplitHostPort(b.srv.Listener.Addr().String())
		b.port, _ = strconv.Atoi(p)
	}
	return b
}

func (b *bundle) checker(t *testing.T, allowNonPublic bool) *domainverify.Checker {
	t.Helper()
	c, err := domainverify.New(domainverify.Config{Resolver: b.dns.DNSAddr, AllowNonPublic: allowNonPublic,
		HTTPPort: b.port, HTTPTimeout: time.Second, DNSTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// naiveGet is what a check without the SSRF guards would do: resolve with
// the same DNS server, connect anywhere, follow any redirect.
func (b *bundle) naiveGet(t *testing.T, url string) (string, error) {
	t.Helper()
	r := &net.Resolver{PreferGo: true, Dial: b.dns.Dial}
	d := &net.Dialer{Resolver: r, Timeout: time.Second}
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var sb strings.Builder
	_, err = fmt.Fprint(&sb, readAll(resp))
	return sb.String(), err
}

func readAll(resp *http.Response) string {
	buf := make([]byte, 4096)
	n, _ := resp.Body.Read(buf)
	return string(buf[:n])
}

func tokenHandler(token string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != domainverify.PathPrefix+token {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, token)
	})
}

func notVerified(t *testing.T, err error) *domainverify.NotVerifiedError {
	t.Helper()
	var nv *domainverify.NotVerifiedError
	if !errors.As(err, &nv) {
		t.Fatalf("err = %v, want a *NotVerifiedError", err)
	}
	return nv
}

func TestCheckTXT(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t, nil)
	c := b.checker(t, false)
	const domain, token = "txt.example", "tok-abcdefghijklmnopqrs"

	err := c.Check(ctx, domain, token)
	nv := notVerified(t, err)
	t.Logf("before the record: %v", err)
	if !strings.Contains(nv.Expected, "_chom-challenge.txt.example") || !strings.Contains(nv.Expected, token) ||
		!strings.Contains(nv.Found, "no TXT record") {
		t.Errorf("error %q should name the record, the token and what was found", err)
	}

	// Another value, and the token under another name: not proof.
	if err := b.dns.SetTXT(ctx, "_chom-challenge.txt.example", "someone-else"); err != nil {
		t.Fatal(err)
	}
	if err := b.dns.SetTXT(ctx, "_chom-challenge.other.example", token); err != nil {
		t.Fatal(err)
	}
	nv = notVerified(t, c.Check(ctx, domain, token))
	if !strings.Contains(nv.Found, `"someone-else"`) {
		t.Errorf("found %q should quote the value seen", nv.Found)
	}

	// The token among other values: proof.
	if err := b.dns.SetTXT(ctx, "_chom-challenge.txt.example", token); err != nil {
		t.Fatal(err)
	}
	if err := c.Check(ctx, domain, token); err != nil {
		t.Fatalf("Check with the record = %v, want nil", err)
	}
}

func TestCheckHTTP(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	const token = "tok-http-abcdefghijklmn"
	b := setup(t, tokenHandler(token))
	if err := b.dns.AddA(ctx, "web.example", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	// The test server is on loopback: only the test-only option reaches it.
	if err := b.checker(t, true).Check(ctx, "web.example", token); err != nil {
		t.Fatalf("Check over HTTP = %v, want nil", err)
	}
	nv := notVerified(t, b.checker(t, true).Check(ctx, "web.example", "tok-wrong"))
	if !strings.Contains(nv.Found, "HTTP status 404") {
		t.Errorf("found %q, want the 404 named", nv.Found)
	}
}

// TestSSRF: a tenant points its domain at addresses CHOM must never fetch
// from. Each case first shows a naive fetch would reach the target (where a
// target can exist on this machine), then that the checker refuses.
func TestSSRF(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	const token = "tok-ssrf-abcdefghijklmn"
	b := setup(t, tokenHandler(token))
	c := b.checker(t, false)

	t.Run("loopback", func(t *testing.T) {
		if err := b.dns.AddA(ctx, "loop.example", "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
		url := "http://loop.example:" + strconv.Itoa(b.port) + domainverify.PathPrefix + token
		if body, err := b.naiveGet(t, url); err != nil || strings.TrimSpace(body) != token {
			t.Fatalf("naive GET = %q, %v: the attack set-up does not reach the loopback server", body, err)
		}
		found, ok := c.CheckHTTP(ctx, "loop.example", token)
		t.Logf("checker: ok=%v found=%q", ok, found)
		if ok || !strings.Contains(found, "non-public address") {
			t.Fatalf("CheckHTTP of a loopback domain = %v, %q; want a refusal", ok, found)
		}
	})
	for _, addr := range []string{"169.254.169.254", "10.0.0.1", "192.168.1.1", "172.16.0.1", "100.100.100.200", "0.0.0.0"} {
		t.Run(addr, func(t *testing.T) {
			host := "target-" + strings.ReplaceAll(addr, ".", "-") + ".example"
			if err := b.dns.AddA(ctx, host, addr); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			found, ok := c.CheckHTTP(ctx, host, token)
			t.Logf("checker: ok=%v found=%q in %v", ok, found, time.Since(start))
			// A naive fetch would try to connect and report a timeout or a
			// connection failure; the checker refuses before connecting.
			if ok || !strings.Contains(found, "non-public address") {
				t.Fatalf("CheckHTTP of %s = %v, %q; want a refusal before connecting", addr, ok, found)
			}
		})
	}
	t.Run("one public and one private address", func(t *testing.T) {
		if err := b.dns.AddA(ctx, "mixed.example", "93.184.215.14", "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
		if found, ok := c.CheckHTTP(ctx, "mixed.example", token); ok || !strings.Contains(found, "non-public address") {
			t.Fatalf("CheckHTTP of a mixed domain = %v, %q; want a refusal", ok, found)
		}
	})
}

// TestRedirects: a redirect to another host is refused (a naive client
// follows it and finds the token there); one on the same host is followed.
func TestRedirects(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	const token = "tok-redirect-abcdefghij"
	var port int
	b := setup(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Host == "hop.example:"+strconv.Itoa(port) && r.URL.Path == domainverify.PathPrefix+token:
			http.Redirect(w, r, "http://elsewhere.example:"+strconv.Itoa(port)+"/t", http.StatusFound)
		case r.Host == "same.example:"+strconv.Itoa(port) && r.URL.Path == domainverify.PathPrefix+token:
			http.Redirect(w, r, "/t", http.StatusFound)
		case r.URL.Path == "/t":
			fmt.Fprint(w, token)
		default:
			http.NotFound(w, r)
		}
	}))
	port = b.port
	for _, h := range []string{"hop.example", "elsewhere.example", "same.example"} {
		if err := b.dns.AddA(ctx, h, "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
	}
	c := b.checker(t, true)
	url := "http://hop.example:" + strconv.Itoa(port) + domainverify.PathPrefix + token
	if body, err := b.naiveGet(t, url); err != nil || body != token {
		t.Fatalf("naive GET = %q, %v: the redirect set-up does not work", body, err)
	}
	found, ok := c.CheckHTTP(ctx, "hop.example", token)
	t.Logf("cross-host: ok=%v found=%q", ok, found)
	if ok || !strings.Contains(found, "redirect to another host refused") {
		t.Fatalf("CheckHTTP through a cross-host redirect = %v, %q; want a refusal", ok, found)
	}
	if found, ok := c.CheckHTTP(ctx, "same.example", token); !ok {
		t.Fatalf("CheckHTTP through a same-host redirect = %q; want proof", found)
	}
}

// TestLimits: an oversized answer is not proof, even when it starts with the
// token, and a server that never answers costs one timeout.
func TestLimits(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	const token = "tok-limits-abcdefghijk"
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	b := setup(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.Host, "big.example") {
			fmt.Fprint(w, token+strings.Repeat(" ", 4096))
			return
		}
		select { // slow.example: never answers in time
		case <-release:
		case <-r.Context().Done():
		}
	}))
	for _, h := range []string{"big.example", "slow.example"} {
		if err := b.dns.AddA(ctx, h, "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
	}
	c := b.checker(t, true)
	if found, ok := c.CheckHTTP(ctx, "big.example", token); ok || !strings.Contains(found, "longer than") {
		t.Fatalf("CheckHTTP of an oversized answer = %v, %q; want refused", ok, found)
	}
	start := time.Now()
	found, ok := c.CheckHTTP(ctx, "slow.example", token)
	t.Logf("slow server: %q after %v (HTTPTimeout 1s)", found, time.Since(start))
	if ok || !strings.Contains(found, "timeout") {
		t.Fatalf("CheckHTTP of a silent server = %v, %q; want a timeout", ok, found)
	}
}

func TestPublic(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"93.184.215.14": true, "2606:2800:21f:cb07:6820:80da:af6b:8b2c": true,
		"127.0.0.1": false, "::1": false, "10.1.2.3": false, "172.31.255.255": false, "192.168.0.1": false,
		"169.254.169.254": false, "fe80::1": false, "fd00:ec2::254": false, "100.100.100.200": false,
		"0.0.0.0": false, "::": false, "::ffff:127.0.0.1": false, "::ffff:169.254.169.254": false,
		"224.0.0.1": false, "255.255.255.255": false, "64:ff9b::a9fe:a9fe": false, "2002:a9fe:a9fe::": false,
		"192.0.2.1": false,
	} {
		if got := domainverify.Public(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Public(%s) = %v, want %v", addr, got, want)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	if _, err := domainverify.New(domainverify.Config{Resolver: "no-port"}); err == nil {
		t.Error("New accepted a resolver without a port")
	}
	if _, err := domainverify.New(domainverify.Config{HTTPPort: 70000}); err == nil {
		t.Error("New accepted port 70000")
	}
}
