package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/metrics"
)

// promised is every family docs/operations.md and the dashboards rely on.
var promised = []string{
	"chom_http_requests_total", "chom_http_request_duration_seconds", "chom_http_requests_in_flight",
	"chom_queue_jobs_total", "chom_queue_jobs_duration_seconds", "chom_queue_jobs_failed_total",
	"chom_queue_jobs_pending", "chom_queue_jobs_active", "chom_queue_jobs_retry", "chom_queue_jobs_archived",
	"chom_queue_latency_seconds", "chom_queue_inspect_errors_total",
	"chom_db_queries_total", "chom_db_query_errors_total", "chom_db_query_duration_seconds",
	"chom_cache_hits_total", "chom_cache_misses_total",
	"chom_sites", "chom_backups",
	"chom_outbox_lag_seconds", "chom_events_published_total", "chom_events_publish_failed_total", "chom_relay_leader",
	"chom_circuit_breaker_state", "chom_rate_limited_total",
}

// Names lists every promised family (labelled ones with no series yet too),
// the Go and process families, sorted; GaugeFunc and CounterFunc add theirs and
// refuse a duplicate.
func TestNames(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	names := m.Names()
	if !slices.IsSorted(names) {
		t.Errorf("Names not sorted: %v", names)
	}
	for _, n := range append(slices.Clone(promised), "go_goroutines", "go_memstats_alloc_bytes") {
		if !slices.Contains(names, n) {
			t.Errorf("Names lacks %s", n)
		}
	}
	if err := m.GaugeFunc("chom_test_gauge", "a test gauge", func() float64 { return 4 }); err != nil {
		t.Fatal(err)
	}
	if err := m.CounterFunc("chom_test_total", "a test counter", func() float64 { return 7 }); err != nil {
		t.Fatal(err)
	}
	if err := m.GaugeFunc("chom_test_gauge", "again", func() float64 { return 0 }); err == nil {
		t.Error("GaugeFunc registered a duplicate name")
	}
	names = m.Names()
	if !slices.Contains(names, "chom_test_gauge") || !slices.Contains(names, "chom_test_total") {
		t.Errorf("Names lacks the func metrics: %v", names)
	}
	if n, err := testutil.GatherAndCount(m.Gatherer(), "chom_test_gauge", "chom_test_total"); err != nil || n != 2 {
		t.Errorf("func metrics gathered %d, %v; want 2", n, err)
	}
	// Two registries never share state.
	if other := metrics.New(); slices.Contains(other.Names(), "chom_test_gauge") {
		t.Error("a second Metrics sees the first one's gauge")
	}
}

// HTTP labels stay bounded: an unknown method is OTHER, no route is unmatched.
func TestObserveHTTP(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	for range 3 {
		m.ObserveHTTP("POST", "/api/v1/sites", 202, 3*time.Millisecond)
	}
	m.ObserveHTTP("GET", "", 404, time.Millisecond)
	m.ObserveHTTP("BREW", "", 404, time.Millisecond)
	m.ObserveHTTP("GET", "/api/v1/sites/:id", 200, 20*time.Second)
	want := `
# HELP chom_http_requests_total HTTP requests answered by the ingress, by method, route template (unmatched for no route) and status.
# TYPE chom_http_requests_total counter
chom_http_requests_total{method="GET",route="/api/v1/sites/:id",status="200"} 1
chom_http_requests_total{method="GET",route="unmatched",status="404"} 1
chom_http_requests_total{method="OTHER",route="unmatched",status="404"} 1
chom_http_requests_total{method="POST",route="/api/v1/sites",status="202"} 3
`
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(want), "chom_http_requests_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(m.Gatherer(), "chom_http_request_duration_seconds"); err != nil || n != 4 {
		t.Errorf("duration series = %d, %v; want 4 (by method and route only)", n, err)
	}
	if got := sample(t, m, "chom_http_request_duration_seconds", "method", "POST", "route", "/api/v1/sites"); got.count != 3 {
		t.Errorf("POST /api/v1/sites observations = %d, want 3", got.count)
	}
	m.HTTPInFlight().Inc()
	if got := sample(t, m, "chom_http_requests_in_flight"); got.value != 1 {
		t.Errorf("in flight = %v, want 1", got.value)
	}
}

// point is one gathered series: a counter's or gauge's value, or a histogram's
// sample count and sum.
type point struct {
	value float64
	count uint64
	sum   float64
}

