// Package vpsenv runs a throwaway "VPS" on loopback for tests of the SSH
// driver: a real OpenSSH sshd, nginx, php-fpm and MariaDB, each a child
// process of the test with its configuration, data and sockets in a temp
// directory, all stopped at cleanup. It is imported only from _test.go files.
//
// The servers are Debian 12's packages (openssh-server, nginx, php-fpm,
// mariadb-server, mariadb-client). When a binary is missing, or the test does
// not run as root (provisioning creates system users), Start skips the test
// on a developer machine and fails it when the CI variable is set, as
// internal/testenv does: CI never reports a green run without these tests.
package vpsenv

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/chomhq/chom/drivers/ssh"
)

// PHPVersion is the php-fpm the harness runs: Debian 12's default.
const PHPVersion = "8.2"

// Binaries the harness needs, and the Debian package of each.
var binaries = []struct{ path, pkg string }{
	{"/usr/sbin/sshd", "openssh-server"},
	{"/usr/sbin/nginx", "nginx"},
	{"/usr/sbin/php-fpm" + PHPVersion, "php-fpm"},
	{"/usr/sbin/mariadbd", "mariadb-server"},
	{"/usr/bin/mariadb-install-db", "mariadb-server"},
	{"/usr/bin/mariadb", "mariadb-client"},
	{"/usr/bin/mariadb-dump", "mariadb-client"},
}

// VPS is one running set of servers. Paths are absolute and made of
// [A-Za-z0-9._+-/] so they can go into nginx and php-fpm files.
type VPS struct {
	Dir string // everything lives below it (mode 0755, so nginx's workers get in)

	SSHAddr string       // 127.0.0.1:port of sshd
	SSHPort int          //
	HostKey string       // sshd's host key, authorized_keys form
	Client  gossh.Signer // a key sshd accepts for User
	User    string       // root

	HTTPPort int // nginx listens on 127.0.0.1:HTTPPort; unknown hosts get 404
	// HTTPSPort is the TLS port of the sites' HTTPS blocks (127.0.0.1); a
	// handshake for a name no site serves is refused (ssl_reject_handshake).
	HTTPSPort int

	// Layout directories (empty, created by Start).
	WebRoot, NginxAvailable, NginxEnabled, PHPPoolDir, RunDir, LogDir, StateDir, ChallengeDir string

	// Service control, as argv vectors.
	NginxCheck, NginxReload   []string
	PHPFPMCheck, PHPFPMReload []string
	MySQL, MySQLDump          []string // root over the unix socket
	MySQLSocket               string

	nginxMaster int // pid of nginx's master process
}

// PHPPoolDirPattern is PHPPoolDir with the version replaced by "{version}", as
// the SSH driver's Layout takes it.
func (v *VPS) PHPPoolDirPattern() string {
	return strings.Replace(v.PHPPoolDir, PHPVersion, "{version}", 1)
}

// SSHLayout points the SSH driver at v's directories and service commands,
// with nginx listening on v's HTTP port.
func (v *VPS) SSHLayout() ssh.Layout {
	return ssh.Layout{
		WebRoot: v.WebRoot, NginxAvailable: v.NginxAvailable, NginxEnabled: v.NginxEnabled,
		PHPPoolDir: v.PHPPoolDirPattern(), RunDir: v.RunDir, LogDir: v.LogDir, StateDir: v.StateDir,
		Listen:       []string{"127.0.0.1:" + strconv.Itoa(v.HTTPPort)},
		ListenTLS:    []string{"127.0.0.1:" + strconv.Itoa(v.HTTPSPort)},
		ChallengeDir: v.ChallengeDir, NginxVersion: []string{"/usr/sbin/nginx", "-v"},
		NginxCheck: v.NginxCheck, NginxReload: v.NginxReload,
		PHPFPMCheck: v.PHPFPMCheck, PHPFPMReload: v.PHPFPMReload,
		MySQL: v.MySQL, MySQLDump: v.MySQLDump,
	}
}

// need skips or fails tb (CI) with why.
func need(tb testing.TB, why string) {
	tb.Helper()
	if os.Getenv("CI") != "" {
		tb.Fatalf("%s, and CI=%q: the SSH driver must be tested against real servers", why, os.Getenv("CI"))
	}
	tb.Skip(why)
}

