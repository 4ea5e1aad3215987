package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/metrics"
	"github.com/chomhq/chom/queue"
)

// Where the processes without an API serve /metrics unless CHOM_METRICS_LISTEN
// says otherwise: loopback (the figures are for a local agent or a sidecar to
// scrape, never the internet) and one port each, so they can share a host. The
// ingress and chom dev serve /metrics on their API listener instead.
const (
	metricsAddrWorker    = "127.0.0.1:9464"
	metricsAddrScheduler = "127.0.0.1:9465"
	metricsAddrRelay     = "127.0.0.1:9466"
	metricsAddrBilling   = "127.0.0.1:9467"
)

// metricsOff is the CHOM_METRICS_LISTEN value that disables the listener. An
// empty value cannot mean that: getenv cannot tell it from an unset variable,
// which takes the process's default.
const metricsOff = "off"

// metricsAddr is the /metrics address of a process whose default is def: ""
// when CHOM_METRICS_LISTEN=off.
func metricsAddr(c config, def string) string {
	switch c.MetricsListen {
	case "":
		return def
	case metricsOff:
		return ""
	}
	return c.MetricsListen
}

// instrumentDB measures every statement of db in m (nil m: nothing). bun v1.3's
// AddQueryHook is marked deprecated in favour of an option it does not have yet;
// it is the only way to add a hook to an opened DB.
func instrumentDB(db *bun.DB, m *metrics.Metrics) {
	if m != nil {
		db.AddQueryHook(m.QueryHook())
	}
}

// trackPlatform makes m report the platform-wide figures read at scrape time:
// queue depths from Redis and site and backup counts from the database. ctx is
// the process's lifetime.
func trackPlatform(ctx context.Context, m *metrics.Metrics, b *backends) {
	insp := queue.NewInspector(b.redis)
	m.TrackQueues(ctx, queueNames(), func(ctx context.Context) ([]metrics.QueueDepth, error) {
		ds, err := insp.Depths(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]metrics.QueueDepth, len(ds))
		for i, d := range ds {
			out[i] = metrics.QueueDepth{Queue: d.Queue, Pending: d.Pending, Active: d.Active, Retry: d.Retry,
				Archived: d.Archived, Latency: time.Duration(d.LatencyMS) * time.Millisecond}
		}
		return out, nil
	})
	m.TrackStatuses(ctx, b.store.CountSitesByStatus, b.store.CountBackupsByStatus)
	m.TrackFleet(ctx, b.store.CountVPSByHealth, func(ctx context.Context) (int, time.Duration, bool, error) {
		s, ok, err := b.store.LastCompleteSweep(ctx)
		return s.Servers, s.Duration, ok, err
	})
}

// queueNames are the queues workers serve (queue.Weights), sorted.
func queueNames() []string {
	var names []string
	for q := range queue.Weights() {
		names = append(names, q)
	}
	slices.Sort(names)
	return names
}

// trackRelay makes m report r's counters, leadership, outbox lag and Kafka
// breaker.
func trackRelay(ctx context.Context, m *metrics.Metrics, r *events.Relay) {
	m.TrackRelay(ctx, func() metrics.RelayStats {
		s := r.Stats()
		return metrics.RelayStats{Published: s.Published, Failed: s.Failed, Leader: s.Leader, Breaker: s.Breaker}
	}, r.Lag)
}

// metricsServer listens on addr now (so a taken port fails the start) and
// returns the runner that serves m at GET /metrics there until ctx ends; none
// when addr is "" (disabled).
func metricsServer(addr string, m *metrics.Metrics, shutdown time.Duration, log *slog.Logger) ([]func(context.Context) error, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen %s (CHOM_METRICS_LISTEN): %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	log.Info("metrics listening", "addr", ln.Addr().String(), "path", "/metrics")
	return []func(context.Context) error{
		func(ctx context.Context) error { return serveHTTP(ctx, ln, mux, shutdown, log) },
	}, nil
}