// sample gathers m and returns the series of family name whose labels include
// the given name/value pairs, failing the test when there is none.
func sample(t *testing.T, m *metrics.Metrics, name string, labels ...string) point {
	t.Helper()
	p, ok := lookup(t, m, name, labels...)
	if !ok {
		t.Fatalf("no series %s%v", name, labels)
	}
	return p
}

func lookup(t *testing.T, m *metrics.Metrics, name string, labels ...string) (point, bool) {
	t.Helper()
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, s := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range s.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue series
				}
			}
			switch {
			case s.Counter != nil:
				return point{value: s.GetCounter().GetValue()}, true
			case s.Gauge != nil:
				return point{value: s.GetGauge().GetValue()}, true
			case s.Histogram != nil:
				return point{count: s.GetHistogram().GetSampleCount(), sum: s.GetHistogram().GetSampleSum()}, true
			}
		}
	}
	return point{}, false
}

func TestObserveJob(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	m.ObserveJob("default", "site:provision", time.Second, nil)
	m.ObserveJob("default", "site:provision", time.Second, errors.New("boom"))
	m.ObserveJob("", "site:provision", time.Second, nil)
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"queue", "default", "type", "site:provision", "status", "succeeded"}, 1},
		{[]string{"queue", "default", "type", "site:provision", "status", "failed"}, 1},
		{[]string{"queue", "unknown", "type", "site:provision", "status", "succeeded"}, 1},
	} {
		if got := sample(t, m, "chom_queue_jobs_total", c.labels...).value; got != c.want {
			t.Errorf("chom_queue_jobs_total%v = %v, want %v", c.labels, got, c.want)
		}
	}
	if got := sample(t, m, "chom_queue_jobs_failed_total", "queue", "default").value; got != 1 {
		t.Errorf("failed = %v, want 1", got)
	}
	if got := sample(t, m, "chom_queue_jobs_duration_seconds", "queue", "default", "type", "site:provision"); got.count != 2 || got.sum != 2 {
		t.Errorf("duration = %+v, want 2 observations summing 2s", got)
	}
}

