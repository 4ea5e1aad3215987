// Package fleetsim simulates a fleet of VPS servers on loopback, to prove that
// a health sweep scales: one process serves thousands of servers, each on its
// own address 127.1.x.y (all of 127.0.0.0/8 is loopback on Linux, so no
// configuration is needed), each answering SSH with drivers/ssh.ProbeCommand's
// synthetic /proc-like output and HTTP as nginx would. Two shared wildcard
// listeners serve them all and tell servers apart by the address dialled (see
// listenAll for why). Some servers are dead: closed (their port is one nothing
// listens on: connection refused) or black holes (the connection is accepted
// and never spoken to, so a client waits for its dial timeout).
//
// Sweep checks a list of targets with bounded concurrency, and RunWorker is
// the loop of a sweep worker process driven over stdin/stdout, so a test can
// run two real worker processes against one fleet. It is test tooling: no
// production code imports it.
package fleetsim

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/chomhq/chom/drivers"
	sshprobe "github.com/chomhq/chom/drivers/ssh"
)

// Kinds of simulated server.
const (
	KindLive      = "live"
	KindClosed    = "closed"    // nothing listens: connection refused
	KindBlackhole = "blackhole" // accepts, never speaks
)

// Config configures a Fleet.
type Config struct {
	// Size is the number of servers, 1..MaxSize.
	Size int
	// First is the index of the fleet's first server (default 0). Fleets in
	// several processes serve one larger fleet when each takes its own range
	// of indexes (so of addresses and IDs): a process holds a descriptor per
	// connection, and may hold only so many.
	First int
	// ClientKey is the private key (OpenSSH PEM) the servers accept; empty
	// means a fresh one. Fleets serving one larger fleet share it.
	ClientKey []byte
	// ClosedEvery makes every n-th server (index%n == n-1) a closed port;
	// 0 means none.
	ClosedEvery int
	// BlackholeEvery makes every n-th server (index%n == n/2) a black hole,
	// unless it is already closed; 0 means none.
	BlackholeEvery int
	// Logger is required.
	Logger *slog.Logger
}

// Validate reports every problem with c at once, or nil.
func (c Config) Validate() error {
	var errs []error
	if c.Size < 1 || c.First < 0 || c.First+c.Size > MaxSize {
		errs = append(errs, fmt.Errorf("First %d and Size %d: want 1 ≤ Size and First+Size ≤ %d", c.First, c.Size, MaxSize))
	}
	if c.ClosedEvery < 0 || c.BlackholeEvery < 0 {
		errs = append(errs, errors.New("ClosedEvery and BlackholeEvery must not be negative"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("Logger is required"))
	}
	return errors.Join(errs...)
}

// MaxSize bounds a fleet: its addresses, 127.1.0.1 onwards, stay within
// 127.0.0.0/8 and its IDs within six digits. Every server of a fleet shares
// two listeners, so the size costs descriptors only for the connections
// clients open (see RaiseFileLimit).
const MaxSize = 999_999

// Server is one simulated server.
type Server struct {
	Target drivers.HealthTarget
	Kind   string
	// Load1 is the 1-minute load it reports at start (live servers only;
	// SetLoad changes it).
	Load1 float64
}

// Fleet is a running simulated fleet. Close stops it.
type Fleet struct {
	// Servers are in index order; Servers[k] is server First+k and listens
	// on Addr(First+k).
	Servers []Server
	// SSHPort and HTTPPort are the same on every address.
	SSHPort, HTTPPort int
	// HostKey is the host key every server presents (authorized_keys form).
	HostKey string
	// ClientKeyPEM is the private key the servers accept (OpenSSH PEM), for
	// the probing side; it is test material, generated per fleet.
	ClientKeyPEM []byte

	log       *slog.Logger
	sshConfig *gossh.ServerConfig
	httpSrv   *http.Server
	listeners []net.Listener
	byIP      map[string]int // server index by address

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup

	loads                []atomic.Uint64 // each server's Load1, as float64 bits
	handshakes, sessions atomic.Uint64
}

// SetLoad makes Servers[i] report load1 as its 1-minute load from now on.
func (f *Fleet) SetLoad(i int, load1 float64) { f.loads[i].Store(math.Float64bits(load1)) }

// Load returns the 1-minute load Servers[i] reports now.
func (f *Fleet) Load(i int) float64 { return math.Float64frombits(f.loads[i].Load()) }

// Stats counts what the fleet served since it started.
type Stats struct {
	// Handshakes counts SSH connections that completed the handshake (each
	// a client dial: a pooled connection is not counted again).
	Handshakes uint64 `json:"handshakes"`
	// Sessions counts probe commands answered.
	Sessions uint64 `json:"sessions"`
}

// Stats returns the fleet's counts so far.
func (f *Fleet) Stats() Stats {
	return Stats{Handshakes: f.handshakes.Load(), Sessions: f.sessions.Load()}
}

// wantFiles is the descriptor limit RaiseFileLimit asks for: a fleet of n
// servers needs about 2n descriptors for listeners plus 2n for pooled
// connections, and a worker 2 per server it checks.
const wantFiles = 1 << 18

// RaiseFileLimit raises RLIMIT_NOFILE and returns the new soft limit. It asks
// for wantFiles, which needs CAP_SYS_RESOURCE when above the hard limit (tests
// run as root); without it, it settles for the hard limit.
func RaiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur >= wantFiles {
		return lim.Cur, nil
	}
	want := syscall.Rlimit{Cur: max(lim.Max, wantFiles), Max: max(lim.Max, wantFiles)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return want.Cur, nil
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("setrlimit: %w", err)
	}
	return lim.Cur, nil
}

