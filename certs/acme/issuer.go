package acme

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	legoacme "github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/acme/api"
	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/challenge/dns01"
	"github.com/go-acme/lego/v5/lego"
	legolog "github.com/go-acme/lego/v5/log"
	"github.com/go-acme/lego/v5/registration"

	"github.com/chomhq/chom/certs"
)

// Well-known directories.
const (
	// LetsEncryptProduction issues trusted certificates.
	LetsEncryptProduction = "https://acme-v02.api.letsencrypt.org/directory"
	// LetsEncryptStaging issues untrusted certificates under far higher
	// rate limits: for trying a setup out.
	LetsEncryptStaging = "https://acme-staging-v02.api.letsencrypt.org/directory"
)

// Config configures an Issuer.
type Config struct {
	// DirectoryURL is the CA's ACME directory; required.
	DirectoryURL string
	// Email is the account's contact; optional (Let's Encrypt no longer
	// mails expiry notices).
	Email string
	// Accounts keeps the account; required.
	Accounts AccountStore
	// HTTPClient talks to the CA; nil is a client with a 2-minute timeout
	// trusting the system roots (tests pass one trusting Pebble).
	HTTPClient *http.Client
	// DNS answers DNS-01 challenges; nil refuses DNS-01 requests.
	DNS DNSProvider
	// DNSResolvers are host:port resolvers a DNS-01 record must be visible
	// at before the CA is asked to look (the provider's servers, or a
	// public resolver). Empty uses lego's check of the zone's authoritative
	// servers through the system resolver.
	DNSResolvers []string
	// DNSPropagationTimeout bounds the wait for a DNS-01 record; 0 is 2 minutes.
	DNSPropagationTimeout time.Duration
	// DNSPollInterval is how often propagation is checked; 0 is 2 seconds.
	DNSPollInterval time.Duration
	// Budget, when set, reserves room under the CA's rate limits before
	// each order.
	Budget Budget
	// Timeout bounds one Issue; 0 is 5 minutes.
	Timeout time.Duration
	// Logger is required.
	Logger *slog.Logger
	// Now is the clock for retry times; nil is time.Now.
	Now func() time.Time
}

// Validate reports every missing or invalid field at once.
func (c Config) Validate() error {
	var errs []error
	if c.DirectoryURL == "" {
		errs = append(errs, errors.New("acme: Config.DirectoryURL is required"))
	}
	if c.Accounts == nil {
		errs = append(errs, errors.New("acme: Config.Accounts is required"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("acme: Config.Logger is required"))
	}
	if c.Timeout < 0 || c.DNSPropagationTimeout < 0 || c.DNSPollInterval < 0 {
		errs = append(errs, errors.New("acme: timeouts must not be negative"))
	}
	return errors.Join(errs...)
}

// Request is one certificate to issue.
type Request struct {
	// SiteID is the site the certificate is for (logs).
	SiteID string
	// Domains go on the certificate, the first as its common name; a
	// wildcard ("*.example.com") needs DNS01.
	Domains []string
	// Challenge is HTTP01 or DNS01.
	Challenge Challenge
	// HTTP01 answers the HTTP-01 challenges of this site; required with HTTP01.
	HTTP01 HTTP01Presenter
	// Replaces is the certificate this one renews, when the CA supports ARI
	// (it then exempts the order from some rate limits); optional.
	Replaces *x509.Certificate
}

// Issuer issues certificates from one CA with one account. It is safe for
// concurrent use.
type Issuer struct {
	cfg Config
	hc  *http.Client

	mu      sync.Mutex
	account *Account
	http01  *lego.Client
	dns01   *lego.Client
}

// New returns an Issuer; it does not contact the CA until the first Issue.
func New(cfg Config) (*Issuer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Minute
	}
	if cfg.DNSPropagationTimeout == 0 {
		cfg.DNSPropagationTimeout = 2 * time.Minute
	}
	if cfg.DNSPollInterval == 0 {
		cfg.DNSPollInterval = 2 * time.Second
	}
	base := cfg.HTTPClient
	if base == nil {
		base = &http.Client{Timeout: 2 * time.Minute}
	}
	hc := *base
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	hc.Transport = orderRecorder{next: rt}
	return &Issuer{cfg: cfg, hc: &hc}, nil
}

// orderRecorder notes in the issuance of a request's ctx that the CA
// created an order (a POST answered 201 Created: in an issuance, only a new
// order is), so a budget reservation can be given back when it did not.
type orderRecorder struct{ next http.RoundTripper }

func (o orderRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := o.next.RoundTrip(req)
	if err == nil && req.Method == http.MethodPost && resp.StatusCode == http.StatusCreated {
		if is := fromCtx(req.Context()); is != nil {
			is.orderSeen.Store(true)
		}
	}
	return resp, err
}

