package stack

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chomhq/chom/certs/acme"
	"github.com/chomhq/chom/certs/seal"
	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/local"
	"github.com/chomhq/chom/jobs"
)

// startDev runs NewDev on dir with env and stops it at the end of the test
// (or when the returned stop is called). It returns the Dev, its banner and
// how long NewDev took.
func startDev(t *testing.T, dir string, env map[string]string) (*Dev, string, time.Duration, func()) {
	t.Helper()
	getenv := func(k string) string { return env[k] }
	var stdout bytes.Buffer
	start := time.Now()
	d, err := NewDev(t.Context(), getenv, DevOptions{DataDir: dir, Listen: "127.0.0.1:0", KafkaListen: "127.0.0.1:0"}, &stdout, io.Discard)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("NewDev: %v", err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithCancel(t.Context())
		cancel() // Run stops at once and closes every embedded part
		if err := d.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return d, stdout.String(), took, stop
}

// directory GETs an ACME directory trusting only the roots in rootsFile.
func directory(rootsFile, url string) (map[string]any, error) {
	pemBytes, err := os.ReadFile(rootsFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		return nil, os.ErrInvalid
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := hc.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var dir map[string]any
	return dir, json.NewDecoder(resp.Body).Decode(&dir)
}

// TestDevCertificates: with nothing set, chom dev issues from its
// development CA (the worker's ACME settings point at it, its directory's
// roots in a file of the data directory, the banner saying no browser trusts
// it) and seals with a key it made once (0600) and finds again on the next
// start; with the variables set, it starts no CA and makes no key.
func TestDevCertificates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d, banner, tookCA, stop := startDev(t, dir, nil)

	ac := d.Config.ACME
	caRoots := filepath.Join(dir, DevCADir, "acme-roots.pem")
	root := filepath.Join(dir, DevCADir, "root.pem")
	if !strings.HasPrefix(ac.DirectoryURL, "https://127.0.0.1:") || ac.CACerts != caRoots {
		t.Fatalf("ACME config: directory %q, CA certs %q; want the development CA's and %s", ac.DirectoryURL, ac.CACerts, caRoots)
	}
	dirDoc, err := directory(ac.CACerts, ac.DirectoryURL)
	if err != nil || dirDoc["newOrder"] == nil {
		t.Fatalf("the directory through CHOM_ACME_CA_CERTS: %v %v", dirDoc, err)
	}
	rootPEM, err := os.ReadFile(root)
	if err != nil || !x509.NewCertPool().AppendCertsFromPEM(rootPEM) {
		t.Fatalf("root.pem: %v", err)
	}
	if !strings.Contains(banner, "development CA that no browser trusts; its root: "+root+"\n") {
		t.Errorf("banner does not name the development CA and its root:\n%s", banner)
	}

	keyFile := filepath.Join(dir, DevEncryptionKeysFile)
	fi, err := os.Stat(keyFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v, want mode 0600", fi, err)
	}
	if _, err := seal.ParseKeys(ac.EncryptionKeys); err != nil {
		t.Fatalf("generated key ring: %v", err)
	}
	ring, _ := seal.ParseKeys(ac.EncryptionKeys)
	sealed, err := ring.Seal([]byte("account key"), "chom/test")
	if err != nil {
		t.Fatal(err)
	}

	// The worker's view: an issuer on Config.ACME alone issues for a site
	// of the local driver under CHOM_LOCAL_ROOT.
	issueWith(t, d.Config)

	stop()
	if _, err := directory(caRoots, ac.DirectoryURL); err == nil {
		t.Error("the development CA still answers after chom dev stopped")
	}

	// A restart: the same key (what was sealed opens), a new CA.
	d2, _, _, _ := startDev(t, dir, nil)
	if d2.Config.ACME.EncryptionKeys != ac.EncryptionKeys {
		t.Error("the key ring changed across restarts")
	}
	ring2, err := seal.ParseKeys(d2.Config.ACME.EncryptionKeys)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ring2.Open(sealed, "chom/test"); err != nil || string(got) != "account key" {
		t.Errorf("a value sealed before the restart: %q %v", got, err)
	}
	if d2.Config.ACME.DirectoryURL == ac.DirectoryURL {
		t.Logf("the new CA got the same port (possible, rare)")
	}
	if dirDoc, err := directory(d2.Config.ACME.CACerts, d2.Config.ACME.DirectoryURL); err != nil || dirDoc["newOrder"] == nil {
		t.Errorf("the restarted CA's directory: %v %v", dirDoc, err)
	}

	// Set by the environment: used as they are; no CA, no key file.
	other := t.TempDir()
	env := map[string]string{"CHOM_ACME_DIRECTORY_URL": "https://acme-staging-v02.api.letsencrypt.org/directory",
		"CHOM_CERT_ENCRYPTION_KEYS": ac.EncryptionKeys}
	d3, banner3, tookPlain, _ := startDev(t, other, env)
	if a := d3.Config.ACME; a.DirectoryURL != env["CHOM_ACME_DIRECTORY_URL"] || a.CACerts != "" || a.EncryptionKeys != env["CHOM_CERT_ENCRYPTION_KEYS"] {
		t.Errorf("ACME config with the variables set: %+v", a)
	}
	for _, f := range []string{DevEncryptionKeysFile, DevCADir} {
		if _, err := os.Stat(filepath.Join(other, f)); err == nil {
			t.Errorf("%s made although the variable was set", f)
		}
	}
	if strings.Contains(banner3, "development CA") || !strings.Contains(banner3, "certificates from "+env["CHOM_ACME_DIRECTORY_URL"]) {
		t.Errorf("banner with a CA set:\n%s", banner3)
	}
	t.Logf("NewDev on a fresh data directory: %s with the development CA and a new key, %s with both set in the environment (difference %s)",
		tookCA, tookPlain, tookCA-tookPlain)
}

// TestDevEncryptionKeysKept: a key file that does not parse stops chom dev
// and is left as it is (replacing it would lose what it sealed).
func TestDevEncryptionKeysKept(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), DevEncryptionKeysFile)
	if err := os.WriteFile(path, []byte("dev1:tooshort\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := devEncryptionKeys(path, time.Now())
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("devEncryptionKeys on a broken file: %v, want an error naming %s", err, path)
	}
	if b, _ := os.ReadFile(path); string(b) != "dev1:tooshort\n" {
		t.Errorf("the broken file was changed to %q", b)
	}
	if strings.Contains(err.Error(), "tooshort") {
		t.Errorf("the error shows the key: %v", err)
	}
}

