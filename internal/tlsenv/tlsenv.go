package tlsenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/chomhq/chom/certs/acme"
	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/ssh"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/internal/vpsenv"
)

// ServerID is the drivers.Server ID of the VPS in Env.Server.
const ServerID = "vps_tlsenv"

// TenantID is the tenant of the sites Env.Site describes.
const TenantID = "ten_tlsenv"

// Options configures Start; the zero value is a Pebble that refuses nothing
// and issues 90-day certificates.
type Options struct {
	// DomainBlocklist are domains (and their subdomains) Pebble refuses to
	// issue for (rejectedIdentifier: acme.CodeCARefused).
	DomainBlocklist []string
	// CertificateValidity is the lifetime of Pebble's certificates; 0 is 90
	// days.
	CertificateValidity time.Duration
}

// Env is one running set: challtestsrv, Pebble resolving through it, and a
// VPS of real sshd and nginx whose HTTP port is the one Pebble's VA fetches
// HTTP-01 answers from.
type Env struct {
	// DNS answers 127.0.0.1 for every name unless a test says otherwise
	// (DNS.AddA(ctx, host, "127.0.0.2") sends Pebble elsewhere for host).
	DNS *testenv.ChallTestSrv
	// Pebble is the CA; Pebble.DirectoryURL is its ACME directory and
	// Pebble.ClientCAFile the root of its listener (CHOM_ACME_CA_CERTS).
	Pebble *testenv.Pebble
	// VPS is the server; VPS.HTTPPort and VPS.HTTPSPort are nginx's ports.
	VPS *vpsenv.VPS
	// Roots holds Pebble's issuing root, read once at Start: the only root
	// HTTPSClient and StartPoller trust. Pebble makes a new root when it is
	// restarted, and certificates issued after a restart do not chain to
	// this one.
	Roots *x509.CertPool
	// Server is the VPS as a drivers.Server (ID ServerID, 127.0.0.1, its SSH
	// port and pinned host key), for a drivers.SiteSpec.
	Server drivers.Server
}

// Start starts the VPS (vpsenv.Start: sshd, nginx, php-fpm, MariaDB),
// challtestsrv and Pebble, in that order, and stops them all at cleanup; it
// sends lego's process-wide log (acme.SetLegoLogger) to stderr at Warn. It takes
// a few seconds, most of it MariaDB's first start: share one Env between
// subtests.
func Start(tb testing.TB, opts Options) *Env {
	tb.Helper()
	// lego logs every step to stdout at Info; cmd/chom keeps Warn and up.
	acme.SetLegoLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	v := vpsenv.Start(tb)
	dns := testenv.StartChallTestSrv(tb)
	p := testenv.StartPebble(tb, dns, testenv.PebbleOptions{
		DomainBlocklist:     opts.DomainBlocklist,
		CertificateValidity: opts.CertificateValidity,
		HTTPPort:            v.HTTPPort,
	})
	return &Env{
		DNS: dns, Pebble: p, VPS: v, Roots: p.Roots(tb),
		Server: drivers.Server{ID: ServerID, Hostname: "tlsenv.local", IPAddress: "127.0.0.1", SSHPort: v.SSHPort, HostKey: v.HostKey},
	}
}

