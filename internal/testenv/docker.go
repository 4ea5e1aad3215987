package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DockerDaemon is a private dockerd: its own data root, exec root (with the
// containerd it manages), socket and client configuration under a temporary
// directory, no bridge network and no iptables rules, so it never touches
// the machine's Docker or its firewall. Containers run with --network host
// or none. Its client uses the classic builder (DOCKER_BUILDKIT=0): Debian's
// docker.io ships no buildx, and building FROM scratch pulls nothing.
type DockerDaemon struct {
	// Host is the daemon's DOCKER_HOST (unix://…/docker.sock).
	Host string
	dir  string
	proc *serverProcess
}

// StartDocker starts a private dockerd and stops it on cleanup, removing
// everything it stored. dockerd must run as root: the test is skipped, or
// failed when CI is set, when dockerd or the docker client is missing or the
// test does not run as root.
func StartDocker(tb testing.TB) *DockerDaemon {
	tb.Helper()
	bin, err := exec.LookPath("dockerd")
	if err != nil {
		missingBinary(tb, "dockerd", "docker.io (apt-get install docker.io)")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		missingBinary(tb, "the docker client", "docker.io (apt-get install docker.io)")
	}
	if os.Geteuid() != 0 {
		missingBinary(tb, "root (dockerd runs as root)", "nothing: run the test as root, as CI does")
	}
	// A short path of its own: a unix socket's path is at most 107 bytes.
	dir, err := os.MkdirTemp("", "chom-docker-")
	if err != nil {
		tb.Fatalf("testenv: docker dir: %v", err)
	}
	d := &DockerDaemon{Host: "unix://" + filepath.Join(dir, "docker.sock"), dir: dir}
	logf, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		tb.Fatalf("testenv: docker log: %v", err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(bin,
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"), "--host", d.Host,
		"--bridge=none", "--iptables=false", "--ip-masq=false", "--userland-proxy=false")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if d.proc, err = startProcess(cmd); err != nil {
		tb.Fatalf("testenv: start dockerd: %v", err)
	}
	tb.Cleanup(func() { d.stop(tb) })
	deadline := time.Now().Add(serverStartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := d.Command(ctx, "version").Run()
		cancel()
		switch {
		case err == nil:
			return d
		case !d.proc.running():
			tb.Fatalf("testenv: dockerd exited: %v\n%s", d.proc.err, Tail(filepath.Join(dir, "dockerd.log"), 30))
		case time.Now().After(deadline):
			tb.Fatalf("testenv: dockerd did not answer within %s: %v\n%s", serverStartTimeout, err, Tail(filepath.Join(dir, "dockerd.log"), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Command is the docker client against this daemon.
func (d *DockerDaemon) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.Host, "DOCKER_BUILDKIT=0", "DOCKER_CONFIG="+filepath.Join(d.dir, "client"))
	return cmd
}

// Run runs docker with args and returns its standard output; a failure fails
// the test with both outputs.
func (d *DockerDaemon) Run(tb testing.TB, ctx context.Context, args ...string) string {
	tb.Helper()
	var stdout, stderr bytes.Buffer
	cmd := d.Command(ctx, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("docker %q: %v\nstdout:\n%s\nstderr:\n%s", args, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// Log is the end of the daemon's log, for failure messages.
func (d *DockerDaemon) Log() string { return Tail(filepath.Join(d.dir, "dockerd.log"), 40) }

// stop stops dockerd (SIGTERM: it stops its containers and containerd and
// unmounts its layers), kills its process group if it hangs, then removes
// its directory.
func (d *DockerDaemon) stop(tb testing.TB) {
	if !d.proc.signal(syscall.SIGTERM, false, serverStopTimeout) {
		tb.Logf("testenv: dockerd did not stop within %s; killing it", serverStopTimeout)
		d.proc.signal(syscall.SIGKILL, true, serverStopTimeout)
	}
	// dockerd leaves its default network namespace (exec/netns/default)
	// bind-mounted; nothing below dir stays mounted once it is gone.
	if err := unmountUnder(d.dir); err != nil {
		tb.Logf("testenv: %v", err)
	}
	if err := os.RemoveAll(d.dir); err != nil {
		tb.Logf("testenv: remove the docker directory: %v", err)
	}
}

// unmountUnder lazily unmounts every mount point below dir, deepest first.
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("read mountinfo: %w", err)
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		// The fifth field is the mount point (octal escapes for spaces: none
		// in a directory of os.MkdirTemp).
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}
