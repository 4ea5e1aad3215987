package drivers_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/tlstest"
)

// rsaLeaf is a leaf for names with an RSA key in PKCS#1 form (what older tools
// write), then its own (ECDSA) issuer.
func rsaLeaf(t *testing.T, names []string) drivers.TLSCertificate {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	issuerKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	issuerTmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "rsa issuer"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	issuerDER, err := x509.CreateCertificate(rand.Reader, issuerTmpl, issuerTmpl, issuerKey.Public(), issuerKey)
	if err != nil {
		t.Fatal(err)
	}
	issuer, _ := x509.ParseCertificate(issuerDER)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(8), DNSNames: names,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}, issuer, key.Public(), issuerKey)
	if err != nil {
		t.Fatal(err)
	}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), tlstest.PEM(issuer)...)
	return drivers.TLSCertificate{ChainPEM: chain, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})}
}

func TestParseTLSCertificate(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	site := goodSpec()
	site.Aliases = []string{"www.example.com"}
	names := site.ServerNames()
	now := time.Now()

	good := ca.Issue(t, names, tlstest.LeafOptions{})
	v, err := drivers.ParseTLSCertificate(site, good.Cert, drivers.TLSOptions{}, now)
	if err != nil {
		t.Fatal(err)
	}
	if v.OCSP || v.HSTSMaxAgeSeconds != 0 || v.Leaf.SerialNumber.Cmp(good.X509.SerialNumber) != 0 {
		t.Errorf("plain leaf: OCSP %v, HSTS %d, serial %v", v.OCSP, v.HSTSMaxAgeSeconds, v.Leaf.SerialNumber)
	}
	if !bytes.Equal(v.ChainPEM, good.Cert.ChainPEM) || !strings.HasPrefix(string(v.KeyPEM), "-----BEGIN PRIVATE KEY-----\n") {
		t.Error("chain or key not re-encoded as given")
	}
	// Junk before the first block is dropped, not written.
	v, err = drivers.ParseTLSCertificate(site, drivers.TLSCertificate{ChainPEM: append([]byte("junk\n"), good.Cert.ChainPEM...), KeyPEM: good.Cert.KeyPEM}, drivers.TLSOptions{HSTS: true}, now)
	if err != nil || bytes.Contains(v.ChainPEM, []byte("junk")) || v.HSTSMaxAgeSeconds != 31536000 {
		t.Errorf("leading junk / default HSTS: %v, HSTS %d", err, v.HSTSMaxAgeSeconds)
	}
	ocsp := ca.Issue(t, names, tlstest.LeafOptions{OCSP: "http://ocsp.example.net"})
	if v, err := drivers.ParseTLSCertificate(site, ocsp.Cert, drivers.TLSOptions{}, now); err != nil || !v.OCSP {
		t.Errorf("leaf with OCSP and its issuer: OCSP %v, %v; want stapling", v.OCSP, err)
	}
	leafOnly := drivers.TLSCertificate{ChainPEM: tlstest.PEM(ocsp.X509), KeyPEM: ocsp.Cert.KeyPEM}
	if v, err := drivers.ParseTLSCertificate(site, leafOnly, drivers.TLSOptions{}, now); err != nil || v.OCSP {
		t.Errorf("leaf with OCSP but no issuer in the chain: OCSP %v, %v; want no stapling (nginx cannot)", v.OCSP, err)
	}
	rsaCert := rsaLeaf(t, names)
	if v, err := drivers.ParseTLSCertificate(site, rsaCert, drivers.TLSOptions{HSTS: true, HSTSMaxAge: time.Hour}, now); err != nil || v.HSTSMaxAgeSeconds != 3600 {
		t.Errorf("RSA leaf with a PKCS#1 key: %v, HSTS %d", err, v.HSTSMaxAgeSeconds)
	}

	other := ca.Issue(t, names, tlstest.LeafOptions{})
	sec1, _ := pem.Decode(other.Cert.KeyPEM)
	k, _ := x509.ParsePKCS8PrivateKey(sec1.Bytes)
	ecDER, _ := x509.MarshalECPrivateKey(k.(*ecdsa.PrivateKey))
	bad := []struct {
		name string
		cert drivers.TLSCertificate
		opts drivers.TLSOptions
		at   time.Time
		want string
	}{
		{"mismatched key", drivers.TLSCertificate{ChainPEM: good.Cert.ChainPEM, KeyPEM: other.Cert.KeyPEM}, drivers.TLSOptions{}, now, "does not match"},
		{"mismatched SEC 1 key", drivers.TLSCertificate{ChainPEM: good.Cert.ChainPEM, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})}, drivers.TLSOptions{}, now, "does not match"},
		{"missing alias", ca.Issue(t, []string{site.Domain}, tlstest.LeafOptions{}).Cert, drivers.TLSOptions{}, now, "www.example.com"},
		{"expired", good.Cert, drivers.TLSOptions{}, now.Add(100 * 24 * time.Hour), "not now"},
		{"not yet valid", good.Cert, drivers.TLSOptions{}, now.Add(-2 * time.Hour), "not now"},
		{"out of order", drivers.TLSCertificate{ChainPEM: append(tlstest.PEM(ca.Intermediate), tlstest.PEM(good.X509)...), KeyPEM: good.Cert.KeyPEM}, drivers.TLSOptions{}, now, "CA certificate"},
		{"wrong issuer", drivers.TLSCertificate{ChainPEM: append(tlstest.PEM(good.X509), tlstest.PEM(ca.Root)...), KeyPEM: good.Cert.KeyPEM}, drivers.TLSOptions{}, now, "not signed by"},
		{"trailing junk", drivers.TLSCertificate{ChainPEM: append(bytes.Clone(good.Cert.ChainPEM), "include /etc/shadow;"...), KeyPEM: good.Cert.KeyPEM}, drivers.TLSOptions{}, now, "not PEM"},
		{"key in chain", drivers.TLSCertificate{ChainPEM: append(bytes.Clone(good.Cert.ChainPEM), good.Cert.KeyPEM...), KeyPEM: good.Cert.KeyPEM}, drivers.TLSOptions{}, now, "PRIVATE KEY"},
		{"two keys", drivers.TLSCertificate{ChainPEM: good.Cert.ChainPEM, KeyPEM: append(bytes.Clone(good.Cert.KeyPEM), other.Cert.KeyPEM...)}, drivers.TLSOptions{}, now, "exactly one"},
		{"certificate as key", drivers.TLSCertificate{ChainPEM: good.Cert.ChainPEM, KeyPEM: tlstest.PEM(good.X509)}, drivers.TLSOptions{}, now, "not a private key"},
		{"empty", drivers.TLSCertificate{}, drivers.TLSOptions{}, now, "no certificate"},
		{"huge", drivers.TLSCertificate{ChainPEM: bytes.Repeat([]byte("A"), 65<<10), KeyPEM: good.Cert.KeyPEM}, drivers.TLSOptions{}, now, "over the limit"},
		{"hsts too long", good.Cert, drivers.TLSOptions{HSTS: true, HSTSMaxAge: 3 * 365 * 24 * time.Hour}, now, "hsts"},
		{"hsts negative", good.Cert, drivers.TLSOptions{HSTS: true, HSTSMaxAge: -time.Second}, now, "hsts"},
	}
	for _, tt := range bad {
		_, err := drivers.ParseTLSCertificate(site, tt.cert, tt.opts, tt.at)
		if !errors.Is(err, drivers.ErrInvalidSpec) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want ErrInvalidSpec saying %q", tt.name, err, tt.want)
		}
	}
}