// Start runs sshd, nginx, php-fpm and MariaDB until tb ends. It takes a few
// seconds (MariaDB's data directory is initialised from scratch), so tests
// share one VPS through subtests.
func Start(tb testing.TB) *VPS {
	tb.Helper()
	var missing []string
	for _, b := range binaries {
		if _, err := os.Stat(b.path); err != nil {
			missing = append(missing, b.pkg)
		}
	}
	if len(missing) > 0 {
		need(tb, fmt.Sprintf("missing servers; apt-get install --no-install-recommends %s", strings.Join(missing, " ")))
	}
	if os.Geteuid() != 0 {
		need(tb, "the SSH driver tests run as root (provisioning creates system users)")
	}
	dir, err := os.MkdirTemp("", "vpsenv-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	v := &VPS{
		Dir:            dir,
		User:           "root",
		WebRoot:        filepath.Join(dir, "www"),
		NginxAvailable: filepath.Join(dir, "nginx", "sites-available"),
		NginxEnabled:   filepath.Join(dir, "nginx", "sites-enabled"),
		PHPPoolDir:     filepath.Join(dir, "php", PHPVersion, "pool.d"),
		RunDir:         filepath.Join(dir, "run"),
		LogDir:         filepath.Join(dir, "log"),
		StateDir:       filepath.Join(dir, "state"),
		ChallengeDir:   filepath.Join(dir, "acme"),
	}
	for _, d := range []string{v.WebRoot, v.NginxAvailable, v.NginxEnabled, v.PHPPoolDir, v.RunDir, v.LogDir, v.StateDir,
		filepath.Join(dir, "nginx", "conf"), filepath.Join(dir, "nginx", "logs"), filepath.Join(dir, "nginx", "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}

	// MariaDB initialises for several seconds: run it meanwhile.
	var (
		wg    sync.WaitGroup
		dbErr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		dbErr = v.startMariaDB(tb)
	}()
	errs := []error{v.startSSHD(tb), v.startNginx(tb), v.startPHPFPM(tb)}
	wg.Wait()
	if err := errors.Join(append(errs, dbErr)...); err != nil {
		tb.Fatalf("vpsenv: %v", err)
	}
	return v
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// spawn starts argv with output to logPath and stops it (SIGTERM, then
// SIGKILL after 5s) at cleanup.
func spawn(tb testing.TB, logPath string, argv ...string) (*exec.Cmd, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		_ = logf.Close()
	})
	return cmd, nil
}

// waitFor polls ok until it is true or 20s pass; the error carries logPath.
func waitFor(what, logPath string, ok func() bool) error {
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logPath)
			return fmt.Errorf("%s not ready within 20s; log:\n%s", what, out)
		}
		time.Sleep(25 * time.Millisecond)
	}
	return nil
}

func (v *VPS) write(name, content string, mode os.FileMode) (string, error) {
	p := filepath.Join(v.Dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	return p, os.WriteFile(p, []byte(content), mode)
}

func genKey() (gossh.Signer, []byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	block, err := gossh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, nil, err
	}
	signer, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, err
	}
	return signer, pem.EncodeToMemory(block), nil
}

func authorized(k gossh.PublicKey) string {
	return strings.TrimSpace(string(gossh.MarshalAuthorizedKey(k)))
}

func (v *VPS) startSSHD(tb testing.TB) error {
	// sshd refuses to start without its privilege separation directory,
	// which only the packaged service creates.
	_ = os.MkdirAll("/run/sshd", 0o755)
	host, hostPEM, err := genKey()
	if err != nil {
		return err
	}
	client, _, err := genKey()
	if err != nil {
		return err
	}
	hostKey, err := v.write("sshd/host_ed25519", string(hostPEM), 0o600)
	if err != nil {
		return err
	}
	auth, err := v.write("sshd/authorized_keys", authorized(client.PublicKey())+"\n", 0o600)
	if err != nil {
		return err
	}
	if v.SSHPort, err = freePort(); err != nil {
		return err
	}
	cfg, err := v.write("sshd/sshd_config", fmt.Sprintf(`ListenAddress 127.0.0.1
Port %d
HostKey %s
AuthorizedKeysFile %s
PidFile %s
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
LogLevel INFO
MaxStartups 100:30:200
MaxSessions 100
`, v.SSHPort, hostKey, auth, filepath.Join(v.Dir, "sshd", "sshd.pid")), 0o600)
	if err != nil {
		return err
	}
	logPath := filepath.Join(v.Dir, "sshd", "sshd.log")
	if _, err := spawn(tb, logPath, "/usr/sbin/sshd", "-D", "-e", "-f", cfg); err != nil {
		return err
	}
	v.SSHAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(v.SSHPort))
	v.HostKey = authorized(host.PublicKey())
	v.Client = client
	return waitFor("sshd", logPath, func() bool { return banner(v.SSHAddr) })
}

// banner reports whether an SSH server greets on addr.
func banner(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SSH-")
}

