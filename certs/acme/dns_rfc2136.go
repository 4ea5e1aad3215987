package acme

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// RFC2136Config configures an RFC2136 provider.
type RFC2136Config struct {
	// Nameserver is the primary server accepting updates, host:port.
	Nameserver string
	// Zone is the zone updates are sent for ("example.com."); every domain
	// issued with DNS-01 must be in it (or a subdomain of it).
	Zone string
	// TSIGKey and TSIGSecret (base64) sign the updates; both or neither.
	TSIGKey, TSIGSecret string
	// TSIGAlgorithm is the TSIG algorithm; "" is hmac-sha256.
	TSIGAlgorithm string
	// TTL of the TXT records; 0 is 60 seconds.
	TTL time.Duration
	// Timeout of one update exchange; 0 is 10 seconds.
	Timeout time.Duration
}

// Validate reports every problem of the configuration at once.
func (c RFC2136Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Nameserver); err != nil {
		errs = append(errs, fmt.Errorf("rfc2136: nameserver %q: want host:port", c.Nameserver))
	}
	if c.Zone == "" {
		errs = append(errs, errors.New("rfc2136: zone is required"))
	}
	if (c.TSIGKey == "") != (c.TSIGSecret == "") {
		errs = append(errs, errors.New("rfc2136: TSIG key and secret go together"))
	}
	return errors.Join(errs...)
}

// RFC2136 is a DNSProvider that sends RFC 2136 dynamic updates (TSIG-signed)
// to a primary server: BIND, PowerDNS, Knot. It is written on miekg/dns
// rather than lego's providers/dns/dnsupdate, whose interface takes
// (domain, token, keyAuth) and pulls in Kerberos for GSS-TSIG.
type RFC2136 struct {
	cfg RFC2136Config
}

var _ DNSProvider = (*RFC2136)(nil)

// NewRFC2136 returns a provider for cfg.
func NewRFC2136(cfg RFC2136Config) (*RFC2136, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Zone = dns.Fqdn(cfg.Zone)
	if cfg.TSIGKey != "" {
		cfg.TSIGKey = dns.Fqdn(cfg.TSIGKey)
	}
	if cfg.TSIGAlgorithm == "" {
		cfg.TSIGAlgorithm = dns.HmacSHA256
	}
	cfg.TSIGAlgorithm = dns.Fqdn(cfg.TSIGAlgorithm)
	if cfg.TTL == 0 {
		cfg.TTL = time.Minute
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	return &RFC2136{cfg: cfg}, nil
}

// Present adds the TXT record value at fqdn (replacing a leftover set).
func (p *RFC2136) Present(ctx context.Context, fqdn, value string) error {
	return p.update(ctx, fqdn, value, true)
}

// CleanUp removes the TXT record value at fqdn.
func (p *RFC2136) CleanUp(ctx context.Context, fqdn, value string) error {
	return p.update(ctx, fqdn, value, false)
}

func (p *RFC2136) update(ctx context.Context, fqdn, value string, insert bool) error {
	fqdn = dns.Fqdn(fqdn)
	if !dns.IsSubDomain(p.cfg.Zone, fqdn) {
		return fmt.Errorf("rfc2136: %s is not in zone %s", fqdn, p.cfg.Zone)
	}
	rr := []dns.RR{&dns.TXT{
		Hdr: dns.RR_Header{Name: fqdn, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: uint32(p.cfg.TTL / time.Second)},
		Txt: []string{value},
	}}
	m := new(dns.Msg).SetUpdate(p.cfg.Zone)
	if insert {
		m.RemoveRRset(rr)
		m.Insert(rr)
	} else {
		m.Remove(rr)
	}
	c := &dns.Client{Net: "tcp", Timeout: p.cfg.Timeout}
	if p.cfg.TSIGKey != "" {
		m.SetTsig(p.cfg.TSIGKey, p.cfg.TSIGAlgorithm, 300, time.Now().Unix())
		c.TsigSecret = map[string]string{p.cfg.TSIGKey: p.cfg.TSIGSecret}
	}
	reply, _, err := c.ExchangeContext(ctx, m, p.cfg.Nameserver)
	if err != nil {
		return fmt.Errorf("rfc2136: update %s at %s: %w", fqdn, p.cfg.Nameserver, err)
	}
	if reply.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("rfc2136: update %s at %s: server answered %s", fqdn, p.cfg.Nameserver, dns.RcodeToString[reply.Rcode])
	}
	return nil
}

// ParseTSIG reads "name:algorithm:base64secret" or "name:base64secret"
// (hmac-sha256), the form of CHOM_ACME_DNS_RFC2136_TSIG.
func ParseTSIG(s string) (key, algorithm, secret string, err error) {
	parts := strings.Split(s, ":")
	switch len(parts) {
	case 2:
		return parts[0], dns.HmacSHA256, parts[1], nil
	case 3:
		return parts[0], parts[1], parts[2], nil
	}
	return "", "", "", errors.New("rfc2136: TSIG: want name:base64secret or name:algorithm:base64secret")
}