func TestValidateChallenge(t *testing.T) {
	t.Parallel()
	const (
		tok = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
		thp = "9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
	)
	if err := drivers.ValidateChallenge(tok, tok+"."+thp); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ token, keyAuth string }{
		{"../" + tok, "../" + tok + "." + thp}, {"..", ".." + "." + thp}, {tok + "/x", tok + "/x." + thp}, {"", "." + thp},
		{"short", "short." + thp}, {tok + "=", tok + "=." + thp}, {tok + "\n", tok + "\n." + thp}, {strings.Repeat("a", 129), strings.Repeat("a", 129) + "." + thp},
		{tok, tok + "." + thp + "\n"}, {tok, tok + "." + thp + `"`}, {tok, tok + ". " + thp}, {tok, tok}, {tok, tok + "."},
		{tok, "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX1." + thp}, {tok, tok + "." + thp + "." + thp},
	} {
		if err := drivers.ValidateChallenge(c.token, c.keyAuth); !errors.Is(err, drivers.ErrInvalidSpec) {
			t.Errorf("ValidateChallenge(%q, %q) = %v, want ErrInvalidSpec", c.token, c.keyAuth, err)
		}
	}
	if err := drivers.ValidateChallengeToken("../etc/passwd"); !errors.Is(err, drivers.ErrInvalidSpec) {
		t.Errorf("ValidateChallengeToken(../etc/passwd) = %v", err)
	}
}
