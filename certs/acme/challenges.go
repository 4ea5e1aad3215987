package acme

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Challenge is the ACME challenge type an issuance answers.
type Challenge string

// The challenges CHOM answers.
const (
	// HTTP01 serves a token at http://<domain>/.well-known/acme-challenge/<token>
	// from the site's server (HTTP01Presenter).
	HTTP01 Challenge = "http-01"
	// DNS01 publishes a TXT record at _acme-challenge.<domain> (DNSProvider);
	// the only challenge that proves a wildcard.
	DNS01 Challenge = "dns-01"
)

// HTTP01Presenter makes a site answer HTTP-01 challenges: after Present,
// http://<domain>/.well-known/acme-challenge/<token> answers keyAuth;
// CleanUp takes it away. The later job adapts drivers.TLSDeployer and the
// site's SiteSpec to it.
type HTTP01Presenter interface {
	Present(ctx context.Context, domain, token, keyAuth string) error
	CleanUp(ctx context.Context, domain, token string) error
}

// DNSProvider publishes DNS-01 answers: Present adds the TXT record value at
// fqdn ("_acme-challenge.example.com."), CleanUp removes that value.
type DNSProvider interface {
	Present(ctx context.Context, fqdn, value string) error
	CleanUp(ctx context.Context, fqdn, value string) error
}

// DNS01Record is the TXT record that answers a DNS-01 challenge for domain
// (a wildcard's record is its parent's) with key authorization keyAuth
// (RFC 8555 §8.4). CNAME delegation of _acme-challenge is not followed: the
// zone of the domain itself must be writable by the DNSProvider.
func DNS01Record(domain, keyAuth string) (fqdn, value string) {
	sum := sha256.Sum256([]byte(keyAuth))
	domain = strings.TrimSuffix(strings.TrimPrefix(domain, "*."), ".")
	return "_acme-challenge." + domain + ".", base64.RawURLEncoding.EncodeToString(sum[:])
}

// ctxKey carries the per-issuance state from Issue to the lego providers,
// which lego calls with Issue's ctx.
type ctxKey struct{}

// issuance is the state of one Issue call that lego's callbacks need.
type issuance struct {
	http01 HTTP01Presenter
	// orderSeen is set once the CA answered a new order (201 Created).
	orderSeen atomic.Bool
}

func fromCtx(ctx context.Context) *issuance {
	is, _ := ctx.Value(ctxKey{}).(*issuance)
	return is
}

// legoHTTP01 is lego's challenge.Provider over the presenter of the
// issuance in ctx.
type legoHTTP01 struct{}

func (legoHTTP01) Present(ctx context.Context, domain, token, keyAuth string) error {
	is := fromCtx(ctx)
	if is == nil || is.http01 == nil {
		return &setupError{domain: domain, err: errors.New("no HTTP-01 presenter for this issuance")}
	}
	if err := is.http01.Present(ctx, domain, token, keyAuth); err != nil {
		return &setupError{domain: domain, err: err}
	}
	return nil
}

func (legoHTTP01) CleanUp(ctx context.Context, domain, token, _ string) error {
	is := fromCtx(ctx)
	if is == nil || is.http01 == nil {
		return nil
	}
	return is.http01.CleanUp(ctx, domain, token)
}

// legoDNS01 is lego's challenge.Provider (with ProviderTimeout) over a
// DNSProvider.
type legoDNS01 struct {
	provider          DNSProvider
	timeout, interval time.Duration
}

func (p legoDNS01) Present(ctx context.Context, domain, _, keyAuth string) error {
	fqdn, value := DNS01Record(domain, keyAuth)
	if err := p.provider.Present(ctx, fqdn, value); err != nil {
		return &setupError{domain: domain, err: err}
	}
	return nil
}

func (p legoDNS01) CleanUp(ctx context.Context, domain, _, keyAuth string) error {
	fqdn, value := DNS01Record(domain, keyAuth)
	return p.provider.CleanUp(ctx, fqdn, value)
}

func (p legoDNS01) Timeout() (timeout, interval time.Duration) { return p.timeout, p.interval }

// txtPropagated reports whether every resolver of addrs answers value among
// the TXT records of fqdn.
func txtPropagated(ctx context.Context, addrs []string, fqdn, value string) (bool, error) {
	for _, addr := range addrs {
		r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		txt, err := r.LookupTXT(qctx, fqdn)
		cancel()
		// An answer without the record (NXDOMAIN, or an empty answer Go
		// calls a lame referral) is "not yet"; a server that does not
		// answer is an error.
		var dnsErr *net.DNSError
		if err != nil && (!errors.As(err, &dnsErr) || dnsErr.IsTimeout) {
			return false, fmt.Errorf("look up TXT %s at %s: %w", fqdn, addr, err)
		}
		if !slices.Contains(txt, value) {
			return false, nil
		}
	}
	return true, nil
}
