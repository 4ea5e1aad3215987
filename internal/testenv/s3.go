package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// S3Server is an S3-compatible server of one test's own: moto's server mode
// (moto[server] from PyPI, pinned in scripts/moto.sh) on a loopback port. It
// keeps objects in memory and accepts any credentials; S3Server's are fixed.
type S3Server struct {
	// Endpoint is host:port, plain HTTP.
	Endpoint  string
	AccessKey string
	SecretKey string
	Region    string
}

// StartS3Server installs moto into the repository's .cache on first use
// (scripts/moto.sh install: about 25 s once, then instant), starts
// `moto_server` on a free loopback port and stops it on cleanup. Without
// python3 (and its venv module) it skips the test, or fails it when CI is set;
// it fails the test when the install fails or the server does not answer.
func StartS3Server(tb testing.TB) *S3Server {
	tb.Helper()
	script, err := motoScript()
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	ctx, cancel := context.WithTimeout(tb.Context(), 5*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, "bash", script, "install")
	out, err := install.Output()
	if err != nil {
		var ee *exec.ExitError
		var stderr []byte
		if errors.As(err, &ee) {
			stderr = ee.Stderr
			if ee.ExitCode() == 2 {
				missingBinary(tb, "python3 with the venv module (for moto, the S3-compatible test server)", "python3 python3-venv python3-pip")
			}
		}
		tb.Fatalf("testenv: %s install: %v\n%s", script, err, stderr)
	}
	server := strings.TrimSpace(string(out))

	for attempt := 0; ; attempt++ {
		s, proc, err := startMoto(tb, server)
		if err == nil {
			tb.Cleanup(func() {
				if !proc.signal(syscall.SIGTERM, false, serverStopTimeout) {
					proc.signal(syscall.SIGKILL, false, serverStopTimeout)
				}
			})
			return s
		}
		if attempt == 2 {
			tb.Fatalf("testenv: start moto_server: %v", err)
		}
	}
}

// startMoto starts one moto_server on a free port and waits until it answers.
// Another process may take the port first: the caller retries.
func startMoto(tb testing.TB, server string) (*S3Server, *serverProcess, error) {
	tb.Helper()
	port := freePort(tb)
	logPath := filepath.Join(tb.TempDir(), "moto.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(server, "-H", "127.0.0.1", "-p", strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// A test binary killed by its -timeout takes the server with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// Credentials moto does not check, and no call to a real AWS endpoint.
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=chomtest", "AWS_SECRET_ACCESS_KEY=chomtestsecret",
		"AWS_DEFAULT_REGION=us-east-1", "MOTO_ALLOW_NONEXISTENT_REGION=false")
	proc, err := startProcess(cmd)
	if err != nil {
		return nil, nil, err
	}
	endpoint := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(serverStartTimeout)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		if !proc.running() {
			return nil, nil, fmt.Errorf("moto_server exited: %v\n%s", proc.err, Tail(logPath, 20))
		}
		resp, err := client.Get("http://" + endpoint + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return &S3Server{Endpoint: endpoint, AccessKey: "chomtest", SecretKey: "chomtestsecret", Region: "us-east-1"}, proc, nil
			}
		}
		if time.Now().After(deadline) {
			proc.signal(syscall.SIGKILL, false, serverStopTimeout)
			return nil, nil, fmt.Errorf("moto_server on %s did not answer within %s\n%s", endpoint, serverStartTimeout, Tail(logPath, 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// motoScript returns the path of scripts/moto.sh, found from this file's
// place in the repository (tests run from their package directory).
func motoScript() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the repository")
	}
	script := filepath.Join(filepath.Dir(file), "..", "..", "scripts", "moto.sh")
	if _, err := os.Stat(script); err != nil {
		return "", fmt.Errorf("scripts/moto.sh: %w", err)
	}
	return script, nil
}
