package devca

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
)

// CertificateLifetime is how long the certificates the CA issues are valid:
// 90 days, as Let's Encrypt's (so renewal runs as it would in production).
const CertificateLifetime = 90 * 24 * time.Hour

// challengePath is where Pebble's WFE serves challenges (its unexported
// challengePath): a POST there starts a validation.
const challengePath = "/chalZ/"

// Config configures a development CA.
type Config struct {
	// HTTP01 answers the VA's HTTP-01 requests,
	// GET http://<domain>:<port>/.well-known/acme-challenge/<token> with the
	// Host header naming the domain; required. `chom dev` passes the local
	// driver's ChallengeHandler.
	HTTP01 http.Handler
	// Logger is required. Pebble's own lines go to it at Debug
	// (component=pebble).
	Logger *slog.Logger
}

// Validate reports every missing field at once.
func (c Config) Validate() error {
	var errs []error
	if c.HTTP01 == nil {
		errs = append(errs, errors.New("devca: Config.HTTP01 is required"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("devca: Config.Logger is required"))
	}
	return errors.Join(errs...)
}

// CA is a running development CA. Its methods are safe for concurrent use.
type CA struct {
	directoryURL string
	clientRoots  []byte
	issuedRoots  []byte
	http01Addr   string
	dnsAddr      string

	acme, http01 *http.Server
	dns          *dns.Server
	dnsLn        net.Listener
	served       sync.WaitGroup
	closeOnce    sync.Once
	closeErr     error
}

// Start runs a development CA: a DNS server, the HTTP-01 server and Pebble's
// ACME directory, each on a loopback port of its own, and returns once all
// three accept connections. ctx bounds the start only; the CA runs until
// Close. It fails when cfg is invalid, when PEBBLE_VA_ALWAYS_VALID is set
// (validation would not be real), or when a port cannot be bound.
func Start(ctx context.Context, cfg Config) (*CA, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Read, never set: Pebble's VA takes it from the environment.
	switch os.Getenv("PEBBLE_VA_ALWAYS_VALID") {
	case "1", "true", "True", "TRUE":
		return nil, errors.New("devca: PEBBLE_VA_ALWAYS_VALID is set: the development CA validates for real; unset it")
	}
	c := &CA{}
	var lc net.ListenConfig
	listen := func(what string) (net.Listener, error) {
		ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("devca: listen for the %s: %w", what, err)
		}
		return ln, nil
	}
	var lns []net.Listener
	closeAll := func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}
	for _, what := range []string{"DNS server", "HTTP-01 server", "ACME directory"} {
		ln, err := listen(what)
		if err != nil {
			closeAll()
			return nil, err
		}
		lns = append(lns, ln)
	}
	dnsLn, httpLn, acmeLn := lns[0], lns[1], lns[2]
	c.dnsAddr, c.http01Addr = dnsLn.Addr().String(), httpLn.Addr().String()
	httpPort := httpLn.Addr().(*net.TCPAddr).Port

	serving, err := newServingCert(time.Now())
	if err != nil {
		closeAll()
		return nil, err
	}
	c.clientRoots = serving.rootPEM
	c.directoryURL = "https://" + acmeLn.Addr().String() + wfe.DirectoryPath

	logger := log.New(logWriter{cfg.Logger.With("component", "pebble")}, "", 0)
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{
		"default": {Description: "chom dev", ValidityPeriod: uint64(CertificateLifetime / time.Second)},
	})
	c.issuedRoots = bytes.Clone(authority.GetRootCert(0).PEM())
	// TLS-ALPN-01 is not answered: its port is the HTTP-01 server's, where a
	// TLS handshake fails.
	validator := va.New(logger, httpPort, httpPort, false, c.dnsAddr, store)
	front := wfe.New(logger, store, validator, authority, []string{"dev-ca.chom.internal"}, false, false, 1, 1)

	c.dnsLn = dnsLn
	c.dns = &dns.Server{Listener: dnsLn, Net: "tcp", Handler: dns.HandlerFunc(answerLoopback)}
	c.http01 = &http.Server{Handler: cfg.HTTP01, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)}
	c.acme = &http.Server{Handler: retryAfter(front.Handler()), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)}

	dnsUp := make(chan struct{})
	c.dns.NotifyStartedFunc = func() { close(dnsUp) }
	c.served.Add(3)
	go func() {
		defer c.served.Done()
		if err := c.dns.ActivateAndServe(); err != nil {
			cfg.Logger.Error("devca: DNS server stopped", "error", err)
		}
	}()
	go func() {
		defer c.served.Done()
		if err := c.http01.Serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Logger.Error("devca: HTTP-01 server stopped", "error", err)
		}
	}()
	tlsLn := tls.NewListener(acmeLn, &tls.Config{Certificates: []tls.Certificate{serving.cert}, MinVersion: tls.VersionTLS12})
	go func() {
		defer c.served.Done()
		if err := c.acme.Serve(tlsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Logger.Error("devca: ACME directory stopped", "error", err)
		}
	}()
	select {
	case <-dnsUp:
	case <-ctx.Done():
		_ = c.Close()
		return nil, fmt.Errorf("devca: start: %w", ctx.Err())
	}
	cfg.Logger.Debug("development CA started", "directory", c.directoryURL, "http01", c.http01Addr, "dns", c.dnsAddr)
	return c, nil
}