// SSHConfig is the drivers/ssh configuration for the VPS: its client key,
// root, its layout (nginx on VPS.HTTPPort, HTTPS blocks on VPS.HTTPSPort) and
// a logger that discards.
func (e *Env) SSHConfig() ssh.Config {
	return ssh.Config{
		Signer: e.VPS.Client, User: e.VPS.User, DialTimeout: 5 * time.Second, StepTimeout: 30 * time.Second,
		HTTPPort: e.VPS.HTTPPort, Layout: e.VPS.SSHLayout(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// Provisioner returns a drivers/ssh Provisioner for the VPS (SSHConfig),
// closed at cleanup.
func (e *Env) Provisioner(tb testing.TB) *ssh.Provisioner {
	tb.Helper()
	p, err := ssh.NewProvisioner(e.SSHConfig())
	if err != nil {
		tb.Fatalf("tlsenv: ssh provisioner: %v", err)
	}
	tb.Cleanup(func() { _ = p.Close() })
	return p
}

// Site describes an html site of tenant TenantID on the VPS.
func (e *Env) Site(id, domain string, aliases ...string) drivers.SiteSpec {
	return drivers.SiteSpec{ID: id, TenantID: TenantID, Domain: domain, SiteType: drivers.SiteTypeHTML,
		Aliases: aliases, Server: e.Server}
}

// IssuerConfig is an acme.Config for Pebble with accounts: its directory,
// ACMEHTTPClient, a one-minute timeout and a logger that discards. Set
// Budget, DNS or Logger on it as the test needs.
func (e *Env) IssuerConfig(accounts acme.AccountStore) acme.Config {
	return acme.Config{
		DirectoryURL: e.Pebble.DirectoryURL, Email: "ops@tlsenv.test", Accounts: accounts,
		HTTPClient: e.ACMEHTTPClient(), Timeout: time.Minute,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// ACMEHTTPClient talks to Pebble's ACME directory, trusting its listener.
// Pebble, like Let's Encrypt's Boulder, answers a pending challenge without a
// Retry-After, and lego then waits 5 s before it looks again; this client adds
// "Retry-After: 1" to every 200 answer that has none, so an issuance takes
// about a second per domain instead of five. Errors (a 429 among them) reach
// lego as Pebble sent them. Production talks to the CA unchanged.
func (e *Env) ACMEHTTPClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second,
		Transport: retryAfter{next: &http.Transport{TLSClientConfig: e.Pebble.ClientTLS.Clone()}}}
}

// retryAfter adds "Retry-After: 1" to 200 responses without one.
type retryAfter struct{ next http.RoundTripper }

func (r retryAfter) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusOK && resp.Header.Get("Retry-After") == "" {
		resp.Header.Set("Retry-After", "1")
	}
	return resp, err
}

// HTTPSClient returns a client that sends every https:// request to nginx's
// TLS port on 127.0.0.1, with the URL's host as SNI and Host, verifying the
// chain against Roots only (never InsecureSkipVerify), negotiating HTTP/2
// over ALPN, reusing connections as a browser does, and following no
// redirect (a test checks where one points). nginx reloads asynchronously:
// after a change, wait for VPS.WaitNginxReload before a check, and use a new
// client, whose connections reach the new workers.
func (e *Env) HTTPSClient() *http.Client {
	return e.httpsClient(true)
}

func (e *Env) httpsClient(keepAlive bool) *http.Client {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(e.VPS.HTTPSPort))
	return &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: noRedirect,
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: e.Roots, MinVersion: tls.VersionTLS12},
			ForceAttemptHTTP2:   true,
			DisableKeepAlives:   !keepAlive,
			TLSHandshakeTimeout: 5 * time.Second,
			DialContext:         dialTo(addr),
		},
	}
}

// HTTPClient returns a client that sends every http:// request to nginx's
// HTTP port on 127.0.0.1, with the URL's host as Host, on a new connection
// each time (a kept connection to a worker of before a reload would answer
// with the old configuration) and following no redirect.
func (e *Env) HTTPClient() *http.Client {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(e.VPS.HTTPPort))
	return &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: noRedirect,
		Transport:     &http.Transport{DisableKeepAlives: true, DialContext: dialTo(addr)},
	}
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// dialTo dials addr whatever address is asked for.
func dialTo(addr string) func(ctx context.Context, network, _ string) (net.Conn, error) {
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
	}
}

// Fetched is one response, read whole.
type Fetched struct {
	// Status is the status code; Proto is "HTTP/2.0" or "HTTP/1.1".
	Status int
	Proto  string
	Header http.Header
	Body   string
	// Serial is the served leaf's serial (LeafSerial); "" over plain HTTP.
	Serial string
}

// String summarises f for failure messages.
func (f Fetched) String() string {
	body := f.Body
	if len(body) > 200 {
		body = body[:200] + "…"
	}
	return fmt.Sprintf("%d %s serial %q Location %q HSTS %q body %q", f.Status, f.Proto, f.Serial,
		f.Header.Get("Location"), f.Header.Get("Strict-Transport-Security"), body)
}

// Fetch GETs url with c and reads the whole response.
func Fetch(ctx context.Context, c *http.Client, url string) (Fetched, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Fetched{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return Fetched{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	f := Fetched{Status: resp.StatusCode, Proto: resp.Proto, Header: resp.Header, Body: string(b), Serial: LeafSerial(resp)}
	if err != nil {
		return f, fmt.Errorf("read the body of %s: %w", url, err)
	}
	return f, nil
}

// LeafSerial is the serial of the leaf resp was served with, in
// certs.Certificate.Serial's form (the bytes in lowercase hex, so a leading
// zero is kept), or "" when it came over plain HTTP.
func LeafSerial(resp *http.Response) string {
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		return ""
	}
	return hex.EncodeToString(resp.TLS.PeerCertificates[0].SerialNumber.Bytes())
}

// StartPoller starts a Poller on url (https://) through an HTTPSClient-like
// client: with opts.KeepAlive one connection reused as a browser does, else a
// new connection and handshake for every request. It is stopped at cleanup if
// the test has not stopped it.
func (e *Env) StartPoller(tb testing.TB, url string, opts PollOptions) *Poller {
	tb.Helper()
	return StartPoller(tb, e.httpsClient(opts.KeepAlive), url, opts)
}
