package ssh_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	gossh "golang.org/x/crypto/ssh"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/breaker"
	"github.com/chomhq/chom/drivers/ssh"
)

// dialCounter wraps net.Dialer, counting dials and keeping the connections so
// a test can break them.
type dialCounter struct {
	n     atomic.Int64
	mu    sync.Mutex
	conns []net.Conn
}

func (d *dialCounter) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err == nil {
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
	}
	return c, err
}

type bundle struct {
	sshd  *sshd
	probe *ssh.Probe
	dials *dialCounter // SSH dials only: HTTP uses its own dialer below
	http  int          // port of a loopback "nginx"
}

func setup(t *testing.T, mod func(*ssh.Config)) *bundle {
	t.Helper()
	srv := startSSHD(t)
	nginx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(nginx.Close)
	httpPort := nginx.Listener.Addr().(*net.TCPAddr).Port
	b := &bundle{sshd: srv, dials: &dialCounter{}, http: httpPort}
	cfg := ssh.Config{
		Signer:         srv.Client,
		User:           srv.User,
		DialTimeout:    3 * time.Second,
		CommandTimeout: 5 * time.Second,
		HTTPTimeout:    2 * time.Second,
		HTTPPort:       httpPort,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if strings.HasSuffix(addr, ":"+strconv.Itoa(httpPort)) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}
			return b.dials.Dial(ctx, network, addr)
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := ssh.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	b.probe = p
	return b
}

func (b *bundle) target(pin string) drivers.HealthTarget {
	return drivers.HealthTarget{
		Server:  drivers.Server{ID: "vps_test", IPAddress: "127.0.0.1", SSHPort: b.sshd.Port},
		HostKey: pin,
	}
}