// Queue gauges come from the source at each scrape, one series per configured
// queue (zeros for a queue the source omits); a failing or hung source makes the
// scrape succeed without them and counts an error.
func TestTrackQueues(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	// Long enough that a loaded CI machine never times out the instant source;
	// the hung source then costs one second.
	metrics.SetScrapeTimeout(m, time.Second)
	var mode atomic.Int32 // 0 ok, 1 error, 2 hang until ctx ends
	m.TrackQueues(t.Context(), []string{"critical", "default", "low"}, func(ctx context.Context) ([]metrics.QueueDepth, error) {
		switch mode.Load() {
		case 1:
			return nil, errors.New("redis down")
		case 2:
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return []metrics.QueueDepth{{Queue: "default", Pending: 5, Active: 2, Retry: 1, Archived: 3, Latency: 1500 * time.Millisecond}}, nil
	})
	want := map[string]float64{"chom_queue_jobs_pending": 5, "chom_queue_jobs_active": 2, "chom_queue_jobs_retry": 1,
		"chom_queue_jobs_archived": 3, "chom_queue_latency_seconds": 1.5}
	for name, v := range want {
		if got := sample(t, m, name, "queue", "default").value; got != v {
			t.Errorf("%s{queue=default} = %v, want %v", name, got, v)
		}
		if got := sample(t, m, name, "queue", "low").value; got != 0 {
			t.Errorf("%s{queue=low} = %v, want 0", name, got)
		}
	}
	if got := sample(t, m, "chom_queue_jobs_failed_total", "queue", "critical").value; got != 0 {
		t.Errorf("failed_total{critical} = %v, want a zero series", got)
	}
	if got := sample(t, m, "chom_queue_inspect_errors_total").value; got != 0 {
		t.Errorf("inspect errors = %v, want 0", got)
	}
	for i, md := range []int32{1, 2} {
		mode.Store(md)
		start := time.Now()
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		body, _ := io.ReadAll(rec.Body)
		if rec.Code != 200 {
			t.Fatalf("mode %d: scrape status %d", md, rec.Code)
		}
		if time.Since(start) > 2*time.Second {
			t.Errorf("mode %d: scrape took %v", md, time.Since(start))
		}
		if strings.Contains(string(body), "chom_queue_jobs_pending{") {
			t.Errorf("mode %d: queue gauges present after a failed inspection", md)
		}
		if want := fmt.Sprintf("chom_queue_inspect_errors_total %d", i+1); !strings.Contains(string(body), want) {
			t.Errorf("mode %d: scrape lacks %q", md, want)
		}
	}
}

// Status counts are read at most once per 15s whatever the scrape rate; a failed
// read drops the family until the next read and counts a source error.
func TestTrackStatuses(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	var mu sync.Mutex
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	metrics.SetStatusClock(m, func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	var reads atomic.Int32
	var fail atomic.Bool
	sites := func(context.Context) (map[string]int, error) {
		reads.Add(1)
		if fail.Load() {
			return nil, errors.New("db down")
		}
		return map[string]int{"active": int(reads.Load()), "failed": 0}, nil
	}
	m.TrackStatuses(t.Context(), sites, func(context.Context) (map[string]int, error) {
		return map[string]int{"completed": 2}, nil
	})
	for range 5 {
		if got := sample(t, m, "chom_sites", "status", "active").value; got != 1 {
			t.Fatalf("active = %v, want the first read's 1", got)
		}
		advance(2 * time.Second)
	}
	if got := sample(t, m, "chom_backups", "status", "completed").value; got != 2 {
		t.Errorf("backups completed = %v, want 2", got)
	}
	if reads.Load() != 1 {
		t.Errorf("5 scrapes in 10s read the database %d times, want 1", reads.Load())
	}
	advance(5 * time.Second)
	if got := sample(t, m, "chom_sites", "status", "active").value; got != 2 {
		t.Errorf("after 15s active = %v, want a fresh read (2)", got)
	}
	fail.Store(true)
	advance(15 * time.Second)
	if _, ok := lookup(t, m, "chom_sites", "status", "active"); ok {
		t.Error("sites series present after a failed read")
	}
	if got := sample(t, m, "chom_metrics_source_errors_total", "source", "sites").value; got != 1 {
		t.Errorf("source errors = %v, want 1", got)
	}
}

func TestTrackRelayAndBreakers(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	if _, ok := lookup(t, m, "chom_relay_leader"); ok {
		t.Fatal("relay series before TrackRelay")
	}
	var state atomic.Value
	state.Store("closed")
	m.TrackRelay(t.Context(), func() metrics.RelayStats {
		return metrics.RelayStats{Published: 10, Failed: 2, Leader: true, Breaker: state.Load().(string)}
	}, func(context.Context) (time.Duration, error) { return 3 * time.Second, nil })
	vps := "half-open"
	m.TrackBreaker("vps_1", func() string { return vps })
	for name, want := range map[string]float64{"chom_events_published_total": 10, "chom_events_publish_failed_total": 2,
		"chom_relay_leader": 1, "chom_outbox_lag_seconds": 3} {
		if got := sample(t, m, name).value; got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	for _, c := range []struct {
		state string
		want  float64
	}{{"closed", 0}, {"half-open", 1}, {"open", 2}} {
		state.Store(c.state)
		if got := sample(t, m, "chom_circuit_breaker_state", "breaker", "kafka").value; got != c.want {
			t.Errorf("kafka breaker %s = %v, want %v", c.state, got, c.want)
		}
	}
	if got := sample(t, m, "chom_circuit_breaker_state", "breaker", "vps_1").value; got != 1 {
		t.Errorf("vps_1 breaker = %v, want 1", got)
	}
	m.TrackBreaker("vps_1", nil)
	if _, ok := lookup(t, m, "chom_circuit_breaker_state", "breaker", "vps_1"); ok {
		t.Error("vps_1 still reported after removal")
	}
}

func TestCacheAndRateLimited(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	tok := m.Cache("token")
	tok.Hit()
	tok.Hit()
	tok.Miss()
	_ = m.Cache("operation")
	m.RateLimited()
	for _, c := range []struct {
		name, cache string
		want        float64
	}{
		{"chom_cache_hits_total", "token", 2}, {"chom_cache_misses_total", "token", 1},
		{"chom_cache_hits_total", "operation", 0}, {"chom_cache_misses_total", "operation", 0},
	} {
		if got := sample(t, m, c.name, "cache", c.cache).value; got != c.want {
			t.Errorf("%s{cache=%s} = %v, want %v", c.name, c.cache, got, c.want)
		}
	}
	if got := sample(t, m, "chom_rate_limited_total").value; got != 1 {
		t.Errorf("rate limited = %v, want 1", got)
	}
	// A nil Metrics (no metrics configured) is safe to count into.
	var none *metrics.Metrics
	none.Cache("token").Hit()
	none.RateLimited()
}

// The security families have every documented reason at zero from New, so an
// increase() alert reads 0 before the first failure, and count what is fed.
func TestSecuritySeries(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	for _, r := range metrics.AuthFailureReasons {
		if s, ok := lookup(t, m, "chom_auth_failures_total", "reason", r); !ok || s.value != 0 {
			t.Errorf("chom_auth_failures_total{reason=%s} at start: %+v, %v; want 0", r, s, ok)
		}
	}
	for _, r := range metrics.SecurityRefusalReasons {
		if s, ok := lookup(t, m, "chom_security_refusals_total", "reason", r); !ok || s.value != 0 {
			t.Errorf("chom_security_refusals_total{reason=%s} at start: %+v, %v; want 0", r, s, ok)
		}
	}
	m.AuthFailed(metrics.AuthUnknown)
	m.AuthFailed(metrics.AuthUnknown)
	m.AuthFailed(metrics.AuthScope)
	m.AuthRateLimited()
	m.CrossSiteRefused()
	m.SecurityRefused("quota")
	for _, c := range []struct {
		name, label, value string
		want               float64
	}{
		{"chom_auth_failures_total", "reason", "unknown", 2}, {"chom_auth_failures_total", "reason", "scope", 1},
		{"chom_auth_failures_total", "reason", "missing", 0}, {"chom_security_refusals_total", "reason", "quota", 1},
	} {
		if got := sample(t, m, c.name, c.label, c.value).value; got != c.want {
			t.Errorf("%s{%s=%s} = %v, want %v", c.name, c.label, c.value, got, c.want)
		}
	}
	for _, name := range []string{"chom_auth_rate_limited_total", "chom_ops_cross_site_refused_total"} {
		if got := sample(t, m, name).value; got != 1 {
			t.Errorf("%s = %v, want 1", name, got)
		}
	}
	var none *metrics.Metrics
	none.AuthFailed(metrics.AuthMissing)
	none.AuthRateLimited()
	none.CrossSiteRefused()
	none.SecurityRefused("quota")
}

// The query hook counts statements by operation on a real database, errors
// apart from "no rows", and never allocates.
func TestQueryHook(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		m := metrics.New()
		db.AddQueryHook(m.QueryHook())
		ctx := t.Context()
		exec := func(q string) error { _, err := db.ExecContext(ctx, q); return err }
		for _, q := range []string{"CREATE TABLE hook_t (id INTEGER PRIMARY KEY)", "INSERT INTO hook_t (id) VALUES (1)",
			"insert into hook_t (id) values (2)", "UPDATE hook_t SET id = 3 WHERE id = 2", "DELETE FROM hook_t WHERE id = 3"} {
			if err := exec(q); err != nil {
				t.Fatal(err)
			}
		}
		var n int
		if err := db.NewSelect().Table("hook_t").ColumnExpr("count(*)").Scan(ctx, &n); err != nil {
			t.Fatal(err)
		}
		if err := db.NewSelect().Table("hook_t").ColumnExpr("id").Where("id = 99").Scan(ctx, &n); err == nil {
			t.Fatal("want no rows")
		}
		if err := exec("SELECT * FROM\nhook_missing"); err == nil {
			t.Fatal("want an error from a missing table")
		}
		want := map[string][2]float64{"SELECT": {3, 1}, "INSERT": {2, 0}, "UPDATE": {1, 0}, "DELETE": {1, 0}, "OTHER": {1, 0}}
		got := map[string][2]float64{}
		for op := range want {
			got[op] = [2]float64{sample(t, m, "chom_db_queries_total", "operation", op).value,
				sample(t, m, "chom_db_query_errors_total", "operation", op).value}
			if d := sample(t, m, "chom_db_query_duration_seconds", "operation", op); d.count != uint64(got[op][0]) {
				t.Errorf("%s: %d durations for %v queries", op, d.count, got[op][0])
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("[queries, errors] by operation (-want +got):\n%s", diff)
		}
	})
}

// The query hook allocates nothing per statement (the accept path runs a few
// per request at ~10k requests a second).
func TestQueryHookAllocs(t *testing.T) {
	hook := metrics.New().QueryHook()
	ev := &bun.QueryEvent{Query: "SELECT 1", StartTime: time.Now()}
	if a := testing.AllocsPerRun(100, func() { hook.AfterQuery(context.Background(), ev) }); a != 0 {
		t.Errorf("AfterQuery allocates %v times per call", a)
	}
}

// Once a (method, route, status) is known, recording it allocates nothing.
func TestObserveHTTPAllocs(t *testing.T) {
	m := metrics.New()
	m.ObserveHTTP("POST", "/api/v1/sites", 202, time.Millisecond)
	if a := testing.AllocsPerRun(100, func() { m.ObserveHTTP("POST", "/api/v1/sites", 202, time.Millisecond) }); a != 0 {
		t.Errorf("ObserveHTTP allocates %v times per call", a)
	}
}