func (v *VPS) startNginx(tb testing.TB) error {
	var err error
	if v.HTTPPort, err = freePort(); err != nil {
		return err
	}
	if v.HTTPSPort, err = freePort(); err != nil {
		return err
	}
	prefix := filepath.Join(v.Dir, "nginx")
	params, err := os.ReadFile("/etc/nginx/fastcgi_params")
	if err != nil {
		return err
	}
	if _, err := v.write("nginx/conf/fastcgi_params", string(params), 0o644); err != nil {
		return err
	}
	tmp := filepath.Join(prefix, "tmp")
	conf, err := v.write("nginx/conf/nginx.conf", fmt.Sprintf(`user www-data;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log;
events { worker_connections 128; }
http {
    include /etc/nginx/mime.types;
    access_log off;
    client_body_temp_path %[2]s/body;
    fastcgi_temp_path %[2]s/fastcgi;
    proxy_temp_path %[2]s/proxy;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    server {
        listen 127.0.0.1:%[3]d default_server;
        return 404;
    }
    # A name no site serves gets no certificate (not the first site's).
    server {
        listen 127.0.0.1:%[5]d ssl default_server;
        ssl_reject_handshake on;
    }
    include %[4]s/*.conf;
}
`, prefix, tmp, v.HTTPPort, v.NginxEnabled, v.HTTPSPort), 0o644)
	if err != nil {
		return err
	}
	base := []string{"/usr/sbin/nginx", "-p", prefix, "-c", conf}
	v.NginxCheck = append(append([]string{}, base...), "-t", "-q")
	v.NginxReload = append(append([]string{}, base...), "-s", "reload")
	logPath := filepath.Join(prefix, "logs", "stderr.log")
	cmd, err := spawn(tb, logPath, append(append([]string{}, base...), "-g", "daemon off;")...)
	if err != nil {
		return err
	}
	v.nginxMaster = cmd.Process.Pid
	url := fmt.Sprintf("http://127.0.0.1:%d/", v.HTTPPort)
	return waitFor("nginx", logPath, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusNotFound
	})
}

func (v *VPS) startPHPFPM(tb testing.TB) error {
	pid := filepath.Join(v.Dir, "php", "php-fpm.pid")
	harness := filepath.Join(v.RunDir, "harness.sock")
	conf, err := v.write("php/php-fpm.conf", fmt.Sprintf(`[global]
pid = %s
error_log = %s
daemonize = no
include = %s/*.conf

; php-fpm refuses to run without a pool; the sites' pools come and go.
[harness]
user = www-data
group = www-data
listen = %s
pm = ondemand
pm.max_children = 1
`, pid, filepath.Join(v.Dir, "php", "php-fpm.log"), v.PHPPoolDir, harness), 0o644)
	if err != nil {
		return err
	}
	bin := "/usr/sbin/php-fpm" + PHPVersion
	v.PHPFPMCheck = []string{bin, "-t", "-y", conf}
	v.PHPFPMReload = []string{"pkill", "-USR2", "-F", pid}
	logPath := filepath.Join(v.Dir, "php", "stderr.log")
	if _, err := spawn(tb, logPath, bin, "--nodaemonize", "-y", conf); err != nil {
		return err
	}
	return waitFor("php-fpm", logPath, func() bool {
		_, err := os.Stat(harness)
		return err == nil
	})
}

func (v *VPS) startMariaDB(tb testing.TB) error {
	data := filepath.Join(v.Dir, "mysql", "data")
	sock := filepath.Join(v.Dir, "mysql", "mysqld.sock")
	// Its own temporary directory: with the shared /tmp, two servers
	// initialising at once (parallel tests, other checkouts) collided on a
	// temporary table's name and the install aborted.
	tmp := filepath.Join(v.Dir, "mysql", "tmp")
	for _, d := range []string{data, tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	logPath := filepath.Join(v.Dir, "mysql", "install.log")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, "/usr/bin/mariadb-install-db", "--no-defaults", "--datadir="+data, "--user=root",
		"--auth-root-authentication-method=socket", "--skip-test-db", "--skip-name-resolve", "--tmpdir="+tmp)
	if out, err := install.CombinedOutput(); err != nil {
		_ = os.WriteFile(logPath, out, 0o644)
		return fmt.Errorf("mariadb-install-db: %w\n%s", err, out)
	}
	logPath = filepath.Join(v.Dir, "mysql", "mysqld.log")
	if _, err := spawn(tb, logPath, "/usr/sbin/mariadbd", "--no-defaults", "--datadir="+data, "--socket="+sock,
		"--skip-networking", "--user=root", "--pid-file="+filepath.Join(v.Dir, "mysql", "mysqld.pid"),
		"--log-error="+logPath, "--innodb-buffer-pool-size=32M", "--skip-name-resolve", "--tmpdir="+tmp); err != nil {
		return err
	}
	v.MySQLSocket = sock
	v.MySQL = []string{"/usr/bin/mariadb", "--no-defaults", "--socket=" + sock, "--user=root"}
	v.MySQLDump = []string{"/usr/bin/mariadb-dump", "--no-defaults", "--socket=" + sock, "--user=root"}
	return waitFor("mariadb", logPath, func() bool {
		return exec.Command(v.MySQL[0], append(v.MySQL[1:], "-e", "SELECT 1")...).Run() == nil
	})
}

