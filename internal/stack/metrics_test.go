package stack

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chomhq/chom/metrics"
)

func TestMetricsAddr(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ env, want string }{
		{"", MetricsAddrWorker}, {"off", ""}, {"0.0.0.0:9100", "0.0.0.0:9100"},
	} {
		cfg, err := LoadConfig(func(k string) string { return map[string]string{"CHOM_METRICS_LISTEN": c.env}[k] })
		if err != nil {
			t.Fatal(err)
		}
		if got := metricsAddr(cfg, MetricsAddrWorker); got != c.want {
			t.Errorf("CHOM_METRICS_LISTEN=%q: addr %q, want %q", c.env, got, c.want)
		}
	}
}

// The metrics listener serves GET /metrics until its context ends, refuses a
// taken port at start-up, and is absent when disabled.
func TestMetricsServer(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if runners, err := metricsServer("", metrics.New(), time.Second, log); err != nil || runners != nil {
		t.Fatalf("disabled: %v, %v", runners, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if _, err := metricsServer(addr, metrics.New(), time.Second, log); err == nil {
		t.Error("a taken port did not fail")
	}
	ln.Close()
	runners, err := metricsServer(addr, metrics.New(), time.Second, log)
	if err != nil || len(runners) != 1 {
		t.Fatalf("metricsServer: %v, %v", runners, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- runners[0](ctx) }()
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), "go_goroutines") {
		t.Errorf("GET /metrics: %d %.300s", res.StatusCode, body)
	}
	if res, err := http.Get("http://" + addr + HealthPath); err != nil {
		t.Errorf("GET %s: %v", HealthPath, err)
	} else {
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(string(body), `"ok"`) {
			t.Errorf("GET %s: %d %s", HealthPath, res.StatusCode, body)
		}
	}
	if res, err := http.Get("http://" + addr + "/other"); err == nil {
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("GET /other: %d, want 404", res.StatusCode)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("stop: %v", err)
	}
}
