package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/chomhq/chom/drivers"
)

var _ drivers.HealthProbe = (*Probe)(nil)

// errClosed is returned by a Probe after Close.
var errClosed = errors.New("ssh: probe is closed")

// DialFunc opens a network connection, like (*net.Dialer).DialContext.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Config configures a Probe. Zero durations and counts take the defaults named
// on each field.
type Config struct {
	// Signer is the client key used to authenticate. Exactly one of Signer and
	// KeyFile is required.
	Signer gossh.Signer
	// KeyFile is the path of an unencrypted private key in OpenSSH or PEM
	// form (cmd/chom passes CHOM_SSH_KEY_FILE). It is read once, by New; its
	// content never appears in an error or a log line.
	KeyFile string
	// User is the remote user. Default "root".
	User string

	// DialTimeout bounds the TCP connect plus the SSH handshake and
	// authentication. Default 5s.
	DialTimeout time.Duration
	// CommandTimeout bounds the run of ProbeCommand. Default 10s.
	CommandTimeout time.Duration
	// HTTPTimeout bounds the GET of the server's nginx. Default 5s.
	HTTPTimeout time.Duration
	// HTTPPort is the port of the GET. Default 80.
	HTTPPort int

	// MaxConns is how many SSH connections the pool keeps (one per server);
	// beyond it the least recently used idle one is closed. Default
	// DefaultMaxConns.
	MaxConns int
	// IdleTimeout closes a pooled connection unused for that long. It should
	// exceed the sweep interval so each sweep reuses the previous one's
	// connections. Default 5m.
	IdleTimeout time.Duration

	// Layout says where sites live on a server; only NewProvisioner uses it.
	// Zero fields take the Debian defaults (see DefaultLayout).
	Layout Layout
	// StepTimeout bounds each command of a provisioning step (Provision,
	// Deprovision); Archive and Restore stream for as long as ctx allows.
	// Only NewProvisioner uses it. Default 2m.
	StepTimeout time.Duration
	// MaxLogBytes bounds what one rotated (gzip) access log may decompress
	// to when Bandwidth reads it; a larger or corrupt one is refused (see
	// drivers.ErrLogRefused). Only NewProvisioner uses it. Default
	// drivers.MaxLogBytes (4 GiB).
	MaxLogBytes int64

	// TrustOnFirstUse lets the driver and the probe dial a server that has
	// no pinned host key (drivers.Server.HostKey empty) and report the key it
	// presented, for the caller to pin. False (strict, the default) refuses
	// such a server before dialling, with an error wrapping
	// drivers.ErrHostKeyUnpinned: an unpinned first connection could be a
	// man in the middle, and it is the one CHOM would then trust.
	TrustOnFirstUse bool

	// Dial opens TCP connections (SSH and HTTP). Default a net.Dialer; tests
	// wrap it to count or refuse dials.
	Dial DialFunc
	// Logger is required.
	Logger *slog.Logger
}

// Validate reports every problem with c at once, or nil. It does not read
// KeyFile; New does.
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.Signer == nil && c.KeyFile == "":
		errs = append(errs, errors.New("one of Signer and KeyFile is required"))
	case c.Signer != nil && c.KeyFile != "":
		errs = append(errs, errors.New("only one of Signer and KeyFile may be set"))
	}
	for name, d := range map[string]time.Duration{
		"DialTimeout": c.DialTimeout, "CommandTimeout": c.CommandTimeout,
		"HTTPTimeout": c.HTTPTimeout, "IdleTimeout": c.IdleTimeout, "StepTimeout": c.StepTimeout,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative", name))
		}
	}
	if c.HTTPPort < 0 || c.HTTPPort > 65535 {
		errs = append(errs, fmt.Errorf("HTTPPort %d out of range", c.HTTPPort))
	}
	if c.MaxConns < 0 {
		errs = append(errs, errors.New("MaxConns must not be negative"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("Logger is required"))
	}
	return errors.Join(errs...)
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.DialTimeout, 5*time.Second)
	def(&c.CommandTimeout, 10*time.Second)
	def(&c.HTTPTimeout, 5*time.Second)
	def(&c.IdleTimeout, 5*time.Minute)
	def(&c.StepTimeout, 2*time.Minute)
	if c.User == "" {
		c.User = "root"
	}
	if c.HTTPPort == 0 {
		c.HTTPPort = 80
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.Dial == nil {
		c.Dial = (&net.Dialer{}).DialContext
	}
}