// ServerID returns the VPS ID of server i ("vps_sim000042"): IDs sort in
// index order.
func ServerID(i int) string { return fmt.Sprintf("vps_sim%06d", i) }

// Addr returns the loopback address of server i.
func Addr(i int) string {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, binary.BigEndian.Uint32(net.IPv4(127, 1, 0, 0).To4())+uint32(i)+1)
	return ip.String()
}

// Start starts a fleet. It fails when a listener cannot be bound (raise the
// file limit first with RaiseFileLimit).
func Start(cfg Config) (*Fleet, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("fleetsim: invalid config: %w", err)
	}
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	hostSigner, err := gossh.NewSignerFromKey(hostPriv)
	if err != nil {
		return nil, err
	}
	clientPEM := cfg.ClientKey
	if len(clientPEM) == 0 {
		if clientPEM, err = NewClientKey(); err != nil {
			return nil, err
		}
	}
	clientSigner, err := gossh.ParsePrivateKey(clientPEM)
	if err != nil {
		return nil, fmt.Errorf("fleetsim: client key: %w", err)
	}
	clientKey := clientSigner.PublicKey()
	f := &Fleet{
		HostKey:      strings.TrimSpace(string(gossh.MarshalAuthorizedKey(hostSigner.PublicKey()))),
		ClientKeyPEM: clientPEM,
		log:          cfg.Logger,
		conns:        map[net.Conn]struct{}{},
	}
	f.sshConfig = &gossh.ServerConfig{
		PublicKeyCallback: func(_ gossh.ConnMetadata, k gossh.PublicKey) (*gossh.Permissions, error) {
			if string(k.Marshal()) == string(clientKey.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	f.sshConfig.AddHostKey(hostSigner)

	// One port pair for every address: ask the kernel for free ones on the
	// first address, then bind the same on all.
	for attempt := 0; ; attempt++ {
		f.httpSrv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Server", "nginx")
			_, _ = io.WriteString(w, "ok\n")
		})}
		err := f.listenAll(cfg)
		if err == nil {
			break
		}
		f.Close()
		if attempt == 4 {
			return nil, fmt.Errorf("fleetsim: %w", err)
		}
		f.listeners, f.closed = nil, false
	}
	return f, nil
}

// NewClientKey returns a fresh ed25519 private key in OpenSSH PEM form.
func NewClientKey() ([]byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := gossh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(block), nil
}

