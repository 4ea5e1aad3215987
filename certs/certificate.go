package certs

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Certificate is a certificate chain and its private key, with the facts
// CHOM reads from the leaf.
type Certificate struct {
	// ChainPEM is the leaf first, then the intermediates, PEM-encoded.
	ChainPEM []byte
	// KeyPEM is the leaf's private key, PEM-encoded (PKCS #8, SEC 1 or PKCS #1).
	KeyPEM []byte
	// Domains are the leaf's DNS names (its subject alternative names).
	Domains []string
	// Serial is the leaf's serial number in lowercase hex.
	Serial string
	// Issuer is the common name of the leaf's issuer ("R11", "Pebble
	// Intermediate CA 1234").
	Issuer string
	// NotBefore and NotAfter bound the leaf's validity.
	NotBefore, NotAfter time.Time
}

// Parse reads a chain and key into a Certificate: the first certificate of
// chainPEM is the leaf. It checks only that both parse; CheckUpload checks
// the rest.
func Parse(chainPEM, keyPEM []byte) (*Certificate, error) {
	chain, err := ParseChain(chainPEM)
	if err != nil {
		return nil, err
	}
	if _, err := ParseKey(keyPEM); err != nil {
		return nil, err
	}
	return fromLeaf(chain[0], chainPEM, keyPEM), nil
}

// fromLeaf fills a Certificate from its parsed leaf.
func fromLeaf(leaf *x509.Certificate, chainPEM, keyPEM []byte) *Certificate {
	return &Certificate{
		ChainPEM:  bytes.Clone(chainPEM),
		KeyPEM:    bytes.Clone(keyPEM),
		Domains:   append([]string(nil), leaf.DNSNames...),
		Serial:    hex.EncodeToString(leaf.SerialNumber.Bytes()),
		Issuer:    leaf.Issuer.CommonName,
		NotBefore: leaf.NotBefore.UTC(),
		NotAfter:  leaf.NotAfter.UTC(),
	}
}

// Leaf parses the first certificate of the chain.
func (c *Certificate) Leaf() (*x509.Certificate, error) {
	chain, err := ParseChain(c.ChainPEM)
	if err != nil {
		return nil, err
	}
	return chain[0], nil
}

// ParseChain parses every CERTIFICATE block of chainPEM, in order. It fails
// when there is none, when a block does not parse, or when the PEM holds a
// block of another type (a private key pasted into the chain).
func ParseChain(chainPEM []byte) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	rest := chainPEM
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("chain: PEM block %d is a %q, want CERTIFICATE", len(chain)+1, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("chain: certificate %d: %w", len(chain)+1, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, errors.New("chain: no PEM CERTIFICATE block")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("chain: text after the last certificate is not PEM")
	}
	return chain, nil
}

// ParseKey parses the first PEM block of keyPEM as a private key (PKCS #8,
// SEC 1 EC or PKCS #1 RSA).
func ParseKey(keyPEM []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return nil, errors.New("key: no PEM block")
	}
	return ParseKeyBlock(b)
}

// ParseKeyBlock parses one PEM block as a private key (PKCS #8, SEC 1 EC or
// PKCS #1 RSA) that can sign: RSA, ECDSA or Ed25519, the keys a certificate
// carries. The drivers check a deployed key with it too.
func ParseKeyBlock(b *pem.Block) (crypto.Signer, error) {
	var (
		k   any
		err error
	)
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("key: PEM block is a %q, not a private key", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key: %T is not a signing key", k)
	}
	return s, nil
}

// Covers reports whether a certificate naming sans serves domain, per
// RFC 6125 §6.4.3: names compare without case; a SAN "*.example.com" covers
// exactly one label ("a.example.com", not "example.com" nor
// "a.b.example.com"); a wildcard domain ("*.example.com") is covered only
// by that same wildcard SAN.
func Covers(sans []string, domain string) bool {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	for _, san := range sans {
		san = strings.TrimSuffix(strings.ToLower(san), ".")
		if san == domain {
			return true
		}
		if rest, ok := strings.CutPrefix(san, "*."); ok && !strings.HasPrefix(domain, "*.") {
			label, parent, found := strings.Cut(domain, ".")
			if found && label != "" && parent == rest && strings.Contains(rest, ".") {
				return true
			}
		}
	}
	return false
}