// DefaultMaxConns is the pool size when Config.MaxConns is zero: a fleet of
// ten thousand servers stays pooled in every worker process (any worker may
// check any server). docs/performance.md measures the memory it costs.
const DefaultMaxConns = 10000

// Probe measures servers over SSH: it implements drivers.HealthProbe. It keeps
// one SSH connection per server and reuses it across checks; it is safe for
// concurrent use. Close it to release the connections.
type Probe struct {
	cfg    Config
	signer gossh.Signer
	log    *slog.Logger
	pool   *pool
	http   *http.Client
}

// New returns a Probe for cfg, or an error naming every problem with cfg or
// with its key file.
func New(cfg Config) (*Probe, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ssh: invalid config: %w", err)
	}
	cfg.setDefaults()
	signer, err := cfg.signer()
	if err != nil {
		return nil, err
	}
	p := &Probe{
		cfg:    cfg,
		signer: signer,
		log:    cfg.Logger,
		pool:   newPool(cfg.MaxConns, cfg.IdleTimeout),
	}
	p.http = &http.Client{
		Transport: &http.Transport{
			Proxy:               nil, // a health check goes to the server itself, never through an environment proxy
			DialContext:         cfg.Dial,
			MaxIdleConns:        cfg.MaxConns,
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     cfg.IdleTimeout,
			DisableCompression:  true,
		},
		// The status of nginx's own answer is what is measured; a redirect
		// elsewhere is not followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return p, nil
}

// signer is the key the client authenticates with: Signer, or the one read
// from KeyFile.
func (c Config) signer() (gossh.Signer, error) {
	if c.KeyFile == "" {
		return c.Signer, nil
	}
	return loadSigner(c.KeyFile)
}

// loadSigner reads a private key file. Errors name the file, never its content.
func loadSigner(path string) (gossh.Signer, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ssh: read key file: %w", err)
	}
	signer, err := gossh.ParsePrivateKey(pem)
	clear(pem)
	if err != nil {
		var missing *gossh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, fmt.Errorf("ssh: key file %s is passphrase-protected, which is not supported", path)
		}
		return nil, fmt.Errorf("ssh: key file %s is not a private key CHOM can use", path)
	}
	return signer, nil
}

// Close closes every pooled connection and stops the reaper; later Probe
// calls fail. It is safe to call more than once.
func (p *Probe) Close() error {
	p.pool.close()
	p.http.CloseIdleConnections()
	return nil
}

// PooledConns returns how many SSH connections are pooled (for metrics and
// tests).
func (p *Probe) PooledConns() int { return p.pool.size() }

// Probe measures target once: it connects over SSH (or reuses the pooled
// connection), runs ProbeCommand, and GETs http://<ip>:<HTTPPort>/ meanwhile.
//
// Errors: a failed dial, handshake, authentication or command transport
// wraps drivers.ErrUnreachable; a host key other than target.HostKey wraps
// drivers.ErrHostKeyMismatch (never retried); unparsable output is a plain
// error with Reachable set. With no pinned key the key seen is returned in
// HealthReport.HostKey for the caller to record (trust on first use). An HTTP
// failure is not an error: it is reported in HTTPError.
func (p *Probe) Probe(ctx context.Context, target drivers.HealthTarget) (drivers.HealthReport, error) {
	var report drivers.HealthReport
	srv := target.Server
	ep, err := serverEndpoint(srv, target.HostKey)
	if err != nil {
		return report, fmt.Errorf("ssh: probe %s: %w", srv.ID, err)
	}
	key, addr, pin := ep.key, ep.addr, ep.pin
	log := p.log.With("vps_id", srv.ID, "addr", addr)

	httpCtx, cancelHTTP := context.WithCancel(ctx)
	defer cancelHTTP()
	httpDone := make(chan struct{})
	go func() {
		defer close(httpDone)
		p.getHTTP(httpCtx, srv.IPAddress, &report)
	}()

	out, err := p.runCommand(ctx, key, addr, pin, log, &report)
	if err != nil {
		cancelHTTP()
		<-httpDone
		return report, fmt.Errorf("ssh: probe %s: %w", srv.ID, err)
	}
	m, err := ParseOutput(out)
	<-httpDone
	if err != nil {
		return report, fmt.Errorf("ssh: probe %s: %w", srv.ID, err)
	}
	m.apply(&report)
	return report, nil
}

