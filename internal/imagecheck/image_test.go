package imagecheck

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chomhq/chom/internal/testenv"
)

// imageUID is the user deploy/image-root.sh writes and the Dockerfile runs as.
const imageUID = 65532

// TestImage builds the image's final stage as CI can (no pull: the host runs
// deploy/image-root.sh, the stage is cut from deploy/Dockerfile), on a private
// dockerd, then runs `chom dev` in it with a read-only root file system and
// checks what the image promises: it gets healthy (Docker's own HEALTHCHECK,
// which runs `chom healthcheck`), a site created through the API is
// provisioned, the process is not root, there is no shell, the OCI labels are
// set, and the container's files are exactly the script's.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a container image")
	}
	docker := testenv.StartDocker(t)
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	d, err := Parse(repoFile(t, "deploy/Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(d, repoFile(t, "go.mod")); err != nil {
		t.Fatalf("deploy/Dockerfile: %v", err)
	}

	// The build context: the script's output as an archive that keeps owners
	// (ADD extracts a local archive as it is; COPY from a context would make
	// every file root's), and the image stage.
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	start := time.Now()
	script := exec.CommandContext(ctx, "sh", filepath.Join("..", "..", "deploy", "image-root.sh"), out)
	if b, err := script.CombinedOutput(); err != nil {
		t.Fatalf("deploy/image-root.sh: %v\n%s", err, b)
	}
	t.Logf("deploy/image-root.sh (CGO_ENABLED=0 go build and the file system): %s", time.Since(start).Round(time.Millisecond))
	want := tarDir(t, out, filepath.Join(dir, "ctx", RootTar))
	if err := os.WriteFile(filepath.Join(dir, "ctx", "Dockerfile"), []byte(CIDockerfile(d)), 0o644); err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("chom-imagecheck:%d", time.Now().UnixNano())
	start = time.Now()
	docker.Run(t, ctx, "build", "--quiet", "--tag", tag, "--build-arg", "VERSION=ci", "--build-arg", "REVISION=0123abc", filepath.Join(dir, "ctx"))
	t.Logf("docker build of the image stage: %s", time.Since(start).Round(time.Millisecond))

	var img []struct {
		Size   int64
		Config struct {
			User        string
			Labels      map[string]string
			Entrypoint  []string
			Healthcheck struct{ Test []string }
		}
	}
	if err := json.Unmarshal([]byte(docker.Run(t, ctx, "image", "inspect", tag)), &img); err != nil || len(img) != 1 {
		t.Fatalf("image inspect: %v", err)
	}
	cfg := img[0].Config
	t.Logf("image size: %d bytes (%.1f MiB); user %s; entrypoint %q; healthcheck %q", img[0].Size, float64(img[0].Size)/(1<<20), cfg.User, cfg.Entrypoint, cfg.Healthcheck.Test)
	for k, v := range map[string]string{
		"org.opencontainers.image.version":  "ci",
		"org.opencontainers.image.revision": "0123abc",
		"org.opencontainers.image.source":   "https://github.com/chomhq/chom",
	} {
		if cfg.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, cfg.Labels[k], v)
		}
	}
	if cfg.User != fmt.Sprintf("%d:%d", imageUID, imageUID) {
		t.Errorf("image user %q, want %d:%d", cfg.User, imageUID, imageUID)
	}

	// No shell: running one fails, whatever the image's entrypoint.
	if b, err := docker.Command(ctx, "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", tag, "-c", "true").CombinedOutput(); err == nil {
		t.Errorf("/bin/sh ran in the image:\n%s", b)
	} else {
		t.Logf("docker run --entrypoint /bin/sh: %s", bytes.TrimSpace(b))
	}

	// chom dev, on a free loopback port of the host's network, with a
	// read-only root; /data is the image's volume. CHOM_METRICS_LISTEN=off
	// leaves the probe only the API to try (dev serves /metrics there), so
	// another process on the host's loopback cannot answer for it.
	port := freePort(t)
	api := fmt.Sprintf("http://127.0.0.1:%d", port)
	start = time.Now()
	id := strings.TrimSpace(docker.Run(t, ctx, "run", "--detach", "--network", "host", "--read-only",
		"--health-interval", "1s", "--health-start-period", "60s",
		"--env", fmt.Sprintf("CHOM_LISTEN=127.0.0.1:%d", port), "--env", "CHOM_METRICS_LISTEN=off",
		tag, "dev", "--data-dir", "/data", "--kafka-listen", "127.0.0.1:0"))
	defer func() {
		if t.Failed() {
			b, _ := docker.Command(context.WithoutCancel(ctx), "logs", "--tail", "60", id).CombinedOutput()
			t.Logf("container log:\n%s", b)
		}
		docker.Command(context.WithoutCancel(ctx), "rm", "--force", "--volumes", id).Run()
		docker.Command(context.WithoutCancel(ctx), "rmi", "--force", tag).Run()
	}()
	health := waitHealthy(t, ctx, docker, id, 90*time.Second)
	t.Logf("healthy (Docker's HEALTHCHECK: %s) %s after docker run", health, time.Since(start).Round(time.Millisecond))

	// The process runs as the image's user, not root (the host sees it: no
	// user namespace remapping).
	pid := strings.TrimSpace(docker.Run(t, ctx, "inspect", "--format", "{{.State.Pid}}", id))
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	uids := regexp.MustCompile(`(?m)^Uid:\s+(\d+)\s+(\d+)`).FindStringSubmatch(string(status))
	if uids == nil || uids[1] != strconv.Itoa(imageUID) || uids[2] != strconv.Itoa(imageUID) {
		t.Errorf("the container's process %s runs as %v, want uid %d (not root)", pid, uids, imageUID)
	} else {
		t.Logf("the container's process (host pid %s) runs as uid %s", pid, uids[1])
	}

	// A site created through the API is provisioned.
	logs, _ := docker.Command(ctx, "logs", id).CombinedOutput()
	m := regexp.MustCompile(`demo token\s+(\S+)`).FindSubmatch(logs)
	if m == nil {
		t.Fatalf("no demo token in chom dev's output:\n%s", logs)
	}
	start = time.Now()
	op := provisionSite(t, ctx, api, string(m[1]))
	t.Logf("site provisioned in the container: operation %s succeeded %s after POST /api/v1/sites", op, time.Since(start).Round(time.Millisecond))

	// The container's files are the script's, owners and modes included,
	// plus what Docker itself puts in every container.
	got := exportedFiles(t, ctx, docker, id)
	for name, w := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("%s is in deploy/image-root.sh's output, not in the container", name)
		} else if g != w {
			t.Errorf("%s: container %s, script %s", name, g, w)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok && !dockerOwned(name) {
			t.Errorf("%s is in the container but not in deploy/image-root.sh's output", name)
		}
	}
	for _, sh := range []string{"bin/sh", "bin/bash", "bin/busybox", "usr/bin/sh"} {
		if _, ok := got[sh]; ok {
			t.Errorf("the image has %s", sh)
		}
	}
	t.Logf("the container holds %d files from deploy/image-root.sh: %s", len(want), strings.Join(sortedKeys(want), ", "))

	// docker stop sends SIGTERM: chom dev stops cleanly (exit 0).
	start = time.Now()
	docker.Run(t, ctx, "stop", "--time", "40", id)
	if code := strings.TrimSpace(docker.Run(t, ctx, "inspect", "--format", "{{.State.ExitCode}}", id)); code != "0" {
		t.Errorf("after docker stop, exit code %s, want 0", code)
	}
	t.Logf("docker stop: %s", time.Since(start).Round(time.Millisecond))
}

