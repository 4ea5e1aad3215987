package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PebbleOptions configures StartPebble; the zero value is a Pebble that
// blocks nothing and issues 90-day certificates.
type PebbleOptions struct {
	// DomainBlocklist are domains (and their subdomains) Pebble refuses to
	// issue for: an order naming one fails with rejectedIdentifier.
	DomainBlocklist []string
	// CertificateValidity is the lifetime of the certificates Pebble issues
	// (its default profile's validityPeriod); 0 is 90 days.
	CertificateValidity time.Duration
	// HTTPPort is the port Pebble's VA fetches HTTP-01 answers from; 0 picks
	// a free one. A test whose answers come from a real web server (vpsenv's
	// nginx) passes the port that server listens on, since the VA cannot be
	// told to use port 80 of another address.
	HTTPPort int
}

// Pebble is Let's Encrypt's test CA, a private process of one test, on
// loopback. Its ACME directory is served over HTTPS with Pebble's own test
// certificate (ClientTLS trusts it); the certificates it issues chain to a
// root it generates at each start (Roots reads it from the management API).
//
// Pebble resolves every domain it validates through the ChallTestSrv it was
// started with, and its VA fetches HTTP-01 answers from
// http://<domain>:HTTPPort (challtestsrv answers 127.0.0.1 for any host, so
// a test serves HTTP-01 on 127.0.0.1:HTTPPort). Validation does not sleep
// (PEBBLE_VA_NOSLEEP), nonces are never rejected at random and authorizations
// are never reused, so every order validates every domain again.
type Pebble struct {
	// DirectoryURL is the ACME directory, https://127.0.0.1:port/dir.
	DirectoryURL string
	// ManagementURL is https://127.0.0.1:port of the management API.
	ManagementURL string
	// HTTPPort is the port Pebble's VA fetches HTTP-01 answers from.
	HTTPPort int
	// TLSPort is the port Pebble's VA uses for TLS-ALPN-01.
	TLSPort int
	// ClientTLS trusts the certificate of Pebble's ACME and management
	// listeners (Pebble's test minica root).
	ClientTLS *tls.Config
	// ClientCAFile is the PEM file of that minica root (in the module
	// cache, read-only): what a worker under test is given as
	// CHOM_ACME_CA_CERTS to trust Pebble's directory.
	ClientCAFile string
	// Log is Pebble's output.
	Log string

	bin, config, dnsAddr string
	proc                 *serverProcess
	logFile              *os.File
}

// pebbleModule is the module path of the Pebble Go tool.
const pebbleModule = "github.com/letsencrypt/pebble/v2"

