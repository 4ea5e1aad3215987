package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/chomhq/chom/metrics"
)

// Runner is a role (or a part of one) that runs until ctx ends.
type Runner func(ctx context.Context) error

// RunAll runs every fn until ctx ends or one fails; then it cancels the rest
// and waits for them, returning the first error.
func RunAll(ctx context.Context, fns ...Runner) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(fns))
	for _, fn := range fns {
		go func() { errc <- fn(ctx) }()
	}
	var first error
	for range fns {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// ServeHTTP serves h on ln until ctx ends, then drains in-flight requests for
// up to shutdown. Long polls last at most 30s, so the write timeout leaves
// room for them.
func ServeHTTP(ctx context.Context, ln net.Listener, h http.Handler, shutdown time.Duration, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      45 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdown)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		if !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("http shutdown: %w", err)
		}
		// The drain time is up. What is still open (a long poll, or a connection a
		// client opened but has not used yet, which net/http waits 5s for) is cut,
		// as the shutdown timeout promises: a normal stop, not a failure.
		log.Warn("shutdown timeout reached; closing the connections still open", "timeout", shutdown.String())
		_ = srv.Close()
	}
	return nil
}

// Where the processes without an API serve /metrics unless
// CHOM_METRICS_LISTEN says otherwise: loopback (the figures are for a local
// agent or a sidecar to scrape, never the internet) and one port each, so
// they can share a host. The ingress and chom dev serve /metrics on their API
// listener instead.
const (
	MetricsAddrWorker    = "127.0.0.1:9464"
	MetricsAddrScheduler = "127.0.0.1:9465"
	MetricsAddrRelay     = "127.0.0.1:9466"
	MetricsAddrBilling   = "127.0.0.1:9467"
)

// metricsOff is the CHOM_METRICS_LISTEN value that disables the listener. An
// empty value cannot mean that: getenv cannot tell it from an unset variable,
// which takes the process's default.
const metricsOff = "off"

// metricsAddr is the /metrics address of a process whose default is def: ""
// when CHOM_METRICS_LISTEN=off.
func metricsAddr(c Config, def string) string {
	switch c.MetricsListen {
	case "":
		return def
	case metricsOff:
		return ""
	}
	return c.MetricsListen
}

// HealthPath is the liveness endpoint of the processes without an API
// (worker, scheduler, relay, billing-consumer), served beside /metrics on
// their CHOM_METRICS_LISTEN listener. It answers 200 while the process serves
// HTTP: a liveness signal for a container's HEALTHCHECK or a supervisor, not
// a readiness check of the database or Redis (the ingress's
// /api/v1/health/detailed is that).
const HealthPath = "/health"

// serveLiveness answers HealthPath.
func serveLiveness(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = io.WriteString(w, `{"status":"ok"}`+"\n")
}

// metricsServer listens on addr now (so a taken port fails the start) and
// returns the runner that serves m at GET /metrics there until ctx ends; none
// when addr is "" (disabled).
func metricsServer(addr string, m *metrics.Metrics, shutdown time.Duration, log *slog.Logger) ([]Runner, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen %s (CHOM_METRICS_LISTEN): %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET "+HealthPath, serveLiveness)
	log.Info("metrics listening", "addr", ln.Addr().String(), "path", "/metrics", "health", HealthPath)
	return []Runner{func(ctx context.Context) error { return ServeHTTP(ctx, ln, mux, shutdown, log) }}, nil
}
