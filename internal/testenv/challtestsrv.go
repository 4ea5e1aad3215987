package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ChallTestSrv is Pebble's pebble-challtestsrv, a private process of one test:
// a real DNS server on loopback (UDP and TCP) whose records the test sets
// through the server's HTTP management API. Pebble resolves the domains it
// validates through it, and CHOM's domain verification reads its TXT records.
//
// Hosts are fully qualified with a trailing dot ("_chom-challenge.a.test.").
// A query for a host without an A record of its own answers DefaultIPv4
// (127.0.0.1 unless SetDefaultIPv4 changed it); AAAA queries answer nothing.
type ChallTestSrv struct {
	// DNSAddr is 127.0.0.1:port of the DNS server (UDP and TCP).
	DNSAddr string
	// ManagementURL is http://127.0.0.1:port of the management API.
	ManagementURL string
	// Log is the server's output.
	Log string
}

// StartChallTestSrv starts pebble-challtestsrv on free loopback ports with
// only its DNS server and management API switched on, and stops it at
// cleanup. The binary is the module's Go tool (go.mod's tool block), built
// by the go command on first use (GoTool); without it the test fails.
func StartChallTestSrv(tb testing.TB) *ChallTestSrv {
	tb.Helper()
	bin := GoTool(tb, "pebble-challtestsrv")
	dir := tb.TempDir()
	c := &ChallTestSrv{
		DNSAddr:       net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(tb))),
		ManagementURL: "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(tb))),
		Log:           filepath.Join(dir, "challtestsrv.log"),
	}
	logFile, err := os.Create(c.Log)
	if err != nil {
		tb.Fatalf("challtestsrv: %v", err)
	}
	cmd := exec.Command(bin,
		"-dnsserver", c.DNSAddr,
		"-management", strings.TrimPrefix(c.ManagementURL, "http://"),
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	proc, err := startProcess(cmd)
	if err != nil {
		_ = logFile.Close()
		tb.Fatalf("challtestsrv: start %s: %v", bin, err)
	}
	tb.Cleanup(func() {
		if !proc.signal(syscall.SIGTERM, true, 5*time.Second) {
			proc.signal(syscall.SIGKILL, true, 5*time.Second)
		}
		_ = logFile.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	for {
		// Both servers are up once the management API answers and a DNS
		// query over TCP is answered.
		err := c.post(ctx, "/set-default-ipv4", map[string]string{"ip": "127.0.0.1"})
		if err == nil {
			var r net.Resolver
			r.PreferGo = true
			r.Dial = c.Dial
			_, err = r.LookupHost(ctx, "ready.chom.test")
		}
		if err == nil {
			return c
		}
		if !proc.running() || ctx.Err() != nil {
			tb.Fatalf("challtestsrv did not come up: %v\n%s", err, Tail(c.Log, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Dial is a net.Resolver Dial function that sends every query to the
// server, whatever address the resolver asks for.
func (c *ChallTestSrv) Dial(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, c.DNSAddr)
}

// SetTXT adds value to the TXT records of host.
func (c *ChallTestSrv) SetTXT(ctx context.Context, host, value string) error {
	return c.post(ctx, "/set-txt", map[string]string{"host": fqdn(host), "value": value})
}

// ClearTXT removes every TXT record of host.
func (c *ChallTestSrv) ClearTXT(ctx context.Context, host string) error {
	return c.post(ctx, "/clear-txt", map[string]string{"host": fqdn(host)})
}

// AddA gives host the A records addrs (replacing the default answer).
func (c *ChallTestSrv) AddA(ctx context.Context, host string, addrs ...string) error {
	return c.post(ctx, "/add-a", map[string]any{"host": fqdn(host), "addresses": addrs})
}

// ClearA removes host's own A records: it answers DefaultIPv4 again.
func (c *ChallTestSrv) ClearA(ctx context.Context, host string) error {
	return c.post(ctx, "/clear-a", map[string]string{"host": fqdn(host)})
}

// SetDefaultIPv4 sets the answer to A queries for hosts without records of
// their own; "" makes such queries answer nothing.
func (c *ChallTestSrv) SetDefaultIPv4(ctx context.Context, ip string) error {
	return c.post(ctx, "/set-default-ipv4", map[string]string{"ip": ip})
}

// post sends one management request and checks it was accepted.
func (c *ChallTestSrv) post(ctx context.Context, path string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("challtestsrv %s: %w", path, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.ManagementURL+path, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("challtestsrv %s: %w", path, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("challtestsrv %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("challtestsrv %s: %s", path, resp.Status)
	}
	return nil
}

// fqdn adds the trailing dot the server's record keys carry.
func fqdn(host string) string {
	if strings.HasSuffix(host, ".") {
		return host
	}
	return host + "."
}

// GoTool returns the path of the Go tool name declared in go.mod's tool
// block (pebble, pebble-challtestsrv), building it on first use with
// `go tool -n` (about half a second when it is cached). The test fails when the go command cannot provide it.
func GoTool(tb testing.TB, name string) string {
	tb.Helper()
	out, err := exec.Command("go", "tool", "-n", name).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		tb.Fatalf("go tool -n %s: %v\n%s", name, err, stderr)
	}
	return strings.TrimSpace(string(out))
}