// StartPebble starts Pebble (the module's Go tool) on free loopback ports,
// resolving through dns, and stops it at cleanup. Without the binary or its
// test certificates (read from the module's source in the module cache) the
// test fails: there is no skip.
func StartPebble(tb testing.TB, dns *ChallTestSrv, opts PebbleOptions) *Pebble {
	tb.Helper()
	if dns == nil {
		tb.Fatal("StartPebble: a ChallTestSrv is required (Pebble resolves through it)")
	}
	bin := GoTool(tb, "pebble")
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", pebbleModule).Output()
	if err != nil {
		tb.Fatalf("go list -m %s: %v", pebbleModule, err)
	}
	modDir := strings.TrimSpace(string(out))
	caFile := filepath.Join(modDir, "test/certs/pebble.minica.pem")
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		tb.Fatalf("pebble: read its test CA: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		tb.Fatal("pebble: its test CA does not parse")
	}

	dir := tb.TempDir()
	httpPort := opts.HTTPPort
	if httpPort == 0 {
		httpPort = freePort(tb)
	}
	p := &Pebble{
		HTTPPort:     httpPort,
		TLSPort:      freePort(tb),
		ClientTLS:    &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ClientCAFile: caFile,
		Log:          filepath.Join(dir, "pebble.log"),
		bin:          bin,
		config:       filepath.Join(dir, "pebble-config.json"),
		dnsAddr:      dns.DNSAddr,
	}
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(tb)))
	mgmt := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(tb)))
	p.DirectoryURL = "https://" + listen + "/dir"
	p.ManagementURL = "https://" + mgmt

	validity := opts.CertificateValidity
	if validity == 0 {
		validity = 90 * 24 * time.Hour
	}
	blocklist := opts.DomainBlocklist
	if blocklist == nil {
		blocklist = []string{}
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  listen,
		"managementListenAddress":        mgmt,
		"certificate":                    filepath.Join(modDir, "test/certs/localhost/cert.pem"),
		"privateKey":                     filepath.Join(modDir, "test/certs/localhost/key.pem"),
		"httpPort":                       p.HTTPPort,
		"tlsPort":                        p.TLSPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"domainBlocklist":                blocklist,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":                   "ecdsa",
		"profiles": map[string]any{"default": map[string]any{
			"description": "CHOM tests", "validityPeriod": int64(validity / time.Second),
		}},
	}}
	b, err := json.Marshal(cfg)
	if err != nil {
		tb.Fatalf("pebble config: %v", err)
	}
	if err := os.WriteFile(p.config, b, 0o600); err != nil {
		tb.Fatalf("pebble config: %v", err)
	}
	p.logFile, err = os.Create(p.Log)
	if err != nil {
		tb.Fatalf("pebble: %v", err)
	}
	tb.Cleanup(func() {
		p.stop()
		_ = p.logFile.Close()
	})
	if err := p.start(); err != nil {
		tb.Fatalf("pebble did not come up: %v\n%s", err, Tail(p.Log, 20))
	}
	return p
}

// start runs the process and waits until the directory answers.
func (p *Pebble) start() error {
	cmd := exec.Command(p.bin, "-config", p.config, "-dnsserver", p.dnsAddr)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	cmd.Stdout, cmd.Stderr = p.logFile, p.logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	proc, err := startProcess(cmd)
	if err != nil {
		return fmt.Errorf("start %s: %w", p.bin, err)
	}
	p.proc = proc
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	for {
		_, err := p.get(ctx, p.DirectoryURL)
		if err == nil {
			_, err = p.get(ctx, p.ManagementURL+"/roots/0")
		}
		if err == nil {
			return nil
		}
		if !proc.running() || ctx.Err() != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the process (SIGTERM, then SIGKILL).
func (p *Pebble) stop() {
	if p.proc == nil {
		return
	}
	if !p.proc.signal(syscall.SIGTERM, true, 5*time.Second) {
		p.proc.signal(syscall.SIGKILL, true, 5*time.Second)
	}
	p.proc = nil
}

// Stop stops Pebble: its directory refuses connections until Start. Pebble
// keeps nothing across a restart: accounts, orders and its root are new.
func (p *Pebble) Stop(tb testing.TB) {
	tb.Helper()
	p.stop()
}

// Start starts a stopped Pebble again on the same ports.
func (p *Pebble) Start(tb testing.TB) {
	tb.Helper()
	if err := p.start(); err != nil {
		tb.Fatalf("pebble did not come back: %v\n%s", err, Tail(p.Log, 20))
	}
}

// HTTPClient returns an HTTP client that trusts Pebble's listeners.
func (p *Pebble) HTTPClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: p.ClientTLS.Clone()}}
}

// Roots returns the pool of the root that the certificates Pebble issues
// chain to, read from the management API (/roots/0). Pebble makes a new root
// at each start.
func (p *Pebble) Roots(tb testing.TB) *x509.CertPool {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := p.get(ctx, p.ManagementURL+"/roots/0")
	if err != nil {
		tb.Fatalf("pebble roots: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		tb.Fatalf("pebble roots: no certificate in %q", b)
	}
	return pool
}

// get reads url with the client that trusts Pebble.
func (p *Pebble) get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	c := p.HTTPClient()
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b, nil
}
