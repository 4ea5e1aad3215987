package testenv

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// HAProxyBin is where Debian's haproxy package installs the balancer.
const HAProxyBin = "/usr/sbin/haproxy"

// haproxyConfig is the balancer in front of CHOM's ingresses, as
// docs/operations.md (The fleet) gives it: round robin; a health check
// every 500ms that takes an ingress out after two failures (about a second)
// and back after one success; a request whose connection to an ingress
// fails is retried (up to 3 times) on another (option redispatch) —
// `retry-on conn-failure empty-response`: a POST may be sent twice only when
// the first ingress closed without answering, and the Idempotency-Key makes
// that second send return the first's operation. The frontend's port and
// the server lines are filled in.
const haproxyConfig = `global
	maxconn 2000
defaults
	mode http
	timeout connect 1s
	timeout client 30s
	timeout server 30s
	timeout check 1s
	retries 3
	retry-on conn-failure empty-response
	option redispatch 1
frontend api
	bind 127.0.0.1:%d
	default_backend ingresses
backend ingresses
	balance roundrobin
	option httpchk GET /api/v1/health
	http-check expect status 200
	default-server inter 500ms fall 2 rise 1
%s`

// FreePort returns a loopback TCP port nobody listens on right now.
func FreePort(tb testing.TB) int { return freePort(tb) }

// StartHAProxy runs Debian's haproxy in the foreground, balancing HTTP over
// the ingresses at backends (host:port each) with haproxyConfig, stops it at
// cleanup, and returns its base URL (http://127.0.0.1:port) once a health
// check passes through it. Without haproxy the test is skipped, or fails
// when CI is set.
func StartHAProxy(tb testing.TB, backends ...string) string {
	tb.Helper()
	if _, err := os.Stat(HAProxyBin); err != nil {
		missingBinary(tb, "haproxy", "haproxy (apt-get install haproxy)")
	}
	dir := tb.TempDir()
	port := freePort(tb)
	var servers strings.Builder
	for i, b := range backends {
		fmt.Fprintf(&servers, "\tserver ingress-%d %s check\n", i+1, b)
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, haproxyConfig, port, servers.String()), 0o644); err != nil {
		tb.Fatalf("testenv: haproxy config: %v", err)
	}
	if out, err := exec.Command(HAProxyBin, "-c", "-f", cfg).CombinedOutput(); err != nil {
		tb.Fatalf("testenv: haproxy -c: %v\n%s", err, out)
	}
	logPath := filepath.Join(dir, "haproxy.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		tb.Fatalf("testenv: haproxy log: %v", err)
	}
	cmd := exec.Command(HAProxyBin, "-db", "-f", cfg)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	proc, err := startProcess(cmd)
	if err != nil {
		_ = logFile.Close()
		tb.Fatalf("testenv: start haproxy: %v", err)
	}
	tb.Cleanup(func() {
		if !proc.signal(syscall.SIGTERM, false, 10*time.Second) {
			proc.signal(syscall.SIGKILL, false, 10*time.Second)
		}
		_ = logFile.Close()
	})
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(setupTimeout)
	for {
		res, err := client.Get(url + "/api/v1/health")
		if err == nil {
			_ = res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return url
			}
		}
		if time.Now().After(deadline) || !proc.running() {
			tb.Fatalf("testenv: haproxy on %s passed no health check through within %s; its log:\n%s", url, setupTimeout, Tail(logPath, 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