// AccountURI returns the account's URL at the CA, registering the account
// first when there is none.
func (i *Issuer) AccountURI(ctx context.Context) (string, error) {
	if err := i.ensureAccount(ctx); err != nil {
		return "", err
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.account.URI, nil
}

// ensureAccount loads the account, or registers one and stores it, and
// makes the lego clients.
func (i *Issuer) ensureAccount(ctx context.Context) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.account != nil {
		return nil
	}
	acc, err := i.cfg.Accounts.LoadAccount(ctx, i.cfg.DirectoryURL, i.cfg.Email)
	switch {
	case errors.Is(err, ErrNoAccount):
		if acc, err = i.register(ctx); err != nil {
			return err
		}
	case err != nil:
		return internal("load the acme account", err)
	}
	key, err := certs.ParseKey(acc.KeyPEM)
	if err != nil {
		return internal("the acme account key", err)
	}
	u := &user{email: acc.Email, key: key, reg: &legoacme.ExtendedAccount{Location: acc.URI}}
	h, err := i.client(u)
	if err != nil {
		return err
	}
	if err := h.Challenge.SetHTTP01Provider(legoHTTP01{}); err != nil {
		return fmt.Errorf("acme: HTTP-01: %w", err)
	}
	var d *lego.Client
	if i.cfg.DNS != nil {
		if d, err = i.client(u); err != nil {
			return err
		}
		opts := []dns01.ChallengeOption{}
		if len(i.cfg.DNSResolvers) > 0 {
			resolvers := i.cfg.DNSResolvers
			opts = append(opts, dns01.WrapPreCheck(func(ctx context.Context, _, fqdn, value string, _ dns01.PreCheckFunc) (bool, error) {
				return txtPropagated(ctx, resolvers, fqdn, value)
			}))
		}
		p := legoDNS01{provider: i.cfg.DNS, timeout: i.cfg.DNSPropagationTimeout, interval: i.cfg.DNSPollInterval}
		if err := d.Challenge.SetDNS01Provider(p, opts...); err != nil {
			return fmt.Errorf("acme: DNS-01: %w", err)
		}
	}
	i.account, i.http01, i.dns01 = acc, h, d
	return nil
}

// client makes a lego client for u (it reads the CA's directory).
func (i *Issuer) client(u *user) (*lego.Client, error) {
	lc := lego.NewConfig(u)
	lc.CADirURL = i.cfg.DirectoryURL
	lc.HTTPClient = i.hc
	lc.UserAgent = "chom"
	c, err := lego.NewClient(lc)
	if err != nil {
		return nil, classify(fmt.Errorf("acme: directory %s: %w", i.cfg.DirectoryURL, err), nil, i.cfg.Now())
	}
	return c, nil
}

// register makes an ECDSA P-256 account key, registers it (agreeing to the
// CA's terms) and stores the account; when another worker stored one first,
// that one is used.
func (i *Issuer) register(ctx context.Context) (*Account, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("acme: account key: %w", err)
	}
	u := &user{email: i.cfg.Email, key: key}
	c, err := i.client(u)
	if err != nil {
		return nil, err
	}
	reg, err := c.Registration.Register(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true})
	if err != nil {
		return nil, classify(fmt.Errorf("acme: register account: %w", err), nil, i.cfg.Now())
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("acme: account key: %w", err)
	}
	acc, err := i.cfg.Accounts.CreateAccount(ctx, Account{
		DirectoryURL: i.cfg.DirectoryURL, Email: i.cfg.Email, URI: reg.Location,
		KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
	})
	if err != nil {
		return nil, internal("store the acme account", err)
	}
	i.cfg.Logger.InfoContext(ctx, "acme account registered", "directory", i.cfg.DirectoryURL, "account", acc.URI)
	return acc, nil
}

// check refuses requests that cannot be issued as asked.
func (i *Issuer) check(r Request) *Error {
	bad := func(format string, args ...any) *Error {
		return &Error{Code: CodeInvalidRequest, Message: fmt.Sprintf(format, args...)}
	}
	if len(r.Domains) == 0 {
		return bad("no domains to issue a certificate for")
	}
	switch r.Challenge {
	case HTTP01:
		for _, d := range r.Domains {
			if strings.HasPrefix(d, "*.") {
				return &Error{Code: CodeInvalidRequest, Domain: d,
					Message: fmt.Sprintf("%s is a wildcard: only DNS-01 can prove it (the CA never validates a wildcard over HTTP)", d)}
			}
		}
		if r.HTTP01 == nil {
			return bad("HTTP-01 needs the site's HTTP01 presenter")
		}
	case DNS01:
		if i.cfg.DNS == nil {
			return bad("DNS-01 needs a DNS provider (CHOM_ACME_DNS_PROVIDER)")
		}
	default:
		return bad("unknown challenge %q (want http-01 or dns-01)", r.Challenge)
	}
	return nil
}

