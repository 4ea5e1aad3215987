package local

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/tlstest"
)

const (
	testToken   = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
	testKeyAuth = testToken + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
)

// leafSerial parses the first certificate of a PEM file.
func leafSerial(t *testing.T, path string) string {
	t.Helper()
	block, _ := pem.Decode([]byte(read(t, path)))
	if block == nil {
		t.Fatalf("%s holds no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.Text(16)
}

// The local driver keeps the TLSDeployer contract on its own layout: challenges
// under acme/<domain>/, the certificate under tls/<domain>/ (0700, files 0600),
// the TLS block kept by Provision, a rejected reload check putting everything
// back, bad input refused, and everything removed with the site.
func TestTLSDeployer(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t)
	ca := tlstest.NewCA(t)
	site := spec(drivers.SiteTypePHP, "tls.example.com")
	site.Aliases = []string{"www.tls.example.com"}
	server := filepath.Join(b.root, site.Server.ID)
	conf := filepath.Join(server, "nginx", "sites-enabled", site.Domain+".conf")
	tlsDir := filepath.Join(server, "tls", site.Domain)
	challenges := filepath.Join(server, "acme", site.Domain)

	// Nothing is deployed to a site that is not there.
	cert1 := ca.Issue(t, site.ServerNames(), tlstest.LeafOptions{})
	if err := b.prov.DeployCertificate(ctx, site, cert1.Cert, drivers.TLSOptions{}); err == nil || exists(tlsDir) {
		t.Fatalf("deploy before provision: %v (TLS dir exists: %v); want an error and nothing written", err, exists(tlsDir))
	}
	if _, err := b.prov.Provision(ctx, site, nil); err != nil {
		t.Fatal(err)
	}
	plain := read(t, conf)
	if !hasLine(plain, "server_name tls.example.com www.tls.example.com;") || !hasLine(plain, "alias "+challenges+"/;") || strings.Contains(plain, "ssl") {
		t.Errorf("plain block:\n%s", plain)
	}

	// Challenges: idempotent, bad tokens refused.
	for range 2 {
		if err := b.prov.PutChallenge(ctx, site, testToken, testKeyAuth); err != nil {
			t.Fatal(err)
		}
	}
	if got := read(t, filepath.Join(challenges, testToken)); got != testKeyAuth {
		t.Errorf("token file holds %q", got)
	}
	for _, tok := range []string{"../../nginx/sites-enabled/x", "..", testToken + "/x", ""} {
		if err := b.prov.PutChallenge(ctx, site, tok, tok+".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"); !errors.Is(err, drivers.ErrInvalidSpec) {
			t.Errorf("PutChallenge %q: %v, want ErrInvalidSpec", tok, err)
		}
	}
	if err := b.prov.PutChallenge(ctx, site, testToken, testKeyAuth+"\n}"); !errors.Is(err, drivers.ErrInvalidSpec) {
		t.Errorf("PutChallenge with a newline in the key authorization: %v, want ErrInvalidSpec", err)
	}
	if entries, _ := os.ReadDir(challenges); len(entries) != 1 {
		t.Errorf("challenge directory holds %d entries, want the one token", len(entries))
	}
	for range 2 {
		if err := b.prov.RemoveChallenge(ctx, site, testToken); err != nil {
			t.Fatal(err)
		}
	}
	if exists(filepath.Join(challenges, testToken)) {
		t.Error("token still there after RemoveChallenge")
	}

	// Deploy: files, modes, the TLS block.
	if err := b.prov.DeployCertificate(ctx, site, cert1.Cert, drivers.TLSOptions{}); err != nil {
		t.Fatal(err)
	}
	for path, mode := range map[string]os.FileMode{tlsDir: 0o700 | os.ModeDir, filepath.Join(tlsDir, "privkey.pem"): 0o600, filepath.Join(tlsDir, "fullchain.pem"): 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode() != mode {
			t.Errorf("%s: %v, %v; want mode %v", path, fi, err, mode)
		}
	}
	block := read(t, conf)
	for _, l := range []string{"listen 443 ssl http2;", "ssl_certificate " + filepath.Join(tlsDir, "fullchain.pem") + ";",
		"return 301 https://$host$request_uri;", "ssl_protocols TLSv1.2 TLSv1.3;"} {
		if !hasLine(block, l) {
			t.Errorf("TLS block lacks %q:\n%s", l, block)
		}
	}
	if strings.Contains(block, "Strict-Transport-Security") {
		t.Error("HSTS without being asked")
	}
	// Provision keeps it.
	if _, err := b.prov.Provision(ctx, site, nil); err != nil {
		t.Fatal(err)
	}
	if got := read(t, conf); got != block {
		t.Errorf("Provision changed the TLS block to:\n%s", got)
	}

	// The reload check loads the pair as nginx would: a key changed on disk
	// behind the driver's back fails it.
	keyPath := filepath.Join(tlsDir, "privkey.pem")
	good := read(t, keyPath)
	if err := os.WriteFile(keyPath, ca.Issue(t, site.ServerNames(), tlstest.LeafOptions{}).Cert.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := b.prov.Provision(ctx, site, nil); err == nil || !strings.Contains(err.Error(), "load certificate") {
		t.Errorf("Provision with a key that does not match the chain on disk: %v, want the reload check to fail", err)
	}
	if err := os.WriteFile(keyPath, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}

	// Replace with HSTS.
	cert2 := ca.Issue(t, site.ServerNames(), tlstest.LeafOptions{})
	if err := b.prov.DeployCertificate(ctx, site, cert2.Cert, drivers.TLSOptions{HSTS: true}); err != nil {
		t.Fatal(err)
	}
	if got := leafSerial(t, filepath.Join(tlsDir, "fullchain.pem")); got != cert2.X509.SerialNumber.Text(16) {
		t.Errorf("deployed serial %s, want %s", got, cert2.X509.SerialNumber.Text(16))
	}
	if !hasLine(read(t, conf), `add_header Strict-Transport-Security "max-age=31536000" always;`) {
		t.Errorf("no HSTS line:\n%s", read(t, conf))
	}

	// A reload check that fails (another site's broken block, which stops
	// nginx reloading for everyone) leaves everything as it was.
	before := tree(t, server)
	broken := filepath.Join(server, "nginx", "sites-enabled", "broken.example.com.conf")
	if err := os.WriteFile(broken, []byte("server {\n    server_name broken.example.com;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cert3 := ca.Issue(t, site.ServerNames(), tlstest.LeafOptions{})
	err := b.prov.DeployCertificate(ctx, site, cert3.Cert, drivers.TLSOptions{})
	if !errors.Is(err, drivers.ErrConfigRejected) {
		t.Fatalf("deploy with a failing reload check: %v, want ErrConfigRejected", err)
	}
	if err := os.Remove(broken); err != nil {
		t.Fatal(err)
	}
	if diff := diffTrees(before, tree(t, server)); diff != "" {
		t.Errorf("a rejected deploy changed files:\n%s", diff)
	}
	// Bad input changes nothing either.
	other := ca.Issue(t, site.ServerNames(), tlstest.LeafOptions{})
	for name, c := range map[string]drivers.TLSCertificate{
		"mismatched key": {ChainPEM: cert3.Cert.ChainPEM, KeyPEM: other.Cert.KeyPEM},
		"no alias":       ca.Issue(t, []string{site.Domain}, tlstest.LeafOptions{}).Cert,
		"empty":          {},
	} {
		if err := b.prov.DeployCertificate(ctx, site, c, drivers.TLSOptions{}); !errors.Is(err, drivers.ErrInvalidSpec) {
			t.Errorf("deploy of %s: %v, want ErrInvalidSpec", name, err)
		}
	}
	if diff := diffTrees(before, tree(t, server)); diff != "" {
		t.Errorf("refused input changed files:\n%s", diff)
	}

	// Back to HTTP, twice; then deprovision takes everything.
	for range 2 {
		if err := b.prov.RemoveCertificate(ctx, site); err != nil {
			t.Fatal(err)
		}
	}
	if got := read(t, conf); got != plain || exists(tlsDir) {
		t.Errorf("after RemoveCertificate (TLS dir exists: %v) the block is:\n%s", exists(tlsDir), got)
	}
	if err := b.prov.DeployCertificate(ctx, site, cert2.Cert, drivers.TLSOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.prov.PutChallenge(ctx, site, testToken, testKeyAuth); err != nil {
		t.Fatal(err)
	}
	if err := b.prov.Deprovision(ctx, site); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{tlsDir, challenges} {
		if exists(p) {
			t.Errorf("%s still exists after Deprovision", p)
		}
	}
}

// diffTrees names the paths whose content differs (the reload marker's
// modification time is not content).
func diffTrees(a, b map[string]string) string {
	var out []string
	for k, v := range a {
		if b[k] != v {
			out = append(out, "changed or gone: "+k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, "new: "+k)
		}
	}
	return strings.Join(out, "\n")
}
