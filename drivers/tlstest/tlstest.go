// Package tlstest is a throwaway certificate authority for tests of
// drivers.TLSDeployer implementations: a root, an intermediate, and leaves
// issued by the intermediate for the names a test asks for. It is imported only
// from _test.go files.
package tlstest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/chomhq/chom/drivers"
)

// CA is a root and an intermediate. Roots is a pool holding only the root, for
// a client that must trust nothing else.
type CA struct {
	Root, Intermediate *x509.Certificate
	Roots              *x509.CertPool

	intKey crypto.Signer
	serial int64
}

// Leaf is one issued certificate: Cert for drivers.TLSDeployer.DeployCertificate
// (leaf, then the intermediate; the key as PKCS#8) and the parsed leaf.
type Leaf struct {
	Cert drivers.TLSCertificate
	X509 *x509.Certificate
}

// LeafOptions change what Issue puts in a leaf.
type LeafOptions struct {
	// OCSP is the responder URL to name (none when empty).
	OCSP string
	// NotBefore and NotAfter default to an hour ago and 90 days on.
	NotBefore, NotAfter time.Time
}

// NewCA creates a root and an intermediate (ECDSA P-256), failing tb on error.
func NewCA(tb testing.TB) *CA {
	tb.Helper()
	rootKey := newKey(tb)
	now := time.Now()
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "CHOM test root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	root := create(tb, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	intKey := newKey(tb)
	intTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "CHOM test intermediate"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	inter := create(tb, intTmpl, root, intKey.Public(), rootKey)
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return &CA{Root: root, Intermediate: inter, Roots: pool, intKey: intKey, serial: 1000}
}

// Issue returns a leaf for names (the first is the subject's common name), with
// a fresh key and a serial number no earlier leaf of ca had.
func (ca *CA) Issue(tb testing.TB, names []string, o LeafOptions) Leaf {
	tb.Helper()
	ca.serial++
	key := newKey(tb)
	now := time.Now()
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.Add(90 * 24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: o.NotBefore, NotAfter: o.NotAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if o.OCSP != "" {
		tmpl.OCSPServer = []string{o.OCSP}
	}
	leaf := create(tb, tmpl, ca.Intermediate, key.Public(), ca.intKey)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	chain := append(PEM(leaf), PEM(ca.Intermediate)...)
	return Leaf{
		Cert: drivers.TLSCertificate{ChainPEM: chain, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})},
		X509: leaf,
	}
}

// PEM encodes c as one CERTIFICATE block.
func PEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func create(tb testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	tb.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}
