package opsui_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chomhq/chom/internal/testenv"
)

// chromiumPath is the browser the test drives; playwright-core never downloads
// one, and neither does this test (Debian's chromium package puts it here).
const chromiumPath = "/usr/bin/chromium"

// EnvArtifacts names the directory where the screenshot is kept; default a
// t.TempDir (removed after the test; its path is logged either way).
const EnvArtifacts = "CHOM_TEST_ARTIFACTS"

var (
	npmOnce sync.Once
	npmErr  error
	npmOut  []byte
)

// browserTools returns node, or skips the test (fails it when CI is set) when
// node, npm or Chromium is missing. It runs `npm ci` into browser/node_modules
// once when that folder is missing (playwright-core only: no browser download).
func browserTools(t *testing.T) string {
	t.Helper()
	node, errNode := exec.LookPath("node")
	npm, errNpm := exec.LookPath("npm")
	_, errChromium := os.Stat(chromiumPath)
	for what, err := range map[string]error{"node": errNode, "npm": errNpm, chromiumPath: errChromium} {
		if err == nil {
			continue
		}
		if os.Getenv(testenv.EnvCI) != "" {
			t.Fatalf("%s not found and CI=%q: the browser test must run in CI (apt-get install nodejs npm chromium)", what, os.Getenv(testenv.EnvCI))
		}
		t.Skipf("%s not found (%v); install nodejs, npm and chromium to run the browser test", what, err)
	}
	npmOnce.Do(func() {
		if _, err := os.Stat(filepath.Join("browser", "node_modules", "playwright-core")); err == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = "browser"
		// playwright-core has no install script, but say it anyway: never a browser download.
		cmd.Env = append(os.Environ(), "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1")
		npmOut, npmErr = cmd.CombinedOutput()
	})
	if npmErr != nil {
		t.Fatalf("npm ci in internal/opsui/browser: %v\n%s", npmErr, npmOut)
	}
	return node
}

// seen is the JSON line browser/opsui.mjs prints.
type seen struct {
	URL                      string         `json:"url"`
	Status                   int            `json:"status"`
	Queues                   map[string]int `json:"queues"`
	ReadOnly                 string         `json:"read_only"`
	Title                    string         `json:"title"`
	Screenshot               string         `json:"screenshot"`
	UnauthenticatedStatus    int            `json:"unauthenticated_status"`
	UnauthenticatedChallenge string         `json:"unauthenticated_challenge"`
	CSPViolations            []string       `json:"csp_violations"`
	Error                    string         `json:"error"`
}

// The operator's view: headless Chromium logs in to /ops/queues with the admin
// token as the Basic auth password, sees the queue table list critical, default
// and low with the tasks the test queued (sites accepted while no worker runs),
// takes a full-page screenshot, and a browser without credentials gets the 401
// with its Basic challenge. Then the same with an ops token, which sees the
// same queues in the read-only UI. Nothing is blocked by the ingress's
// Content-Security-Policy on the way.
func TestOpsUIInBrowser(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs Chromium against the chom binary; skipped with -short")
	}
	node := browserTools(t)
	s := newStack(t)
	const sites = 3
	s.createSites(sites)
	s.enqueueOthers()

	dir := os.Getenv(EnvArtifacts)
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		who, token, file, readOnly string
	}{
		{"admin", s.admin, "opsui-queues.png", "false"},
		{"ops", s.ops, "opsui-queues-readonly.png", "true"},
	} {
		shot, err := filepath.Abs(filepath.Join(dir, c.file))
		if err != nil {
			t.Fatal(err)
		}
		got := runBrowser(t, node, s.base, c.token, shot)
		t.Logf("%s: screenshot %s", c.who, shot)
		if got.Status != 200 || got.Queues["default"] != sites || got.Queues["critical"] != 1 || got.Queues["low"] != 1 {
			t.Errorf("%s logged in: status %d, queue sizes %v; want 200 and default %d, critical 1, low 1", c.who, got.Status, got.Queues, sites)
		}
		if len(got.CSPViolations) > 0 {
			t.Errorf("%s: the page's Content-Security-Policy blocked %q", c.who, got.CSPViolations)
		}
		if got.ReadOnly != c.readOnly {
			t.Errorf("%s saw read-only %q, want %q", c.who, got.ReadOnly, c.readOnly)
		}
		if got.UnauthenticatedStatus != 401 || !strings.HasPrefix(got.UnauthenticatedChallenge, "Basic ") {
			t.Errorf("without credentials: %d %q, want 401 with a Basic challenge", got.UnauthenticatedStatus, got.UnauthenticatedChallenge)
		}
		checkPNG(t, shot)
	}
}

// runBrowser runs browser/opsui.mjs against base with token and returns what
// it saw; it fails the test when the script fails or prints no JSON line.
func runBrowser(t *testing.T, node, base, token, shot string) seen {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("browser", "opsui.mjs"),
		"--url", base, "--token", token, "--out", shot, "--queue", "default", "--chromium", chromiumPath)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var got seen
	line := strings.TrimSpace(stdout.String())
	if i := strings.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatalf("opsui.mjs printed no JSON line (%v, exit %v)\nstdout:\n%s\nstderr:\n%s", err, runErr, stdout.String(), stderr.String())
	}
	if runErr != nil || got.Error != "" {
		t.Fatalf("opsui.mjs failed: %v: %s\nstderr:\n%s", runErr, got.Error, stderr.String())
	}
	t.Logf("opsui.mjs saw %s", line)
	return got
}

// checkPNG fails the test unless shot is a PNG of some size.
func checkPNG(t *testing.T, shot string) {
	t.Helper()
	fi, err := os.Stat(shot)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	png, err := os.ReadFile(shot)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || fi.Size() < 10_000 {
		t.Errorf("screenshot %s: %d bytes, PNG header %v (%v); want a PNG of the page", shot, fi.Size(), bytes.HasPrefix(png, []byte("\x89PNG")), err)
	}
}