// listenAll binds one SSH and one HTTP listener for the whole fleet, on the
// wildcard address, and tells the servers apart by the address a connection
// was made to. One listener per server would need 20,000 descriptors for
// 10,000 servers before the first connection, beyond the 20,000 a process may
// hold here without CAP_SYS_RESOURCE. Connections to any address outside
// 127.0.0.0/8 are closed at once: the simulator serves loopback only.
// A closed server's target names a port nothing listens on, so its dial is
// refused for real.
func (f *Fleet) listenAll(cfg Config) error {
	sl, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		return err
	}
	f.listeners = append(f.listeners, sl)
	hl, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		return err
	}
	f.listeners = append(f.listeners, hl)
	f.SSHPort, f.HTTPPort = sl.Addr().(*net.TCPAddr).Port, hl.Addr().(*net.TCPAddr).Port
	closed, err := net.Listen("tcp4", net.JoinHostPort(Addr(cfg.First), "0"))
	if err != nil {
		return err
	}
	closedPort := closed.Addr().(*net.TCPAddr).Port
	_ = closed.Close()

	f.Servers = make([]Server, cfg.Size)
	f.loads = make([]atomic.Uint64, cfg.Size)
	f.byIP = make(map[string]int, cfg.Size)
	for k := range cfg.Size {
		i := cfg.First + k
		ip := Addr(i)
		kind, port := KindLive, f.SSHPort
		switch {
		case cfg.ClosedEvery > 0 && i%cfg.ClosedEvery == cfg.ClosedEvery-1:
			kind, port = KindClosed, closedPort
		case cfg.BlackholeEvery > 0 && i%cfg.BlackholeEvery == cfg.BlackholeEvery/2:
			kind = KindBlackhole
		}
		f.Servers[k] = Server{
			Target: drivers.HealthTarget{
				Server:  drivers.Server{ID: ServerID(i), Hostname: fmt.Sprintf("sim%06d.test", i), IPAddress: ip, SSHPort: port},
				HostKey: f.HostKey,
			},
			Kind:  kind,
			Load1: float64(i%400) / 100,
		}
		f.loads[k].Store(math.Float64bits(f.Servers[k].Load1))
		f.byIP[ip] = k
	}
	f.httpSrv.SetKeepAlivesEnabled(false) // a pooled HTTP connection per server would double the descriptors
	f.httpSrv.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateNew && !loopback(c) {
			_ = c.Close()
		}
	}
	f.wg.Go(func() { _ = f.httpSrv.Serve(hl) })
	f.wg.Go(func() { f.acceptLoop(sl) })
	return nil
}

func loopback(c net.Conn) bool {
	a, ok := c.LocalAddr().(*net.TCPAddr)
	return ok && a.IP.IsLoopback()
}

// track records c so Close can close it; false when the fleet is closing.
func (f *Fleet) track(c net.Conn, add bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !add {
		delete(f.conns, c)
		return true
	}
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *Fleet) acceptLoop(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			f.log.Warn("fleetsim accept", "error", err)
			time.Sleep(10 * time.Millisecond) // e.g. EMFILE: wait for descriptors
			continue
		}
		i, ok := -1, loopback(c)
		if ok {
			i, ok = f.byIP[c.LocalAddr().(*net.TCPAddr).IP.String()]
		}
		if !ok || !f.track(c, true) {
			_ = c.Close()
			continue
		}
		if f.Servers[i].Kind == KindBlackhole {
			continue // held open, never answered, closed by Close
		}
		f.wg.Go(func() {
			defer f.track(c, false)
			defer c.Close()
			f.serveSSH(c, i)
		})
	}
}

// serveSSH answers exec requests of ProbeCommand on one connection.
func (f *Fleet) serveSSH(c net.Conn, i int) {
	_, chans, reqs, err := gossh.NewServerConn(c, f.sshConfig)
	if err != nil {
		return
	}
	f.handshakes.Add(1)
	go gossh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(gossh.UnknownChannelType, "only sessions")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		go f.session(ch, creqs, i)
	}
}

func (f *Fleet) session(ch gossh.Channel, reqs <-chan *gossh.Request, i int) {
	defer ch.Close()
	for req := range reqs {
		if req.Type != "exec" {
			_ = req.Reply(false, nil)
			continue
		}
		var payload struct{ Command string }
		if err := gossh.Unmarshal(req.Payload, &payload); err != nil {
			_ = req.Reply(false, nil)
			return
		}
		_ = req.Reply(true, nil)
		status := uint32(0)
		if payload.Command == sshprobe.ProbeCommand {
			f.sessions.Add(1)
			_, _ = io.WriteString(ch, Output(f.Load(i)))
		} else {
			_, _ = io.WriteString(ch.Stderr(), "sh: command not allowed on the simulator\n")
			status = 127
		}
		_, _ = ch.SendRequest("exit-status", false, gossh.Marshal(struct{ Status uint32 }{status}))
		return
	}
}

// Output is the synthetic answer of a server whose 1-minute load is load1.
func Output(load1 float64) string {
	return fmt.Sprintf(`@@loadavg
%.2f 0.50 0.25 1/123 4567
@@nproc
2
@@meminfo
MemTotal:        4028440 kB
MemFree:          512000 kB
MemAvailable:    3012000 kB
@@df
Filesystem        1-blocks       Used   Available Capacity Mounted on
/dev/vda1      42140499968 9342193664 30971625472      24%% /
`, load1)
}

// Close stops every listener and connection of the fleet and waits for its
// goroutines.
func (f *Fleet) Close() {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	for _, l := range f.listeners {
		_ = l.Close()
	}
	_ = f.httpSrv.Close()
	f.wg.Wait()
}

// Counts returns how many servers are of each kind.
func (f *Fleet) Counts() map[string]int {
	out := map[string]int{}
	for _, s := range f.Servers {
		out[s.Kind]++
	}
	return out
}
