package local

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/chomhq/chom/drivers"
)

// NoNginx is the HTTPError of a local probe with no URL to ask: `chom dev` runs
// no nginx, so HTTP is reported as skipped rather than failed.
const NoNginx = "no nginx in local driver"

// DownMarker is the file that, present in a server's directory, makes the local
// probe report that server unreachable: how to take a server "down" in
// `chom dev` (touch <root>/<vps_id>/down) and bring it back (rm it).
const DownMarker = "down"

// HealthConfig configures the local health probe.
type HealthConfig struct {
	// Root is the local driver's root (one sub-directory per server), as in
	// Config.Root. Required.
	Root string
	// ProcDir is where loadavg and meminfo are read. Default /proc.
	ProcDir string
	// URL returns the address a plain GET checks for server, or "" for none
	// (then HTTP is skipped: HTTPSkipped with HTTPError NoNginx). Optional:
	// without it every server's HTTP is skipped.
	URL func(server drivers.Server) string
	// Client makes the HTTP checks. Default: a client that follows no redirects
	// (any answer of nginx counts, a 301 included).
	Client *http.Client
}

// Validate reports every problem with c at once, or nil.
func (c HealthConfig) Validate() error {
	var errs []error
	if c.Root == "" || !filepath.IsAbs(c.Root) {
		errs = append(errs, fmt.Errorf("local health: root %q must be an absolute path", c.Root))
	}
	if c.ProcDir != "" && !filepath.IsAbs(c.ProcDir) {
		errs = append(errs, fmt.Errorf("local health: proc dir %q must be an absolute path", c.ProcDir))
	}
	return errors.Join(errs...)
}

// HealthProbe measures "servers" that are directories on this machine: load and
// memory are the machine's own (/proc/loadavg, /proc/meminfo, runtime.NumCPU),
// disk is the filesystem of the server's directory (or of the root, before the
// first site created the directory), and HTTP is a GET of the configured URL.
// A missing root, or a DownMarker file in the server's directory, is
// unreachable. There is no host key. Every report is HostShared: the figures
// are this machine's, so the health job judges only reachability and HTTP.
type HealthProbe struct {
	root, proc string
	url        func(drivers.Server) string
	client     *http.Client
}

var _ drivers.HealthProbe = (*HealthProbe)(nil)

// NewHealthProbe validates cfg and returns the probe.
func NewHealthProbe(cfg HealthConfig) (*HealthProbe, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ProcDir == "" {
		cfg.ProcDir = "/proc"
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return &HealthProbe{root: filepath.Clean(cfg.Root), proc: cfg.ProcDir, url: cfg.URL, client: cfg.Client}, nil
}

// Probe measures target once within ctx.
func (p *HealthProbe) Probe(ctx context.Context, target drivers.HealthTarget) (drivers.HealthReport, error) {
	start := time.Now()
	var r drivers.HealthReport
	id := target.Server.ID
	if id == "" || strings.ContainsAny(id, `/\`) || id == "." || id == ".." {
		return r, fmt.Errorf("local health: server id %q: %w", id, drivers.ErrInvalidSpec)
	}
	dir := filepath.Join(p.root, id)
	if _, err := os.Stat(filepath.Join(dir, DownMarker)); err == nil {
		return r, fmt.Errorf("local health %s: marked down: %w", id, drivers.ErrUnreachable)
	}
	disk := dir
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		disk = p.root // no site yet: the directory will live on the root's filesystem
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(disk, &st); err != nil {
		return r, fmt.Errorf("local health %s: statfs %s: %v: %w", id, disk, err, drivers.ErrUnreachable)
	}
	r.Reachable = true
	r.HostShared = true
	r.ConnectLatency = time.Since(start)
	r.DiskTotalBytes = st.Blocks * uint64(st.Bsize)
	r.DiskFreeBytes = st.Bavail * uint64(st.Bsize)
	r.CPUs = runtime.NumCPU()
	var err error
	if r.Load1, r.Load5, r.Load15, err = readLoadavg(filepath.Join(p.proc, "loadavg")); err != nil {
		return r, fmt.Errorf("local health %s: %w", id, err)
	}
	if r.MemTotalBytes, r.MemAvailableBytes, err = readMeminfo(filepath.Join(p.proc, "meminfo")); err != nil {
		return r, fmt.Errorf("local health %s: %w", id, err)
	}
	if err := ctx.Err(); err != nil {
		return r, err
	}
	p.checkHTTP(ctx, target.Server, &r)
	return r, nil
}

// checkHTTP fills the HTTP fields of r from a GET of the server's URL.
func (p *HealthProbe) checkHTTP(ctx context.Context, server drivers.Server, r *drivers.HealthReport) {
	u := ""
	if p.url != nil {
		u = p.url(server)
	}
	if u == "" {
		r.HTTPSkipped, r.HTTPError = true, NoNginx
		return
	}
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		r.HTTPError = "bad url: " + err.Error()
		return
	}
	res, err := p.client.Do(req)
	r.HTTPLatency = time.Since(start)
	if err != nil {
		r.HTTPError = err.Error()
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	_ = res.Body.Close()
	r.HTTPStatus = res.StatusCode
}

// readLoadavg parses the three load averages of a /proc/loadavg file.
func readLoadavg(path string) (l1, l5, l15 float64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("read load average: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return 0, 0, 0, fmt.Errorf("read load average: %s: want 3 fields, got %q", path, b)
	}
	var out [3]float64
	for i := range out {
		if out[i], err = strconv.ParseFloat(f[i], 64); err != nil || out[i] < 0 {
			return 0, 0, 0, fmt.Errorf("read load average: %s: field %d %q is not a load", path, i+1, f[i])
		}
	}
	return out[0], out[1], out[2], nil
}

// readMeminfo returns MemTotal and MemAvailable of a /proc/meminfo file, in bytes.
func readMeminfo(path string) (total, available uint64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, fmt.Errorf("read meminfo: %w", err)
	}
	var haveTotal, haveAvail bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "MemTotal" && name != "MemAvailable") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("read meminfo: %s: bad %s line %q", path, name, sc.Text())
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("read meminfo: %s: bad %s value %q", path, name, f[0])
		}
		if name == "MemTotal" {
			total, haveTotal = kb*1024, true
		} else {
			available, haveAvail = kb*1024, true
		}
	}
	if !haveTotal || !haveAvail {
		return 0, 0, fmt.Errorf("read meminfo: %s: MemTotal or MemAvailable missing", path)
	}
	return total, available, nil
}