func localLoad(t *testing.T) float64 {
	t.Helper()
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestProbeMeasuresRealServer(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	before := localLoad(t)
	r, err := b.probe.Probe(t.Context(), b.target(b.sshd.HostKey))
	after := localLoad(t)
	if err != nil {
		t.Fatalf("Probe: %v\nsshd log:\n%s", err, readFile(b.sshd.Log))
	}
	if !r.Reachable || r.HostKey != b.sshd.HostKey {
		t.Errorf("Reachable=%v HostKey=%q, want true and the pinned key", r.Reachable, r.HostKey)
	}
	if r.ConnectLatency <= 0 || r.ConnectLatency > 3*time.Second {
		t.Errorf("ConnectLatency %v", r.ConnectLatency)
	}
	// The server is this machine: compare with what the test reads itself.
	lo, hi := min(before, after)-1.5, max(before, after)+1.5
	if r.Load1 < lo || r.Load1 > hi || r.Load5 < 0 || r.Load15 < 0 {
		t.Errorf("Load1 %.2f outside [%.2f, %.2f] of the local /proc/loadavg", r.Load1, lo, hi)
	}
	nproc, err := exec.Command("nproc").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := strconv.Atoi(strings.TrimSpace(string(nproc))); r.CPUs != want {
		t.Errorf("CPUs %d, local nproc %d", r.CPUs, want)
	}
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		t.Fatal(err)
	}
	memTotal := uint64(si.Totalram) * uint64(si.Unit)
	if d := int64(r.MemTotalBytes) - int64(memTotal); d < -(8<<20) || d > 8<<20 {
		t.Errorf("MemTotalBytes %d, sysinfo says %d", r.MemTotalBytes, memTotal)
	}
	if r.MemAvailableBytes == 0 || r.MemAvailableBytes > r.MemTotalBytes {
		t.Errorf("MemAvailableBytes %d of %d", r.MemAvailableBytes, r.MemTotalBytes)
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs("/", &fs); err != nil {
		t.Fatal(err)
	}
	if want := fs.Blocks * uint64(fs.Frsize); r.DiskTotalBytes != want {
		t.Errorf("DiskTotalBytes %d, statfs(/) says %d", r.DiskTotalBytes, want)
	}
	if r.DiskFreeBytes == 0 || r.DiskFreeBytes > r.DiskTotalBytes {
		t.Errorf("DiskFreeBytes %d of %d", r.DiskFreeBytes, r.DiskTotalBytes)
	}
	if r.HTTPStatus != http.StatusNoContent || r.HTTPLatency <= 0 || r.HTTPError != "" {
		t.Errorf("HTTP %d in %v (%q), want 204", r.HTTPStatus, r.HTTPLatency, r.HTTPError)
	}
}

// The strict host-key policy (the default): a server with no pinned key is
// refused before any connection is opened, so a man in the middle of the
// first connection is never trusted; a pin may be the key or its SHA-256
// fingerprint, and a wrong fingerprint is refused like a wrong key.
func TestProbeStrictHostKeyPolicy(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	other, _ := genKey(t)
	ctx := t.Context()
	_, err := b.probe.Probe(ctx, b.target(""))
	if !errors.Is(err, drivers.ErrHostKeyUnpinned) || !errors.Is(err, drivers.ErrHostKeyMismatch) || errors.Is(err, drivers.ErrUnreachable) {
		t.Fatalf("unpinned server: err = %v, want ErrHostKeyUnpinned (a mismatch, not unreachable)", err)
	}
	if n := b.dials.n.Load(); n != 0 {
		t.Fatalf("%d dials to an unpinned server under the strict policy, want none", n)
	}
	r, err := b.probe.Probe(ctx, b.target(fingerprint(t, b.sshd.HostKey)))
	if err != nil || r.HostKey != b.sshd.HostKey {
		t.Fatalf("fingerprint pin: HostKey %q, err %v; want the full key %q", r.HostKey, err, b.sshd.HostKey)
	}
	if _, err := b.probe.Probe(ctx, b.target(authorized(other.PublicKey()))); !errors.Is(err, drivers.ErrHostKeyMismatch) {
		t.Fatalf("wrong key: %v, want ErrHostKeyMismatch", err)
	}
	if _, err := b.probe.Probe(ctx, b.target(gossh.FingerprintSHA256(other.PublicKey()))); !errors.Is(err, drivers.ErrHostKeyMismatch) {
		t.Fatalf("wrong fingerprint: %v, want ErrHostKeyMismatch", err)
	}
	if _, err := b.probe.Probe(ctx, b.target("SHA256:short")); err == nil || errors.Is(err, drivers.ErrUnreachable) {
		t.Fatalf("malformed fingerprint: %v, want a plain error", err)
	}
}

func TestProbeHostKeys(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *ssh.Config) { c.TrustOnFirstUse = true })
	other, _ := genKey(t)
	ctx := t.Context()

	// Trust on first use (opt-in): no pin, the key seen is returned.
	r, err := b.probe.Probe(ctx, b.target(""))
	if err != nil || r.HostKey != b.sshd.HostKey {
		t.Fatalf("TOFU: HostKey %q, err %v; want %q", r.HostKey, err, b.sshd.HostKey)
	}
	// Pinned (with a comment, as operators paste it): accepted, pooled.
	if _, err := b.probe.Probe(ctx, b.target(b.sshd.HostKey+" root@vps")); err != nil {
		t.Fatalf("pinned key refused: %v", err)
	}
	if n := b.dials.n.Load(); n != 1 {
		t.Errorf("%d dials for two checks, want 1 (pooled)", n)
	}
	// A changed key is refused, and the pooled connection (authenticated to
	// another key) is not reused for it.
	_, err = b.probe.Probe(ctx, b.target(authorized(other.PublicKey())))
	if !errors.Is(err, drivers.ErrHostKeyMismatch) || errors.Is(err, drivers.ErrUnreachable) {
		t.Fatalf("changed key: err = %v, want ErrHostKeyMismatch only", err)
	}
	if n := b.dials.n.Load(); n != 2 {
		t.Errorf("%d dials, want 2: a mismatching pin must dial and check", n)
	}
	// Through a breaker, a mismatch is never turned into "open".
	reg, err := breaker.New(breaker.Config{Failures: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	wrapped := reg.Wrap(b.probe)
	for range 3 {
		if _, err := wrapped.Probe(ctx, b.target(authorized(other.PublicKey()))); !errors.Is(err, drivers.ErrHostKeyMismatch) {
			t.Fatalf("through breaker: %v, want ErrHostKeyMismatch", err)
		}
	}
	// A malformed pin is a plain error, not a reason to trust.
	if _, err := b.probe.Probe(ctx, b.target("ssh-ed25519 !!!")); err == nil || errors.Is(err, drivers.ErrUnreachable) {
		t.Errorf("malformed pin: err = %v", err)
	}
}

func TestProbeReusesAndRedials(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := t.Context()
	first, err := b.probe.Probe(ctx, b.target(b.sshd.HostKey))
	if err != nil {
		t.Fatal(err)
	}
	second, err := b.probe.Probe(ctx, b.target(b.sshd.HostKey))
	if err != nil {
		t.Fatal(err)
	}
	if n := b.dials.n.Load(); n != 1 || b.probe.PooledConns() != 1 {
		t.Fatalf("dials %d pooled %d, want 1 and 1", n, b.probe.PooledConns())
	}
	if second.ConnectLatency >= first.ConnectLatency {
		t.Errorf("reused connection took %v, fresh one %v", second.ConnectLatency, first.ConnectLatency)
	}
	// Break the connection under the pool: the next check redials and works.
	b.dials.mu.Lock()
	_ = b.dials.conns[0].Close()
	b.dials.mu.Unlock()
	if _, err := b.probe.Probe(ctx, b.target(b.sshd.HostKey)); err != nil {
		t.Fatalf("after a broken connection: %v", err)
	}
	if n := b.dials.n.Load(); n != 2 {
		t.Errorf("dials %d, want 2", n)
	}
	// Concurrent checks of one server share one connection.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := b.probe.Probe(ctx, b.target(b.sshd.HostKey)); err != nil {
				t.Errorf("concurrent: %v", err)
			}
		})
	}
	wg.Wait()
	if n := b.dials.n.Load(); n != 2 {
		t.Errorf("dials %d after concurrent checks, want still 2", n)
	}
	_ = b.probe.Close()
	if _, err := b.probe.Probe(ctx, b.target(b.sshd.HostKey)); err == nil {
		t.Error("Probe after Close succeeded")
	}
}

