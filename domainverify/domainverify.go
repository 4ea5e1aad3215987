package domainverify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// RecordPrefix is the label put in front of a domain to name its TXT challenge.
const RecordPrefix = "_chom-challenge."

// PathPrefix is the URL path under which a domain answers its HTTP challenge.
const PathPrefix = "/.well-known/chom-challenge/"

// RecordName is the name of the TXT record that proves domain.
func RecordName(domain string) string { return RecordPrefix + domain }

// ChallengeURL is the URL that proves domain by answering token.
func ChallengeURL(domain, token string) string { return "http://" + domain + PathPrefix + token }

// Defaults of Config.
const (
	DefaultHTTPTimeout = 5 * time.Second
	DefaultDNSTimeout  = 5 * time.Second
	DefaultMaxBody     = 1024
	maxRedirects       = 3
)

// Config configures a Checker.
type Config struct {
	// Resolver is the DNS server (host:port) every lookup goes to; empty: the
	// system's resolver.
	Resolver string
	// DNSTimeout bounds one lookup. Default DefaultDNSTimeout.
	DNSTimeout time.Duration
	// HTTPTimeout bounds one HTTP check, redirects included. Default
	// DefaultHTTPTimeout.
	HTTPTimeout time.Duration
	// MaxBody is the most bytes of an HTTP answer read. Default
	// DefaultMaxBody: a token is 22 characters.
	MaxBody int64
	// AllowNonPublic lets the HTTP check reach loopback and private addresses.
	// For tests only (a test HTTP server listens on loopback); never set in
	// production, where it would let a tenant make CHOM fetch internal URLs.
	AllowNonPublic bool
	// HTTPPort is the port the HTTP check connects to. Default 80; tests set
	// their server's port.
	HTTPPort int
}

// Checker checks domain challenges. It is safe for concurrent use.
type Checker struct {
	cfg      Config
	resolver *net.Resolver
	client   *http.Client
}

// New validates cfg and returns a Checker.
func New(cfg Config) (*Checker, error) {
	if cfg.Resolver != "" {
		if _, _, err := net.SplitHostPort(cfg.Resolver); err != nil {
			return nil, fmt.Errorf("domainverify: Resolver %q must be host:port: %w", cfg.Resolver, err)
		}
	}
	if cfg.HTTPPort < 0 || cfg.HTTPPort > 65535 {
		return nil, fmt.Errorf("domainverify: HTTPPort %d out of range", cfg.HTTPPort)
	}
	if cfg.DNSTimeout <= 0 {
		cfg.DNSTimeout = DefaultDNSTimeout
	}
	if cfg.HTTPTimeout <= 0 {
		cfg.HTTPTimeout = DefaultHTTPTimeout
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.HTTPPort == 0 {
		cfg.HTTPPort = 80
	}
	r := net.DefaultResolver
	if cfg.Resolver != "" {
		addr := cfg.Resolver
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
	}
	c := &Checker{cfg: cfg, resolver: r}
	c.client = &http.Client{
		Timeout: cfg.HTTPTimeout,
		Transport: &http.Transport{
			Proxy:                  nil, // never through a proxy from the environment
			DialContext:            c.dialPublic,
			DisableKeepAlives:      true,
			TLSHandshakeTimeout:    cfg.HTTPTimeout,
			ResponseHeaderTimeout:  cfg.HTTPTimeout,
			MaxResponseHeaderBytes: 16 << 10,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return errTooManyRedirects
			}
			if req.URL.Hostname() != via[0].URL.Hostname() {
				return fmt.Errorf("%w to %s", errCrossHostRedirect, quote(req.URL.Hostname()))
			}
			return nil
		},
	}
	return c, nil
}

var (
	errTooManyRedirects  = errors.New("too many redirects")
	errCrossHostRedirect = errors.New("redirect to another host refused")
	// ErrNonPublicAddress: the HTTP check refused to connect, because the
	// domain resolves to an address CHOM must never fetch from.
	ErrNonPublicAddress = errors.New("resolves to a non-public address")
)

// NotVerifiedError says why a domain is not proven: what was expected and
// what was found, for each way. Its text is safe to show the claim's tenant.
type NotVerifiedError struct {
	Domain string
	// Expected says what would have proven the domain.
	Expected string
	// Found says what the checks saw instead.
	Found string
}

func (e *NotVerifiedError) Error() string {
	return fmt.Sprintf("%s is not verified: expected %s; found %s", e.Domain, e.Expected, e.Found)
}

// Check proves domain with token by either way: the TXT record first, then
// the HTTP token. It returns nil once one of them shows the token, or a
// *NotVerifiedError saying what both found. ctx bounds both checks.
func (c *Checker) Check(ctx context.Context, domain, token string) error {
	txtFound, ok := c.CheckTXT(ctx, domain, token)
	if ok {
		return nil
	}
	httpFound, ok := c.CheckHTTP(ctx, domain, token)
	if ok {
		return nil
	}
	return &NotVerifiedError{
		Domain: domain,
		Expected: fmt.Sprintf("a TXT record %s with the value %q, or %s answering it",
			RecordName(domain), token, ChallengeURL(domain, token)),
		Found: fmt.Sprintf("TXT: %s; HTTP: %s", txtFound, httpFound),
	}
}