// DirectoryURL is the ACME directory's URL (https://127.0.0.1:<port>/dir).
func (c *CA) DirectoryURL() string { return c.directoryURL }

// ClientRootsPEM is the PEM of the root a client must trust to talk to the
// ACME directory over HTTPS (the root of the directory's TLS certificate,
// which names 127.0.0.1, ::1 and localhost). It is not the root of the
// certificates the CA issues: that is IssuedRootsPEM.
func (c *CA) ClientRootsPEM() []byte { return bytes.Clone(c.clientRoots) }

// IssuedRootsPEM is the PEM of the root the CA's certificates chain to
// (Pebble's generated root; the chain it hands out ends at its
// intermediate): what a browser, or curl --cacert, must trust to accept
// them.
func (c *CA) IssuedRootsPEM() []byte { return bytes.Clone(c.issuedRoots) }

// HTTP01Addr is the host:port of the HTTP-01 server the VA fetches tokens
// from (every domain resolves to its host).
func (c *CA) HTTP01Addr() string { return c.http01Addr }

// DNSAddr is the host:port (TCP) of the DNS server the VA resolves names
// through.
func (c *CA) DNSAddr() string { return c.dnsAddr }

// Close stops the three servers, closing their connections, and waits for
// them. It may be called more than once.
func (c *CA) Close() error {
	c.closeOnce.Do(func() {
		var errs []error
		if err := c.acme.Close(); err != nil {
			errs = append(errs, fmt.Errorf("ACME directory: %w", err))
		}
		if err := c.http01.Close(); err != nil {
			errs = append(errs, fmt.Errorf("HTTP-01 server: %w", err))
		}
		// Its connections' reads are cut at once: Shutdown does not linger.
		// A server not started yet (Start cancelled) refuses Shutdown:
		// closing its listener stops it as soon as it starts.
		if err := c.dns.Shutdown(); err != nil {
			if lerr := c.dnsLn.Close(); lerr == nil {
				err = nil
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("DNS server: %w", err))
			}
		}
		c.served.Wait()
		if err := errors.Join(errs...); err != nil {
			c.closeErr = fmt.Errorf("devca: close: %w", err)
		}
	})
	return c.closeErr
}

// answerLoopback answers every A question with 127.0.0.1 and every other
// question with no record (NOERROR): the VA then dials 127.0.0.1 for any
// name, over IPv4 only, where the HTTP-01 server listens.
func answerLoopback(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	for _, q := range r.Question {
		if q.Qtype == dns.TypeA && q.Qclass == dns.ClassINET {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
				A:   net.IPv4(127, 0, 0, 1),
			})
		}
	}
	_ = w.WriteMsg(m)
}

// retryAfter adds "Retry-After: 1" to the answer of a challenge POST, which
// Pebble sends without one (lego then first polls after 5 s): the client
// asks again after a second, while the VA works.
func retryAfter(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, challengePath) {
			w.Header().Set("Retry-After", "1")
		}
		next.ServeHTTP(w, r)
	})
}

// logWriter turns the lines of Pebble's log.Logger into Debug records.
type logWriter struct{ l *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.l.Debug(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