func TestProbeIdleTimeoutClosesConnection(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *ssh.Config) { c.IdleTimeout = 100 * time.Millisecond })
	if _, err := b.probe.Probe(t.Context(), b.target(b.sshd.HostKey)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for b.probe.PooledConns() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("connection still pooled after idle timeout")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestProbeUnreachable(t *testing.T) {
	t.Parallel()
	const dialTimeout = 400 * time.Millisecond
	// Trust on first use, so the probe dials servers that have no key to pin.
	b := setup(t, func(c *ssh.Config) { c.DialTimeout, c.TrustOnFirstUse = dialTimeout, true })
	ctx := t.Context()

	// An unused port: refused at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	start := time.Now()
	_, err = b.probe.Probe(ctx, drivers.HealthTarget{Server: drivers.Server{ID: "vps_closed", IPAddress: "127.0.0.1", SSHPort: closedPort}})
	if !errors.Is(err, drivers.ErrUnreachable) {
		t.Fatalf("closed port: %v", err)
	}
	if d := time.Since(start); d > dialTimeout/2 {
		t.Errorf("closed port took %v", d)
	}

	// A black hole: accepts and never speaks.
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hole.Close() })
	go func() {
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() })
		}
	}()
	holeTarget := drivers.HealthTarget{Server: drivers.Server{ID: "vps_hole", IPAddress: "127.0.0.1", SSHPort: hole.Addr().(*net.TCPAddr).Port}}
	reg, err := breaker.New(breaker.Config{Failures: 2, OpenTimeout: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	wrapped := reg.Wrap(b.probe)
	before := b.dials.n.Load()
	for i := range 2 {
		start := time.Now()
		_, err := wrapped.Probe(ctx, holeTarget)
		d := time.Since(start)
		if !errors.Is(err, drivers.ErrUnreachable) {
			t.Fatalf("black hole check %d: %v", i, err)
		}
		if d < dialTimeout-50*time.Millisecond || d > dialTimeout+time.Second {
			t.Errorf("black hole check %d took %v, want about DialTimeout %v", i, d, dialTimeout)
		}
	}
	start = time.Now()
	for range 100 {
		_, err := wrapped.Probe(ctx, holeTarget)
		if !errors.Is(err, drivers.ErrUnreachable) || !errors.Is(err, gobreaker.ErrOpenState) {
			t.Fatalf("open breaker: %v", err)
		}
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("100 checks of an open breaker took %v", d)
	}
	if n := b.dials.n.Load() - before; n != 2 {
		t.Errorf("%d dials for 102 checks of a dead server, want 2", n)
	}
	if got := reg.States()["vps_hole"]; got != breaker.StateOpen {
		t.Errorf("state %q", got)
	}

	// Cancellation is honoured during the handshake.
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = b.probe.Probe(cctx, holeTarget)
	if err == nil || time.Since(start) > dialTimeout/2 {
		t.Errorf("cancelled check returned %v after %v", err, time.Since(start))
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keyPath := dir + "/id"
	if err := os.WriteFile(keyPath, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LXNlY3JldA==\n-----END OPENSSH PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ssh.New(ssh.Config{KeyFile: keyPath, Logger: slog.Default()})
	if err == nil || strings.Contains(err.Error(), "c2VjcmV0") {
		t.Errorf("bad key file: %v (must fail without quoting the key)", err)
	}
	_, err = ssh.New(ssh.Config{DialTimeout: -1})
	for _, want := range []string{"Signer", "DialTimeout", "Logger"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
	_, pemBytes := genKey(t)
	if err := os.WriteFile(keyPath, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := ssh.New(ssh.Config{KeyFile: keyPath, Logger: slog.Default()})
	if err != nil {
		t.Fatalf("good key file: %v", err)
	}
	_ = p.Close()
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}