// CheckTXT reports whether a TXT record _chom-challenge.<domain> holds token,
// and otherwise what it found.
func (c *Checker) CheckTXT(ctx context.Context, domain, token string) (found string, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DNSTimeout)
	defer cancel()
	values, err := c.resolver.LookupTXT(ctx, RecordName(domain))
	if err != nil {
		var dnsErr *net.DNSError
		switch {
		case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
			return "no TXT record " + RecordName(domain), false
		case errors.As(err, &dnsErr) && !dnsErr.IsTimeout:
			// An answer without records (NODATA; "lame referral" when the
			// server sends no SOA either).
			return "no TXT record " + RecordName(domain) + " (" + dnsErr.Err + ")", false
		}
		return "the TXT lookup failed (" + lookupReason(err) + ")", false
	}
	for _, v := range values {
		if v == token {
			return "", true
		}
	}
	if len(values) == 0 {
		return "no TXT record " + RecordName(domain), false
	}
	shown := make([]string, 0, 3)
	for _, v := range values[:min(len(values), 3)] {
		shown = append(shown, quote(v))
	}
	return fmt.Sprintf("%d TXT value(s), none the token: %s", len(values), strings.Join(shown, ", ")), false
}

// CheckHTTP reports whether http://<domain>/.well-known/chom-challenge/<token>
// answers 200 with the token as its body (surrounding white space ignored),
// and otherwise what it found. It never connects to a non-public address
// (unless AllowNonPublic) and follows redirects only on the same host.
func (c *Checker) CheckHTTP(ctx context.Context, domain, token string) (found string, ok bool) {
	u := "http://" + domain
	if c.cfg.HTTPPort != 80 {
		u += ":" + strconv.Itoa(c.cfg.HTTPPort)
	}
	u += PathPrefix + token
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "the URL is invalid", false
	}
	req.Header.Set("User-Agent", "chom-domain-verification/1")
	resp, err := c.client.Do(req)
	if err != nil {
		return "no answer (" + httpReason(err) + ")", false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxBody+1))
	if err != nil {
		return "the answer broke off (" + httpReason(err) + ")", false
	}
	if resp.StatusCode != http.StatusOK {
		return "HTTP status " + strconv.Itoa(resp.StatusCode), false
	}
	if int64(len(body)) > c.cfg.MaxBody {
		return fmt.Sprintf("an answer longer than %d bytes", c.cfg.MaxBody), false
	}
	if strings.TrimSpace(string(body)) == token {
		return "", true
	}
	return "an answer that is not the token: " + quote(string(body)), false
}

// dialPublic resolves host with the checker's resolver and connects to the
// first address, refusing a name with any non-public address. Checking here,
// at connect time, leaves no window for DNS rebinding.
func (c *Checker) dialPublic(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		lctx, cancel := context.WithTimeout(ctx, c.cfg.DNSTimeout)
		defer cancel()
		addrs, err = c.resolver.LookupNetIP(lctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, err)
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("resolve %s: no address", host)
	}
	if !c.cfg.AllowNonPublic {
		for _, a := range addrs {
			if !Public(a) {
				return nil, fmt.Errorf("%s %w %s", host, ErrNonPublicAddress, a.Unmap())
			}
		}
	}
	d := net.Dialer{Timeout: c.cfg.HTTPTimeout}
	var last error
	for _, a := range addrs {
		conn, err := d.DialContext(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
		if err == nil {
			return conn, nil
		}
		last = err
	}
	return nil, last
}

// nonPublic lists ranges that IsGlobalUnicast accepts but that no site may
// be served from, or that could reach internal hosts: "this network",
// shared address space (carrier NAT; also Alibaba's metadata at
// 100.100.100.200), IETF protocol assignments, documentation, benchmarking,
// reserved, NAT64 and 6to4 (which embed an IPv4 address), and Teredo.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("100::/64"),
	netip.MustParsePrefix("2001::/32"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("2002::/16"),
}

// Public reports whether a is an address CHOM may fetch a challenge from: a
// global unicast address outside private (RFC 1918, fc00::/7), loopback,
// link-local (169.254.0.0/16 with the cloud metadata service, fe80::/10) and
// the special ranges of nonPublic. IPv4-mapped IPv6 addresses are judged as
// the IPv4 address they carry.
func Public(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || !a.IsGlobalUnicast() || a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// lookupReason is a short, safe reason for a failed lookup.
func lookupReason(err error) string {
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr) && dnsErr.IsTimeout:
		return "timeout"
	case errors.As(err, &dnsErr):
		return dnsErr.Err
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "error"
}

// httpReason is a short, safe reason for a failed fetch: what was refused
// and why, a timeout, or a connection failure, never a raw error chain.
func httpReason(err error) string {
	switch {
	case errors.Is(err, ErrNonPublicAddress):
		return "refused: the domain " + ErrNonPublicAddress.Error()
	case errors.Is(err, errCrossHostRedirect):
		return errCrossHostRedirect.Error()
	case errors.Is(err, errTooManyRedirects):
		return errTooManyRedirects.Error()
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return "timeout"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		if dnsErr.IsNotFound {
			return "the domain does not resolve"
		}
		return "the domain did not resolve: " + dnsErr.Err
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return "connection failed"
	}
	return "request failed"
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// quote shows a value found on the network: quoted, at most 64 characters.
func quote(s string) string {
	const max = 64
	if r := []rune(s); len(r) > max {
		return strconv.QuoteToASCII(string(r[:max])) + "..."
	}
	return strconv.QuoteToASCII(s)
}
