package local_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/local"
)

// procDir writes a fake /proc with the given loadavg and meminfo.
func procDir(t *testing.T, loadavg, meminfo string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range map[string]string{"loadavg": loadavg, "meminfo": meminfo} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const meminfo = "MemTotal:        8000000 kB\nMemFree:          100000 kB\nMemAvailable:    2000000 kB\nBuffers: 1 kB\n"

func TestLocalHealthProbe(t *testing.T) {
	t.Parallel()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/vps_b" {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(web.Close)
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "vps_down"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "vps_down", local.DownMarker), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := local.NewHealthProbe(local.HealthConfig{
		Root: root, ProcDir: procDir(t, "1.50 0.75 0.25 2/345 6789\n", meminfo),
		URL: func(s drivers.Server) string {
			if s.ID == "vps_a" || s.ID == "vps_b" {
				return web.URL + "/" + s.ID
			}
			return ""
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	probe := func(id string) (drivers.HealthReport, error) {
		return p.Probe(t.Context(), drivers.HealthTarget{Server: drivers.Server{ID: id}})
	}

	r, err := probe("vps_a")
	if err != nil {
		t.Fatal(err)
	}
	if !r.Reachable || !r.HostShared || r.Load1 != 1.5 || r.Load5 != 0.75 || r.Load15 != 0.25 || r.CPUs != runtime.NumCPU() ||
		r.MemTotalBytes != 8000000*1024 || r.MemAvailableBytes != 2000000*1024 || r.HostKey != "" {
		t.Errorf("report = %+v", r)
	}
	if r.DiskTotalBytes == 0 || r.DiskFreeBytes > r.DiskTotalBytes {
		t.Errorf("disk %d free of %d", r.DiskFreeBytes, r.DiskTotalBytes)
	}
	if r.HTTPStatus != 200 || r.HTTPSkipped || r.HTTPLatency <= 0 {
		t.Errorf("http = %d skipped=%v latency=%s", r.HTTPStatus, r.HTTPSkipped, r.HTTPLatency)
	}
	if r, err := probe("vps_b"); err != nil || r.HTTPStatus != 502 {
		t.Errorf("vps_b: %d, %v; want nginx's 502", r.HTTPStatus, err)
	}
	if r, err := probe("vps_nourl"); err != nil || !r.HTTPSkipped || r.HTTPStatus != 0 || r.HTTPError != local.NoNginx {
		t.Errorf("no URL: %+v, %v; want HTTP skipped", r, err)
	}
	if _, err := probe("vps_down"); !errors.Is(err, drivers.ErrUnreachable) {
		t.Errorf("marked down: %v, want ErrUnreachable", err)
	}
	if _, err := probe("../etc"); !errors.Is(err, drivers.ErrInvalidSpec) {
		t.Errorf("bad id: %v, want ErrInvalidSpec", err)
	}

	gone, err := local.NewHealthProbe(local.HealthConfig{Root: filepath.Join(root, "missing")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gone.Probe(t.Context(), drivers.HealthTarget{Server: drivers.Server{ID: "vps_a"}}); !errors.Is(err, drivers.ErrUnreachable) {
		t.Errorf("missing root: %v, want ErrUnreachable", err)
	}
}

func TestLocalHealthProbeBadProc(t *testing.T) {
	t.Parallel()
	for name, files := range map[string][2]string{
		"short loadavg":     {"1.0 2.0\n", meminfo},
		"negative load":     {"-1 0 0 1/1 1\n", meminfo},
		"no MemAvailable":   {"0 0 0 1/1 1\n", "MemTotal: 1 kB\n"},
		"meminfo not in kB": {"0 0 0 1/1 1\n", "MemTotal: 1 MB\nMemAvailable: 1 kB\n"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p, err := local.NewHealthProbe(local.HealthConfig{Root: t.TempDir(), ProcDir: procDir(t, files[0], files[1])})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Probe(t.Context(), drivers.HealthTarget{Server: drivers.Server{ID: "vps_a"}}); err == nil {
				t.Error("a malformed /proc gave no error")
			}
		})
	}
}

// The default probe reads this machine's real /proc.
func TestLocalHealthProbeRealProc(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	p, err := local.NewHealthProbe(local.HealthConfig{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.Probe(t.Context(), drivers.HealthTarget{Server: drivers.Server{ID: "vps_a"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.MemTotalBytes == 0 || r.MemAvailableBytes > r.MemTotalBytes || r.CPUs < 1 {
		t.Errorf("real /proc report = %+v", r)
	}
}

func TestLocalHealthConfigValidate(t *testing.T) {
	t.Parallel()
	if _, err := local.NewHealthProbe(local.HealthConfig{Root: "relative"}); err == nil {
		t.Error("relative root accepted")
	}
	if _, err := local.NewHealthProbe(local.HealthConfig{Root: "/tmp", ProcDir: "proc"}); err == nil {
		t.Error("relative proc dir accepted")
	}
}