// SQL runs statements as MariaDB's root and returns the output in batch form
// (tab-separated, no headers).
func (v *VPS) SQL(ctx context.Context, stmt string) (string, error) {
	args := append(append([]string{}, v.MySQL[1:]...), "--batch", "--skip-column-names", "-e", stmt)
	out, err := exec.CommandContext(ctx, v.MySQL[0], args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("mariadb -e %q: %w: %s", stmt, err, out)
	}
	return string(out), nil
}

// LoginAs runs SELECT 1 against database as user with password, over the
// socket: it proves the account exists and the password is right.
func (v *VPS) LoginAs(ctx context.Context, user, password, database string) error {
	args := []string{"--no-defaults", "--socket=" + v.MySQLSocket, "--user=" + user, database, "-e", "SELECT 1"}
	cmd := exec.CommandContext(ctx, v.MySQL[0], args...)
	cmd.Env = append(os.Environ(), "MYSQL_PWD="+password)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("log in as %s: %w: %s", user, err, out)
	}
	return nil
}

// Get GETs path from nginx with the given Host header and returns the status
// and body.
func (v *VPS) Get(ctx context.Context, host, path string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", v.HTTPPort, path), nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	// No keep-alive: a connection to a worker of before a reload would keep
	// answering with the old configuration.
	req.Close = true
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, err = bufio.NewReader(resp.Body).WriteTo(&b)
	return resp.StatusCode, b.String(), err
}

// WaitAccessLog waits until the access log of site host (<LogDir>/<host>/
// access.log, as the SSH driver's server blocks write it) holds at least atLeast
// lines and has not grown for 300ms, and returns its line count. nginx logs a
// request only after it has sent the response, so a test that counts what was
// served must wait for the last lines. It fails tb after 10s.
func (v *VPS) WaitAccessLog(tb testing.TB, host string, atLeast int) int {
	tb.Helper()
	path := filepath.Join(v.LogDir, host, "access.log")
	deadline := time.Now().Add(10 * time.Second)
	last, since := -1, time.Now()
	for {
		b, err := os.ReadFile(path)
		n := strings.Count(string(b), "\n")
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			tb.Fatalf("vpsenv: read %s: %v", path, err)
		}
		if n != last {
			last, since = n, time.Now()
		} else if n >= atLeast && time.Since(since) >= 300*time.Millisecond {
			return n
		}
		if time.Now().After(deadline) {
			tb.Fatalf("vpsenv: %s holds %d lines after 10s, want at least %d and no more growth", path, n, atLeast)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// NginxWorkers returns the PIDs of nginx's worker processes now: the
// children of its master, those of the running configuration and, during a
// reload, those of the previous one that have not exited yet.
func (v *VPS) NginxWorkers(tb testing.TB) []int {
	tb.Helper()
	pids, err := children(v.nginxMaster)
	if err != nil {
		tb.Fatalf("vpsenv: nginx workers: %v", err)
	}
	return pids
}

// WaitNginxReload waits until every worker of before (NginxWorkers, taken
// before a change that reloads nginx) has exited and a worker runs, and fails
// tb after 15s. nginx reloads asynchronously: "nginx -s reload" returns once
// the master is signalled, and for a while after, workers of the old
// configuration still accept connections beside the new ones, so a request
// may be answered by either. Once the old workers are gone, every new
// connection gets the new configuration (a connection kept from before
// was closed with them).
func (v *VPS) WaitNginxReload(tb testing.TB, before []int) {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		now := v.NginxWorkers(tb)
		old := 0
		for _, pid := range before {
			if slices.Contains(now, pid) {
				old++
			}
		}
		if old == 0 && len(now) > 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("vpsenv: nginx reload not done after 15s: %d of the workers %v still run (workers now %v)", old, before, now)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// children lists the PIDs whose parent is ppid, from /proc.
func children(ppid int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) >= 2 && f[1] == strconv.Itoa(ppid) && f[0] != "Z" {
			out = append(out, pid)
		}
	}
	return out, nil
}