// memAccounts is an in-memory acme.AccountStore.
type memAccounts struct {
	mu  sync.Mutex
	acc *acme.Account
}

func (m *memAccounts) LoadAccount(context.Context, string, string) (*acme.Account, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.acc == nil {
		return nil, acme.ErrNoAccount
	}
	return m.acc, nil
}

func (m *memAccounts) CreateAccount(_ context.Context, a acme.Account) (*acme.Account, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.acc == nil {
		m.acc = &a
	}
	return m.acc, nil
}

// issueWith issues a certificate as the worker would with c.ACME (the
// directory, trusting only the roots of CACerts) for a site the local driver
// provisioned under c.LocalRoot, answering HTTP-01 through the driver.
func issueWith(t *testing.T, c Config) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	prov, err := local.New(local.Config{Root: c.LocalRoot, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	site := drivers.SiteSpec{ID: "site_devca", TenantID: "ten_devca", Domain: "devca.example.com", SiteType: drivers.SiteTypeHTML,
		Server: drivers.Server{ID: "vps_devca", Hostname: "vps1.dev.chom.internal", IPAddress: "127.0.0.1", SSHPort: 22}}
	if _, err := prov.Provision(t.Context(), site, nil); err != nil {
		t.Fatal(err)
	}
	pemBytes, err := os.ReadFile(c.ACME.CACerts)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemBytes)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	issuer, err := acme.New(acme.Config{DirectoryURL: c.ACME.DirectoryURL, Accounts: &memAccounts{}, HTTPClient: hc, Logger: log, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cert, err := issuer.Issue(t.Context(), acme.Request{SiteID: site.ID, Domains: site.ServerNames(), Challenge: acme.HTTP01,
		HTTP01: jobs.SitePresenter(prov, site)})
	if err != nil {
		t.Fatalf("issue from chom dev's CA: %v", err)
	}
	t.Logf("chom dev's CA issued %v in %s", cert.Domains, time.Since(start))
}