// runCommand runs ProbeCommand on a pooled (or new) connection, redialling
// once when a pooled connection turns out to be broken.
func (p *Probe) runCommand(ctx context.Context, key, addr string, pin hostPin, log *slog.Logger, report *drivers.HealthReport) (string, error) {
	for attempt := 0; ; attempt++ {
		start := time.Now()
		c, reused, err := p.pool.get(ctx, key, addr, pin, func(ctx context.Context) (*conn, error) {
			return p.dial(ctx, addr, pin, log)
		})
		report.ConnectLatency = time.Since(start)
		if err != nil {
			return "", err
		}
		report.HostKey = c.hostTxt
		out, err := p.session(ctx, c.client)
		if err == nil {
			p.pool.release(c, false)
			report.Reachable = true
			return out, nil
		}
		var exit *gossh.ExitError
		broken := !errors.As(err, &exit) && ctx.Err() == nil
		p.pool.release(c, broken)
		if broken && reused && attempt == 0 {
			log.Debug("pooled ssh connection broken; redialling", "error", err)
			continue
		}
		if errors.As(err, &exit) || errors.Is(err, context.Canceled) {
			return "", err
		}
		return "", fmt.Errorf("%w: %w", drivers.ErrUnreachable, err)
	}
}

// dial connects and authenticates, within DialTimeout and ctx.
func (p *Probe) dial(ctx context.Context, addr string, pin hostPin, log *slog.Logger) (*conn, error) {
	return connect(ctx, p.cfg, p.signer, addr, pin, log)
}

// session runs ProbeCommand on client within CommandTimeout and ctx: the
// session is closed when either ends.
func (p *Probe) session(ctx context.Context, client *gossh.Client) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.CommandTimeout)
	defer cancel()
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	var (
		mu   sync.Mutex
		sess *gossh.Session
	)
	go func() {
		s, err := client.NewSession()
		if err != nil {
			done <- result{err: fmt.Errorf("open session: %w", err)}
			return
		}
		mu.Lock()
		sess = s
		mu.Unlock()
		defer s.Close()
		if ctx.Err() != nil {
			done <- result{err: context.Cause(ctx)}
			return
		}
		stdout, err := s.StdoutPipe()
		if err != nil {
			done <- result{err: fmt.Errorf("session stdout: %w", err)}
			return
		}
		if err := s.Start(ProbeCommand); err != nil {
			done <- result{err: fmt.Errorf("start probe command: %w", err)}
			return
		}
		out, rerr := io.ReadAll(io.LimitReader(stdout, maxOutputBytes))
		_, _ = io.Copy(io.Discard, stdout) // let the command finish if it wrote too much
		werr := s.Wait()
		if werr == nil && rerr != nil {
			werr = fmt.Errorf("read probe output: %w", rerr)
		} else if werr != nil {
			werr = fmt.Errorf("probe command: %w", werr)
		}
		done <- result{out: string(out), err: werr}
	}()
	select {
	case r := <-done:
		return r.out, r.err
	case <-ctx.Done():
		mu.Lock()
		if sess != nil {
			_ = sess.Close()
		}
		mu.Unlock()
		return "", fmt.Errorf("probe command: %w", context.Cause(ctx))
	}
}

// getHTTP GETs http://ip:port/ and records status, latency or error in r.
func (p *Probe) getHTTP(ctx context.Context, ip string, r *drivers.HealthReport) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.HTTPTimeout)
	defer cancel()
	u := "http://" + net.JoinHostPort(ip, strconv.Itoa(p.cfg.HTTPPort)) + "/"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		r.HTTPError = err.Error()
		return
	}
	req.Header.Set("User-Agent", "chom-health/1")
	start := time.Now()
	resp, err := p.http.Do(req)
	r.HTTPLatency = time.Since(start)
	if err != nil {
		r.HTTPError = err.Error()
		return
	}
	// Drain a little so the connection can be reused, never a whole page.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	r.HTTPStatus = resp.StatusCode
}
