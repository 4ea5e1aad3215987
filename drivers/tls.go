package drivers

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/chomhq/chom/certs"
)

// TLSDeployer is implemented by provisioners that can serve a site over HTTPS.
// Every method is idempotent and validates its input before touching the server:
// a bad site spec, token, key authorization or certificate is an error wrapping
// ErrInvalidSpec (permanent) and changes nothing.
type TLSDeployer interface {
	// PutChallenge makes http://<domain>/.well-known/acme-challenge/<token> answer keyAuth
	// for every domain of the site (idempotent); RemoveChallenge takes it away.
	PutChallenge(ctx context.Context, site SiteSpec, token, keyAuth string) error
	RemoveChallenge(ctx context.Context, site SiteSpec, token string) error
	// DeployCertificate installs chain+key for the site and switches its nginx block to
	// TLS (redirect HTTP to HTTPS, HSTS when opts.HSTS), checked with nginx -t before
	// reload; on rejection the previous files are back and the error wraps ErrConfigRejected.
	DeployCertificate(ctx context.Context, site SiteSpec, cert TLSCertificate, opts TLSOptions) error
	// RemoveCertificate puts the site back to plain HTTP (idempotent).
	RemoveCertificate(ctx context.Context, site SiteSpec) error
}

// TLSCertificate is a certificate to deploy: ChainPEM holds the leaf first, then
// its intermediates (CERTIFICATE blocks only); KeyPEM holds the leaf's private key
// (PKCS#8, PKCS#1 or SEC 1).
type TLSCertificate struct{ ChainPEM, KeyPEM []byte }

// TLSOptions are a site's HTTPS choices.
type TLSOptions struct {
	// HSTS adds Strict-Transport-Security to every HTTPS response. It is opt-in:
	// once a browser has seen it, the site cannot go back to plain HTTP for
	// HSTSMaxAge.
	HSTS bool
	// HSTSMaxAge is the header's max-age; zero means DefaultHSTSMaxAge. It is
	// rendered in whole seconds.
	HSTSMaxAge time.Duration
}

// DefaultHSTSMaxAge is the max-age of TLSOptions.HSTS when none is given: one
// year, what browsers' preload lists ask for.
const DefaultHSTSMaxAge = 365 * 24 * time.Hour

// maxHSTSMaxAge bounds TLSOptions.HSTSMaxAge: two years, the longest value any
// guidance recommends.
const maxHSTSMaxAge = 2 * 365 * 24 * time.Hour

// Limits on what ParseTLSCertificate reads: a real chain is a few kB, a key less.
const (
	maxChainBytes = 64 << 10
	maxKeyBytes   = 16 << 10
	maxChainCerts = 8
)

// ValidatedTLS is a certificate that passed ParseTLSCertificate: the chain and the
// key re-encoded from what was parsed (so nothing but DER that parsed reaches a
// server), and what a driver renders from the leaf.
type ValidatedTLS struct {
	ChainPEM, KeyPEM []byte
	Leaf             *x509.Certificate
	// OCSP is true when the leaf names an OCSP responder and the chain carries its
	// issuer, the two things nginx needs to staple (it warns otherwise).
	OCSP bool
	// HSTSMaxAgeSeconds is 0 without HSTS, else the max-age to render.
	HSTSMaxAgeSeconds int64
}