// Issue obtains a certificate for r.Domains. It reserves room in the budget
// first (a denial is CodeDeferred with the time to retry), answers the
// challenges, and gives the reservation back when the CA never saw the
// order. Every failure is an *Error.
func (i *Issuer) Issue(ctx context.Context, r Request) (*certs.Certificate, error) {
	if e := i.check(r); e != nil {
		return nil, e
	}
	if err := i.ensureAccount(ctx); err != nil {
		return nil, classify(err, r.Domains, i.cfg.Now())
	}
	var reservation string
	if i.cfg.Budget != nil {
		registered, err := RegisteredDomains(r.Domains)
		if err != nil {
			return nil, &Error{Code: CodeInvalidRequest, Message: err.Error(), Err: err}
		}
		reservation, err = i.cfg.Budget.Reserve(ctx, i.account.URI, registered)
		if err != nil {
			var ra retryAter
			if errors.As(err, &ra) {
				return nil, &Error{Code: CodeDeferred, Temporary: true, RetryAt: ra.RetryAt(), Err: err,
					Message: fmt.Sprintf("the rate-limit budget is spent until %s: %v", ra.RetryAt().UTC().Format(time.RFC3339), err)}
			}
			return nil, internal("reserve the rate-limit budget", err)
		}
	}

	is := &issuance{http01: r.HTTP01}
	octx, cancel := context.WithTimeout(context.WithValue(ctx, ctxKey{}, is), i.cfg.Timeout)
	defer cancel()
	c := i.http01
	if r.Challenge == DNS01 {
		c = i.dns01
	}
	req := certificate.ObtainRequest{Domains: r.Domains, KeyType: certcrypto.EC256, Bundle: true}
	if r.Replaces != nil {
		// lego orders again without it when the CA answers alreadyReplaced
		// (a renewal retried after its answer was lost).
		if id, err := api.MakeARICertID(r.Replaces); err == nil {
			req.ReplacesCertID = id
		}
	}
	start := time.Now()
	res, err := c.Certificate.Obtain(octx, req)
	var cert *certs.Certificate
	if err == nil {
		cert, err = certs.Parse(res.Certificate, res.PrivateKey)
	}
	if reservation != "" {
		// The reservation is settled whatever Issue's ctx says.
		sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		if serr := i.cfg.Budget.Settle(sctx, reservation, is.orderSeen.Load(), err == nil); serr != nil {
			i.cfg.Logger.ErrorContext(ctx, "acme budget settle failed", "site_id", r.SiteID, "error", serr)
		}
		scancel()
	}
	if err != nil {
		e := classify(err, r.Domains, i.cfg.Now())
		i.cfg.Logger.WarnContext(ctx, "acme issue failed", "site_id", r.SiteID, "domains", r.Domains,
			"code", e.Code, "order_seen", is.orderSeen.Load(), "error", err)
		return nil, e
	}
	i.cfg.Logger.InfoContext(ctx, "acme certificate issued", "site_id", r.SiteID, "domains", r.Domains,
		"serial", cert.Serial, "not_after", cert.NotAfter, "took", time.Since(start))
	return cert, nil
}

// RenewalWindow asks the CA for its ACME Renewal Information (RFC 9773) on
// leaf: the window to renew in (with the CA's Retry-After and explanation),
// or nil when the CA offers none.
func (i *Issuer) RenewalWindow(ctx context.Context, leaf *x509.Certificate) (*certs.Window, error) {
	if err := i.ensureAccount(ctx); err != nil {
		return nil, err
	}
	info, err := i.http01.Certificate.GetRenewalInfo(ctx, leaf)
	if errors.Is(err, api.ErrNoARI) {
		return nil, nil
	}
	if err != nil {
		return nil, classify(fmt.Errorf("acme: renewal info: %w", err), leaf.DNSNames, i.cfg.Now())
	}
	return &certs.Window{Start: info.SuggestedWindow.Start.UTC(), End: info.SuggestedWindow.End.UTC(),
		RetryAfter: info.RetryAfter, ExplanationURL: info.ExplanationURL}, nil
}

// SetLegoLogger sends lego's own log lines (which go to stdout at Info by
// default) to l. lego keeps one logger per process: main calls this once,
// with the process's logger at Warn, so ACME chatter stays out of the
// structured logs.
func SetLegoLogger(l *slog.Logger) { legolog.SetDefault(l) }