// fileInfo is what the file comparison looks at.
type fileInfo string

func describe(mode fs.FileMode, uid, gid int, size int64) fileInfo {
	if !mode.IsRegular() {
		size = 0
	}
	return fileInfo(fmt.Sprintf("%v %d:%d %d bytes", mode, uid, gid, size))
}

// tarDir archives dir into path (uids, gids and modes as they are on disk)
// and returns what it holds by relative name.
func tarDir(t *testing.T, dir, path string) map[string]fileInfo {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	files := map[string]fileInfo{}
	err = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		rel, _ := filepath.Rel(dir, p)
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		hdr.Name, hdr.Uname, hdr.Gname = filepath.ToSlash(rel), "", ""
		if fi.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		files[filepath.ToSlash(rel)] = describe(fi.Mode(), int(st.Uid), int(st.Gid), fi.Size())
		if fi.Mode().IsRegular() {
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			defer src.Close()
			_, err = io.Copy(tw, src)
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		t.Fatalf("archive %s: %v", dir, err)
	}
	return files
}

// exportedFiles lists the container's file system (docker export).
func exportedFiles(t *testing.T, ctx context.Context, docker *testenv.DockerDaemon, id string) map[string]fileInfo {
	t.Helper()
	var buf bytes.Buffer
	cmd := docker.Command(ctx, "export", id)
	cmd.Stdout = &buf
	if err := cmd.Run(); err != nil {
		t.Fatalf("docker export: %v", err)
	}
	files := map[string]fileInfo{}
	tr := tar.NewReader(&buf)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("docker export: %v", err)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(hdr.Name, "./"), "/")
		files[name] = describe(hdr.FileInfo().Mode(), hdr.Uid, hdr.Gid, hdr.Size)
	}
}