// ParseTLSCertificate checks cert and opts for site at time now and returns what a
// driver writes, or an error wrapping ErrInvalidSpec that says what is wrong: a
// chain that is not PEM certificates (or holds anything else), a leaf that does
// not cover every name of the site (ServerNames), a leaf that is not valid at now,
// a chain out of order (each certificate must be signed by the next), a key that
// does not parse or does not match the leaf, an HSTS max-age out of range.
func ParseTLSCertificate(site SiteSpec, cert TLSCertificate, opts TLSOptions, now time.Time) (ValidatedTLS, error) {
	fail := func(format string, args ...any) (ValidatedTLS, error) {
		return ValidatedTLS{}, fmt.Errorf("%w: certificate: %s", ErrInvalidSpec, fmt.Sprintf(format, args...))
	}
	if len(cert.ChainPEM) > maxChainBytes || len(cert.KeyPEM) > maxKeyBytes {
		return fail("chain of %d bytes or key of %d bytes is over the limit (%d, %d)", len(cert.ChainPEM), len(cert.KeyPEM), maxChainBytes, maxKeyBytes)
	}
	var chain []*x509.Certificate
	rest := cert.ChainPEM
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fail("chain holds a %q block; only CERTIFICATE blocks belong there", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return fail("chain certificate %d: %v", len(chain)+1, err)
		}
		chain = append(chain, c)
		if len(chain) > maxChainCerts {
			return fail("chain holds more than %d certificates", maxChainCerts)
		}
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return fail("chain has %d bytes that are not PEM after its last certificate", len(bytes.TrimSpace(rest)))
	}
	if len(chain) == 0 {
		return fail("chain holds no certificate")
	}
	leaf := chain[0]
	if leaf.IsCA {
		return fail("the first certificate is a CA certificate; the chain must start with the site's leaf")
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return fail("certificate %d is not signed by certificate %d (the chain must be leaf first, then each issuer): %v", i+1, i+2, err)
		}
	}
	for _, n := range site.ServerNames() {
		if err := leaf.VerifyHostname(n); err != nil {
			return fail("the leaf does not cover %s (it names %s)", n, strings.Join(leaf.DNSNames, ", "))
		}
	}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return fail("the leaf is valid from %s to %s, not now (%s)", leaf.NotBefore.UTC().Format(time.RFC3339),
			leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}

	keyBlock, keyRest := pem.Decode(cert.KeyPEM)
	if keyBlock == nil || len(bytes.TrimSpace(keyRest)) > 0 {
		return fail("the key must be exactly one PEM block")
	}
	key, err := certs.ParseKeyBlock(keyBlock)
	if err != nil {
		return fail("%v", err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return fail("the key does not match the leaf's public key")
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fail("%v", err)
	}

	var v ValidatedTLS
	for _, c := range chain {
		v.ChainPEM = append(v.ChainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	v.KeyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	v.Leaf = leaf
	v.OCSP = len(leaf.OCSPServer) > 0 && len(chain) > 1
	if opts.HSTS {
		age := opts.HSTSMaxAge
		if age == 0 {
			age = DefaultHSTSMaxAge
		}
		if age < time.Second || age > maxHSTSMaxAge {
			return ValidatedTLS{}, fmt.Errorf("%w: hsts max-age %s: must be between 1s and %s", ErrInvalidSpec, age, maxHSTSMaxAge)
		}
		v.HSTSMaxAgeSeconds = int64(age / time.Second)
	}
	return v, nil
}

var (
	// acmeToken is an ACME token (RFC 8555 §8.1: base64url, no padding). Its
	// charset has no '/', '.' or '%', so a token can be a file name and never a
	// path; Let's Encrypt's are 43 characters.
	acmeToken = regexp.MustCompile(`^[A-Za-z0-9_-]{16,128}$`)
	// acmeKeyAuth is token "." base64url(JWK thumbprint): nothing a file or a
	// header could be broken with (no newline, quote or space).
	acmeKeyAuth = regexp.MustCompile(`^[A-Za-z0-9_-]{16,128}\.[A-Za-z0-9_-]{16,128}$`)
)

// ValidateChallengeToken checks an HTTP-01 token before it names a file: the
// error wraps ErrInvalidSpec.
func ValidateChallengeToken(token string) error {
	if !acmeToken.MatchString(token) {
		return fmt.Errorf("%w: acme token %s: must be 16 to 128 base64url characters [A-Za-z0-9_-]", ErrInvalidSpec, quote(token))
	}
	return nil
}

// ValidateChallenge checks an HTTP-01 token and its key authorization (the token,
// '.', the account key's base64url thumbprint) before they reach a server: the
// error wraps ErrInvalidSpec.
func ValidateChallenge(token, keyAuth string) error {
	if err := ValidateChallengeToken(token); err != nil {
		return err
	}
	if !acmeKeyAuth.MatchString(keyAuth) || !strings.HasPrefix(keyAuth, token+".") {
		return fmt.Errorf("%w: acme key authorization %s: must be the token, '.', and a base64url thumbprint", ErrInvalidSpec, quote(keyAuth))
	}
	return nil
}
