package metrics_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/chomhq/chom/metrics"
)

// fed returns a Metrics in which every chom_* family has series: each Track*
// source is given and each Observe* method called once, so the lint below sees
// every family's name, type and help, not only those a fresh registry shows.
func fed(t *testing.T) *metrics.Metrics {
	t.Helper()
	m := metrics.New()
	ctx := t.Context()
	m.ObserveHTTP("GET", "/api/v1/sites", 200, time.Millisecond)
	m.HTTPInFlight().Inc()
	m.ObserveJob("default", "site:provision", time.Second, nil)
	m.ObserveDeferred("default", "site:provision", time.Second)
	m.Cache("token").Hit()
	m.RateLimited()
	m.TrackQueues(ctx, []string{"default"}, func(context.Context) ([]metrics.QueueDepth, error) {
		return []metrics.QueueDepth{{Queue: "default", Pending: 1}}, nil
	})
	counts := func(context.Context) (map[string]int, error) { return map[string]int{"active": 1}, nil }
	m.TrackStatuses(ctx, counts, counts)
	m.TrackCertificates(ctx, func(context.Context) ([]metrics.CertificateExpiry, error) {
		return []metrics.CertificateExpiry{{SiteID: "site_x", Source: "acme", NotAfter: time.Unix(1_800_000_000, 0)}}, nil
	})
	m.TrackFleet(ctx, counts, func(context.Context) (int, time.Duration, bool, error) { return 2, time.Second, true, nil })
	m.TrackRelay(ctx, func() metrics.RelayStats { return metrics.RelayStats{Breaker: "closed"} },
		func(context.Context) (time.Duration, error) { return 0, nil })
	one := func() map[string]uint64 { return map[string]uint64{"x": 1} }
	m.TrackHealthChecks(one)
	m.TrackUsage(one, one)
	m.TrackBilling(one)
	return m
}

