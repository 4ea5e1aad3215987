package testenv

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// serverStartTimeout bounds how long a private server may take to answer
// after it is started (PostgreSQL replays its WAL after a kill).
const serverStartTimeout = 60 * time.Second

// serverStopTimeout bounds a clean stop before the process is killed.
const serverStopTimeout = 20 * time.Second

// missingBinary skips the test, or fails it when CI is set.
func missingBinary(tb testing.TB, what, install string) {
	tb.Helper()
	if os.Getenv(EnvCI) != "" {
		tb.Fatalf("testenv: %s not found and CI=%q: fault tests must run in CI; install %s", what, os.Getenv(EnvCI), install)
	}
	tb.Skipf("testenv: %s not found; install %s", what, install)
}

// freePort returns a loopback port nobody listens on right now. Another
// process may take it before the server binds it; the starters retry.
func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testenv: find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// serverProcess is one run of a server binary: the process and a channel
// closed when it has exited.
type serverProcess struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // from Wait, once exited is closed
}

func startProcess(cmd *exec.Cmd) (*serverProcess, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &serverProcess{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *serverProcess) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// signal sends sig to the process, or to its whole process group when group is
// set, and waits up to timeout for it to exit. It reports whether it exited.
func (p *serverProcess) signal(sig syscall.Signal, group bool, timeout time.Duration) bool {
	if !p.running() {
		return true
	}
	pid := p.cmd.Process.Pid
	if group {
		pid = -pid
	}
	_ = syscall.Kill(pid, sig)
	select {
	case <-p.exited:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Tail returns the last n lines of the file at path, for failure messages.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// RedisServerConfig configures a private redis-server.
type RedisServerConfig struct {
	// AppendOnly turns on AOF persistence with appendfsync always, as the
	// queue's Redis runs in production (DESIGN.md): every acknowledged write
	// survives a kill.
	AppendOnly bool
	// Password, when set, is required of every client (requirepass); URL
	// carries it.
	Password string
	// ClusterBus, when set, starts the server as a Redis Cluster node with
	// its cluster bus on a free port of its own (BusAddr) rather than on
	// port+10000, which may be taken or out of range.
	ClusterBus bool
	// Args are further redis-server options, e.g. "--cluster-node-timeout",
	// "1000".
	Args []string
}

// RedisServer is a redis-server process private to one test.
type RedisServer struct {
	// Addr is 127.0.0.1:port; it stays the same across Stop and Start.
	Addr string
	// URL is redis://Addr/0.
	URL string
	// Dir holds the server's data (the AOF) and its log, redis.log.
	Dir string
	// BusAddr is the cluster bus's 127.0.0.1:port (with ClusterBus only).
	BusAddr string

	bin      string
	args     []string
	password string

	mu   sync.Mutex
	proc *serverProcess
}

// StartRedisServer starts a redis-server on a free loopback port with its
// files in a new directory, and stops it and removes the directory when the
// test ends. It skips the test when redis-server is not installed (fails it
// when CI is set) and fails it when the server does not start.
func StartRedisServer(tb testing.TB, cfg RedisServerConfig) *RedisServer {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		missingBinary(tb, "redis-server", "redis-server (apt-get install redis-server)")
	}
	dir, err := os.MkdirTemp("", "chom-redis-")
	if err != nil {
		tb.Fatalf("testenv: redis dir: %v", err)
	}
	r := &RedisServer{Dir: dir, bin: bin, password: cfg.Password}
	tb.Cleanup(func() {
		r.mu.Lock()
		p := r.proc
		r.mu.Unlock()
		if p != nil && !p.signal(syscall.SIGTERM, false, serverStopTimeout) {
			p.signal(syscall.SIGKILL, false, serverStopTimeout)
		}
		if tb.Failed() {
			tb.Logf("testenv: redis-server log (last lines):\n%s", Tail(filepath.Join(dir, "redis.log"), 30))
		}
		_ = os.RemoveAll(dir)
	})
	for attempt := 1; ; attempt++ {
		port := freePort(tb)
		r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		r.URL = "redis://" + r.Addr + "/0"
		if cfg.Password != "" {
			r.URL = (&url.URL{Scheme: "redis", User: url.UserPassword("", cfg.Password), Host: r.Addr, Path: "/0"}).String()
		}
		r.args = []string{
			"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--protected-mode", "yes",
			"--dir", dir, "--logfile", filepath.Join(dir, "redis.log"), "--daemonize", "no",
			"--save", "", "--databases", "16",
		}
		if cfg.Password != "" {
			// masterauth too: a server that comes back as a replica (a killed
			// Sentinel master, which the sentinels turn into the new master's
			// replica) authenticates to its master with the same password.
			r.args = append(r.args, "--requirepass", cfg.Password, "--masterauth", cfg.Password)
		}
		if cfg.AppendOnly {
			r.args = append(r.args, "--appendonly", "yes", "--appendfsync", "always")
		} else {
			r.args = append(r.args, "--appendonly", "no")
		}
		if cfg.ClusterBus {
			bus := freePort(tb)
			r.BusAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(bus))
			r.args = append(r.args, "--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(bus),
				"--cluster-config-file", filepath.Join(dir, "nodes.conf"))
		}
		r.args = append(r.args, cfg.Args...)
		err := r.start()
		if err == nil {
			return r
		}
		if attempt == 5 {
			tb.Fatalf("testenv: redis-server did not start: %v\n%s", err, Tail(filepath.Join(dir, "redis.log"), 30))
		}
	}
}

func (r *RedisServer) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil && r.proc.running() {
		return errors.New("already running")
	}
	p, err := startProcess(exec.Command(r.bin, r.args...))
	if err != nil {
		return err
	}
	r.proc = p
	opts := &redis.Options{Addr: r.Addr, Password: r.password, DialTimeout: time.Second, MaxRetries: -1}
	c := redis.NewClient(opts)
	defer c.Close()
	deadline := time.Now().Add(serverStartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		switch {
		case err == nil:
			return nil
		case !p.running():
			return fmt.Errorf("redis-server exited: %v", p.err)
		case time.Now().After(deadline):
			p.signal(syscall.SIGKILL, false, serverStopTimeout)
			return fmt.Errorf("no answer on %s after %s: %v", r.Addr, serverStartTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Start starts the server again after Stop or Kill, on the same port with the
// same directory (so an AOF is replayed). It fails the test when the server
// does not answer.
func (r *RedisServer) Start(tb testing.TB) {
	tb.Helper()
	if err := r.start(); err != nil {
		tb.Fatalf("testenv: restart redis-server on %s: %v\n%s", r.Addr, err, Tail(filepath.Join(r.Dir, "redis.log"), 30))
	}
}

// Stop shuts the server down cleanly (SIGTERM: clients are disconnected, the
// AOF is flushed) and waits for it to exit.
func (r *RedisServer) Stop(tb testing.TB) {
	tb.Helper()
	r.stop(tb, syscall.SIGTERM)
}

// Kill kills the server with SIGKILL, as a crash or an OOM kill would, and
// waits for it to exit.
func (r *RedisServer) Kill(tb testing.TB) {
	tb.Helper()
	r.stop(tb, syscall.SIGKILL)
}

func (r *RedisServer) stop(tb testing.TB, sig syscall.Signal) {
	tb.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil || !r.proc.running() {
		tb.Fatalf("testenv: redis-server on %s is not running", r.Addr)
	}
	if !r.proc.signal(sig, false, serverStopTimeout) {
		tb.Fatalf("testenv: redis-server on %s did not exit after %v", r.Addr, sig)
	}
}

// Client returns a client of database 0, closed when the test ends.
func (r *RedisServer) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// PostgresServer is a PostgreSQL cluster private to one test: its own data
// directory and postmaster on a loopback port, user "chom" with trust
// authentication, database "postgres".
type PostgresServer struct {
	// Addr is 127.0.0.1:port; it stays the same across Stop and Start.
	Addr string
	// URL connects as chom to the database postgres, without TLS.
	URL string
	// Dir holds the data directory (data/), the socket directory (sock/) and
	// the server log (server.log).
	Dir string

	bin  string              // directory of initdb and postgres
	cred *syscall.Credential // the postgres user when the test runs as root

	mu   sync.Mutex
	proc *serverProcess
}

// StartPostgresServer creates a PostgreSQL cluster with initdb in a new
// directory and starts it on a free loopback port; it is stopped and the
// directory removed when the test ends. Running as root (as CI does), the
// cluster belongs to the postgres user, which is created when missing, as
// scripts/test-services.sh does: PostgreSQL refuses to run as root. It skips
// the test when the server binaries are missing (fails it when CI is set) and
// fails it when the cluster cannot be created or does not start.
func StartPostgresServer(tb testing.TB) *PostgresServer {
	tb.Helper()
	bin, ok := findPostgresBin()
	if !ok {
		missingBinary(tb, "PostgreSQL server binaries (initdb, postgres)", "postgresql (apt-get install postgresql)")
	}
	// Not tb.TempDir: the postgres user must be able to reach the directory,
	// and the socket path must stay under the kernel's 107-byte limit.
	dir, err := os.MkdirTemp("", "chom-pg-")
	if err != nil {
		tb.Fatalf("testenv: postgres dir: %v", err)
	}
	s := &PostgresServer{Dir: dir, bin: bin}
	tb.Cleanup(func() {
		s.mu.Lock()
		p := s.proc
		s.mu.Unlock()
		// SIGINT is PostgreSQL's fast shutdown; SIGQUIT its immediate one.
		if p != nil && !p.signal(syscall.SIGINT, false, serverStopTimeout) {
			p.signal(syscall.SIGKILL, true, serverStopTimeout)
		}
		if tb.Failed() {
			tb.Logf("testenv: postgres log (last lines):\n%s", Tail(filepath.Join(dir, "server.log"), 30))
		}
		_ = os.RemoveAll(dir)
	})
	if os.Geteuid() == 0 {
		s.cred, err = postgresUser()
		if err != nil {
			tb.Fatalf("testenv: %v", err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sock"), 0o700); err != nil {
		tb.Fatalf("testenv: postgres dir: %v", err)
	}
	if s.cred != nil {
		if err := chownTree(dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			tb.Fatalf("testenv: postgres dir: %v", err)
		}
	}
	data := filepath.Join(dir, "data")
	initdb := s.command(filepath.Join(bin, "initdb"), "-D", data, "--username=chom", "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		tb.Fatalf("testenv: initdb: %v\n%s", err, out)
	}
	for attempt := 1; ; attempt++ {
		port := freePort(tb)
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.URL = "postgres://chom@" + s.Addr + "/postgres?sslmode=disable"
		conf := fmt.Sprintf(`
# chom testenv: a throwaway cluster of one test
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
max_connections = 100
shared_buffers = 32MB
fsync = off
synchronous_commit = on
full_page_writes = off
log_min_messages = warning
log_line_prefix = '%%m [%%p] '
`, port, filepath.Join(dir, "sock"))
		// A later setting wins, so each attempt's port overrides the last.
		f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
		if err == nil {
			_, err = f.WriteString(conf)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			tb.Fatalf("testenv: postgresql.conf: %v", err)
		}
		err = s.start()
		if err == nil {
			return s
		}
		if attempt == 5 {
			tb.Fatalf("testenv: postgres did not start: %v\n%s", err, Tail(filepath.Join(dir, "server.log"), 30))
		}
	}
}

// findPostgresBin finds the directory of initdb and postgres the way
// scripts/test-services.sh does: pg_config --bindir, then the newest
// /usr/lib/postgresql/*/bin, then initdb on PATH.
func findPostgresBin() (string, bool) {
	ok := func(d string) bool {
		for _, b := range []string{"initdb", "postgres"} {
			if st, err := os.Stat(filepath.Join(d, b)); err != nil || st.IsDir() {
				return false
			}
		}
		return true
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if d := strings.TrimSpace(string(out)); ok(d) {
			return d, true
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range dirs {
		if ok(d) {
			return d, true
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil && ok(filepath.Dir(real)) {
			return filepath.Dir(real), true
		}
	}
	return "", false
}

// postgresUser returns the credential of the postgres user, creating it (as
// scripts/test-services.sh does) when it does not exist.
func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		out, aerr := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
			"--shell", "/usr/sbin/nologin", "postgres").CombinedOutput()
		if aerr != nil {
			return nil, fmt.Errorf("create user postgres: %v: %s", aerr, bytes.TrimSpace(out))
		}
		if u, err = user.Lookup("postgres"); err != nil {
			return nil, fmt.Errorf("look up user postgres: %w", err)
		}
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("user postgres: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

func chownTree(root string, uid, gid int) error {
	return filepath.Walk(root, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}

// command builds a PostgreSQL command that runs as the cluster's owner, in a
// process group of its own (so Kill reaches every backend).
func (s *PostgresServer) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: s.cred}
	cmd.Dir = s.Dir
	return cmd
}

func (s *PostgresServer) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil && s.proc.running() {
		return errors.New("already running")
	}
	logf, err := os.OpenFile(filepath.Join(s.Dir, "server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	cmd := s.command(filepath.Join(s.bin, "postgres"), "-D", filepath.Join(s.Dir, "data"))
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := startProcess(cmd)
	if err != nil {
		return err
	}
	s.proc = p
	db, err := sql.Open("pgx", s.URL+"&connect_timeout=2")
	if err != nil {
		return err
	}
	defer db.Close()
	deadline := time.Now().Add(serverStartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := db.PingContext(ctx)
		cancel()
		switch {
		case err == nil:
			return nil
		case !p.running():
			return fmt.Errorf("postgres exited: %v", p.err)
		case time.Now().After(deadline):
			p.signal(syscall.SIGKILL, true, serverStopTimeout)
			return fmt.Errorf("no answer on %s after %s: %v", s.Addr, serverStartTimeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Start starts the server again after Stop or Kill, on the same port with the
// same data (after a Kill, PostgreSQL first recovers from its WAL). It fails
// the test when the server does not answer.
func (s *PostgresServer) Start(tb testing.TB) {
	tb.Helper()
	if err := s.start(); err != nil {
		tb.Fatalf("testenv: restart postgres on %s: %v\n%s", s.Addr, err, Tail(filepath.Join(s.Dir, "server.log"), 30))
	}
}

// Stop shuts the server down with PostgreSQL's fast shutdown (SIGINT: open
// transactions are rolled back, clients disconnected) and waits for it to exit.
func (s *PostgresServer) Stop(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || !s.proc.running() {
		tb.Fatalf("testenv: postgres on %s is not running", s.Addr)
	}
	if !s.proc.signal(syscall.SIGINT, false, serverStopTimeout) {
		tb.Fatalf("testenv: postgres on %s did not stop within %s", s.Addr, serverStopTimeout)
	}
}

// Kill kills the postmaster and every backend with SIGKILL, as a crash of the
// database's machine would (clients see their connections reset; Start then
// replays the WAL), and waits for all of them to exit.
func (s *PostgresServer) Kill(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || !s.proc.running() {
		tb.Fatalf("testenv: postgres on %s is not running", s.Addr)
	}
	// Each backend is a session leader of its own (PostgreSQL calls setsid),
	// so the postmaster's process group does not reach them: find them first.
	children := childProcesses(s.proc.cmd.Process.Pid)
	if !s.proc.signal(syscall.SIGKILL, false, serverStopTimeout) {
		tb.Fatalf("testenv: postgres on %s did not exit after SIGKILL", s.Addr)
	}
	deadline := time.Now().Add(serverStopTimeout)
	for _, pid := range children {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		// Gone, or a zombie until init reaps it: either way it holds nothing.
		for syscall.Kill(pid, 0) == nil && !zombie(pid) {
			if time.Now().After(deadline) {
				tb.Fatalf("testenv: postgres backend %d still running after SIGKILL", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// childProcesses returns the PIDs whose parent is pid, from /proc (Linux); nil
// where there is no /proc.
func childProcesses(pid int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		rest := string(b[bytes.LastIndexByte(b, ')')+1:])
		f := strings.Fields(rest)
		if len(f) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == pid {
			if child, err := strconv.Atoi(filepath.Base(filepath.Dir(st))); err == nil {
				out = append(out, child)
			}
		}
	}
	return out
}

// zombie reports whether pid has exited and waits to be reaped.
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true // gone
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}