// dockerOwned are the paths Docker adds to every container.
func dockerOwned(name string) bool {
	switch name {
	case ".dockerenv", "dev", "proc", "sys", "etc", "etc/hosts", "etc/hostname", "etc/resolv.conf", "etc/mtab":
		return true
	}
	return strings.HasPrefix(name, "dev/") || strings.HasPrefix(name, "proc/") || strings.HasPrefix(name, "sys/")
}

// waitHealthy waits for Docker's health status of the container to be
// healthy and returns the last probe's output.
func waitHealthy(t *testing.T, ctx context.Context, docker *testenv.DockerDaemon, id string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var st struct {
			Running bool
			Health  struct {
				Status string
				Log    []struct {
					ExitCode int
					Output   string
				}
			}
		}
		if err := json.Unmarshal([]byte(docker.Run(t, ctx, "inspect", "--format", "{{json .State}}", id)), &st); err != nil {
			t.Fatal(err)
		}
		if st.Health.Status == "healthy" {
			return strings.TrimSpace(st.Health.Log[len(st.Health.Log)-1].Output)
		}
		if !st.Running || time.Now().After(deadline) {
			t.Fatalf("container not healthy (running %v, waited at most %s): %+v", st.Running, within, st.Health)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// provisionSite creates a site and polls its operation to a final state; it
// fails the test unless that is succeeded and the site is active.
func provisionSite(t *testing.T, ctx context.Context, api, token string) string {
	t.Helper()
	call := func(method, path, body string) (int, map[string]any) {
		req, err := http.NewRequestWithContext(ctx, method, api+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "imagecheck-site")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer res.Body.Close()
		var v map[string]any
		b, _ := io.ReadAll(res.Body)
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s %s: %d %s", method, path, res.StatusCode, b)
		}
		return res.StatusCode, v
	}
	code, op := call(http.MethodPost, "/api/v1/sites", `{"domain":"image.example","site_type":"html"}`)
	if code != http.StatusAccepted {
		t.Fatalf("POST /api/v1/sites: %d %v", code, op)
	}
	id, _ := op["id"].(string)
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, op = call(http.MethodGet, "/api/v1/operations/"+id+"?wait=10s", "")
		status, _ := op["status"].(string)
		switch {
		case code != http.StatusOK:
			t.Fatalf("GET operation %s: %d %v", id, code, op)
		case status == "succeeded":
			res, _ := op["result"].(map[string]any)
			siteID, _ := res["site_id"].(string)
			if code, site := call(http.MethodGet, "/api/v1/sites/"+siteID, ""); code != http.StatusOK || site["status"] != "active" {
				t.Errorf("GET site %s after the operation succeeded: %d %v, want active", siteID, code, site)
			}
			return id
		case status == "failed" || status == "cancelled":
			t.Fatalf("operation %s ended %s: %v", id, status, op)
		case time.Now().After(deadline):
			t.Fatalf("operation %s still %s after 60s", id, status)
		}
	}
}

// freePort is a loopback port nobody listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func sortedKeys(m map[string]fileInfo) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