// Every family follows the Prometheus naming conventions as promtool checks
// them (client_golang's promlint is the same linter): counters end in _total,
// nothing else does, units are base units with their suffix, every family has
// help, no camelCase. internal/metricscheck runs promtool itself on every
// process's /metrics.
func TestLintClean(t *testing.T) {
	t.Parallel()
	m := fed(t)
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		seen[mf.GetName()] = true
	}
	for _, n := range m.Names() {
		if strings.HasPrefix(n, "chom_") && !seen[n] {
			t.Errorf("%s has no series in the fed registry: the lint would not see it", n)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// InitJobs creates every documented series of a task kind at zero, and a
// later attempt counts into the same series.
func TestInitJobs(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	m.InitJobs([]metrics.JobKind{{Queue: "default", Type: "site:provision"}, {Queue: "low", Type: "usage:meter"}})
	for _, k := range [][2]string{{"default", "site:provision"}, {"low", "usage:meter"}} {
		for _, status := range []string{metrics.JobSucceeded, metrics.JobFailed, metrics.JobDeferred} {
			if got := sample(t, m, "chom_queue_jobs_total", "queue", k[0], "type", k[1], "status", status).value; got != 0 {
				t.Errorf("chom_queue_jobs_total{%s,%s,%s} = %v, want 0", k[0], k[1], status, got)
			}
		}
		if got := sample(t, m, "chom_queue_jobs_duration_seconds", "queue", k[0], "type", k[1]); got.count != 0 {
			t.Errorf("duration{%s,%s} has %d observations, want 0", k[0], k[1], got.count)
		}
		if got := sample(t, m, "chom_queue_jobs_failed_total", "queue", k[0]).value; got != 0 {
			t.Errorf("failed_total{%s} = %v, want 0", k[0], got)
		}
	}
	// Only the kinds given: no cross product of queues and types.
	if _, ok := lookup(t, m, "chom_queue_jobs_total", "queue", "low", "type", "site:provision"); ok {
		t.Error("InitJobs created site:provision on low, which no kind names")
	}
	if n, err := testutil.GatherAndCount(m.Gatherer(), "chom_queue_jobs_total"); err != nil || n != 6 {
		t.Errorf("chom_queue_jobs_total has %d series, %v; want 6 (2 kinds × 3 statuses)", n, err)
	}
	m.ObserveJob("default", "site:provision", time.Second, nil)
	if got := sample(t, m, "chom_queue_jobs_total", "queue", "default", "type", "site:provision", "status", "succeeded").value; got != 1 {
		t.Errorf("after one success = %v, want 1", got)
	}
	var none *metrics.Metrics
	none.InitJobs([]metrics.JobKind{{Queue: "default", Type: "x"}})
}

// InitHTTP creates a zero counter for every documented status of every route
// and a duration histogram per route, with the same label normalisation as
// ObserveHTTP.
func TestInitHTTP(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	m.InitHTTP([]metrics.HTTPRoute{
		{Method: "POST", Route: "/api/v1/sites", Statuses: []int{202, 422, 500}},
		{Method: "GET", Route: "/api/v1/sites/:id", Statuses: []int{200, 404}},
		{Method: "GET", Route: "/api/v1/health"},
	})
	want := `
# HELP chom_http_requests_total HTTP requests answered by the ingress, by method, route template (unmatched for no route) and status.
# TYPE chom_http_requests_total counter
chom_http_requests_total{method="GET",route="/api/v1/sites/:id",status="200"} 0
chom_http_requests_total{method="GET",route="/api/v1/sites/:id",status="404"} 0
chom_http_requests_total{method="POST",route="/api/v1/sites",status="202"} 0
chom_http_requests_total{method="POST",route="/api/v1/sites",status="422"} 0
chom_http_requests_total{method="POST",route="/api/v1/sites",status="500"} 0
`
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(want), "chom_http_requests_total"); err != nil {
		t.Error(err)
	}
	for _, r := range [][2]string{{"POST", "/api/v1/sites"}, {"GET", "/api/v1/sites/:id"}, {"GET", "/api/v1/health"}} {
		if got := sample(t, m, "chom_http_request_duration_seconds", "method", r[0], "route", r[1]); got.count != 0 {
			t.Errorf("duration{%s %s} = %d observations, want 0", r[0], r[1], got.count)
		}
	}
	m.ObserveHTTP("POST", "/api/v1/sites", 202, time.Millisecond)
	if got := sample(t, m, "chom_http_requests_total", "method", "POST", "route", "/api/v1/sites", "status", "202").value; got != 1 {
		t.Errorf("after one request = %v, want 1", got)
	}
	var none *metrics.Metrics
	none.InitHTTP([]metrics.HTTPRoute{{Method: "GET", Route: "/", Statuses: []int{200}}})
}

// Tracking a scrape-time source creates its error series at zero; a source
// not given gets none.
func TestSourceErrorsAtZero(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	if n, err := testutil.GatherAndCount(m.Gatherer(), "chom_metrics_source_errors_total"); err != nil || n != 0 {
		t.Fatalf("source errors before any Track: %d series, %v", n, err)
	}
	counts := func(context.Context) (map[string]int, error) { return map[string]int{}, nil }
	m.TrackStatuses(t.Context(), counts, nil)
	m.TrackFleet(t.Context(), counts, func(context.Context) (int, time.Duration, bool, error) { return 0, 0, false, nil })
	m.TrackRelay(t.Context(), func() metrics.RelayStats { return metrics.RelayStats{} },
		func(context.Context) (time.Duration, error) { return 0, nil })
	for _, s := range []string{"sites", "vps", "sweep", "outbox_lag"} {
		if got := sample(t, m, "chom_metrics_source_errors_total", "source", s).value; got != 0 {
			t.Errorf("source errors{%s} = %v, want 0", s, got)
		}
	}
	if _, ok := lookup(t, m, "chom_metrics_source_errors_total", "source", "backups"); ok {
		t.Error("backups error series created without a backups source")
	}
}
