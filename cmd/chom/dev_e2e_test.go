package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chomhq/chom/internal/testenv"
)

// TestDevEndToEnd starts `chom dev` as a user would (the built binary, a fresh
// data directory, nothing else running), drives it over HTTP through a site's
// whole life, stops it with Ctrl-C, starts it again on the same data directory and
// finds its state and tokens kept.
func TestDevEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	t.Parallel()
	bin, err := testenv.BuildChom(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	dataDir, err := os.MkdirTemp("", "chom-dev-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dataDir) })

	// A bad flag is a usage error: exit status 2, the flag named.
	out, err := exec.Command(bin, "worker", "--bogus").CombinedOutput()
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "bogus") {
		t.Errorf("chom worker --bogus: %v, %s; want exit status 2 naming the flag", err, out)
	}

	base, stop := startDev(t, bin, dataDir)
	token := readToken(t, filepath.Join(dataDir, "dev-token"))
	admin := readToken(t, filepath.Join(dataDir, "admin-token"))

	created := time.Now()
	status, body := call(t, "POST", base+"/api/v1/sites", token, `{"domain":"e2e.example","site_type":"php"}`)
	if status != 202 {
		t.Fatalf("POST /sites: %d %s", status, body)
	}
	var op struct {
		ID       string `json:"id"`
		TargetID string `json:"target_id"`
	}
	if err := json.Unmarshal(body, &op); err != nil {
		t.Fatal(err)
	}
	if got := waitOperation(t, base, token, op.ID); got != "succeeded" {
		t.Fatalf("provision finished %s", got)
	}
	status, body = call(t, "GET", base+"/api/v1/sites/"+op.TargetID, token, "")
	if status != 200 || !strings.Contains(string(body), `"status":"active"`) {
		t.Fatalf("GET site: %d %s", status, body)
	}
	// With no network: the provision started the site's certificate, issued
	// by the development CA over HTTP-01 answered from the local driver's
	// files, and deployed.
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		status, body = call(t, "GET", base+"/api/v1/sites/"+op.TargetID+"/certificate", token, "")
		var cert struct {
			Status  string   `json:"status"`
			Issuer  string   `json:"issuer"`
			Domains []string `json:"domains"`
		}
		_ = json.Unmarshal(body, &cert)
		if status == 200 && cert.Status == "issued" {
			if !strings.HasPrefix(cert.Issuer, "Pebble") || len(cert.Domains) != 1 || cert.Domains[0] != "e2e.example" {
				t.Errorf("certificate from the development CA: %s", body)
			}
			t.Logf("certificate issued by the development CA %s after the site was created", time.Since(created).Round(time.Second))
			break
		}
		if time.Now().After(deadline) || cert.Status == "failed" {
			t.Fatalf("no certificate from the development CA: %d %s", status, body)
		}
	}
	confs, _ := filepath.Glob(filepath.Join(dataDir, "vps", "*", "nginx", "sites-enabled", "e2e.example.conf"))
	if len(confs) != 1 {
		t.Fatalf("nginx server block not written under the data dir: %v", confs)
	}
	if status, _ := call(t, "GET", base+"/api/v1/vps", admin, ""); status != 200 {
		t.Errorf("admin GET /vps: %d", status)
	}
	if status, _ := call(t, "GET", base+"/ops/queues", "", ""); status != 401 {
		t.Errorf("ops UI without credential: %d", status)
	}
	// Every in-process part reports to the one /metrics of the API listener.
	// A task's attempt is counted when its handler returns, which is after the
	// handler marked the operation finished: the poll above may see the
	// operation before the counter moves, so the scrape is retried briefly.
	wantMetrics := []string{`chom_http_requests_total{method="POST",route="/api/v1/sites",status="202"} 1`,
		`chom_queue_jobs_total{queue="default",status="succeeded",type="site:provision"} 1`,
		`chom_sites{status="active"} 1`, `chom_db_queries_total{operation="INSERT"}`, "chom_outbox_lag_seconds",
		`chom_circuit_breaker_state{breaker="kafka"}`, "go_goroutines"}
	var missing []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		status, body = call(t, "GET", base+"/metrics", "", "")
		missing = missing[:0]
		for _, want := range wantMetrics {
			if status != 200 || !strings.Contains(string(body), want) {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range missing {
		t.Errorf("GET /metrics: %d, no %s", status, want)
	}
	// A newcomer sees usage within minutes: chom dev meters every minute, so
	// the site's first period is billed at the next minute boundary.
	usageBy := time.Now().Add(150 * time.Second)
	for {
		status, body = call(t, "GET", base+"/api/v1/usage", token, "")
		var page struct {
			Data []struct {
				Metric string `json:"metric"`
			} `json:"data"`
		}
		if status != 200 || json.Unmarshal(body, &page) != nil {
			t.Fatalf("GET /usage: %d %s", status, body)
		}
		if len(page.Data) > 0 {
			t.Logf("usage visible %s after the site was created: %d records", time.Since(created).Round(time.Second), len(page.Data))
			break
		}
		if time.Now().After(usageBy) {
			t.Fatalf("no usage record 150s after start (chom dev meters every minute)")
		}
		time.Sleep(2 * time.Second)
	}
	stop()

	// Same data directory: the same tokens still work and the site is still there.
	base, stop = startDev(t, bin, dataDir)
	defer stop()
	if again := readToken(t, filepath.Join(dataDir, "dev-token")); again != token {
		t.Errorf("dev token changed across restarts")
	}
	status, body = call(t, "DELETE", base+"/api/v1/sites/"+op.TargetID, token, "")
	if status != 202 {
		t.Fatalf("DELETE after restart: %d %s", status, body)
	}
	if err := json.Unmarshal(body, &op); err != nil {
		t.Fatal(err)
	}
	if got := waitOperation(t, base, token, op.ID); got != "succeeded" {
		t.Fatalf("deprovision finished %s", got)
	}
	if _, err := os.Stat(confs[0]); !os.IsNotExist(err) {
		t.Errorf("server block still there after delete: %v", err)
	}
}

// startDev runs the binary on a free port and returns its base URL and a
// function that stops it with SIGINT and checks it exits cleanly.
func startDev(t *testing.T, bin, dataDir string) (string, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "dev", "--data-dir", dataDir, "--listen", addr, "--kafka-listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "CHOM_RECONCILE_INTERVAL=2s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(60 * time.Second)
	for ready := false; !ready; {
		select {
		case l, ok := <-lines:
			if !ok {
				_ = cmd.Wait()
				t.Fatalf("chom dev exited early:\n%s", stderr.String())
			}
			ready = strings.HasPrefix(l, "Press Ctrl-C")
		case <-deadline:
			_ = cmd.Process.Kill()
			t.Fatalf("chom dev did not start in 60s:\n%s", stderr.String())
		}
	}
	base := "http://" + addr
	if status, _ := call(t, "GET", base+"/api/v1/health", "", ""); status != 200 {
		t.Fatalf("health: %d", status)
	}
	stopped := false
	return base, func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("chom dev exited with %v:\n%s", err, stderr.String())
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("chom dev did not stop within 30s of Ctrl-C")
		}
		var rest []string
		for l := range lines {
			rest = append(rest, l)
		}
		if !strings.Contains(strings.Join(rest, "\n"), "CHOM dev stopped") {
			t.Errorf("no clean-stop line; output after start: %q", rest)
		}
	}
}

func readToken(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := os.Stat(path)
	if info.Mode().Perm() != 0o600 {
		t.Errorf("%s mode %v, want 0600", path, info.Mode().Perm())
	}
	return strings.TrimSpace(string(b))
}

func call(t *testing.T, method, url, token, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

func waitOperation(t *testing.T, base, token, id string) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		status, body := call(t, "GET", fmt.Sprintf("%s/api/v1/operations/%s?wait=5s", base, id), token, "")
		if status != 200 {
			t.Fatalf("GET operation: %d %s", status, body)
		}
		var v struct{ Status string }
		_ = json.Unmarshal(body, &v)
		if v.Status == "succeeded" || v.Status == "failed" || v.Status == "cancelled" {
			return v.Status
		}
	}
	t.Fatalf("operation %s not finished in 30s", id)
	return ""
}
