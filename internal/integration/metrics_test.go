package integration

import (
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/metrics"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// A short workload on real PostgreSQL, Redis and Kafka, every part on one
// registry as in `chom dev`: sites created, polled and provisioned by the worker,
// their events published by the relay, one unmatched path, one malformed body;
// then /metrics holds every promised series with values that match the workload.
func TestMetricsEndToEnd(t *testing.T) {
	t.Parallel()
	k := testenv.Kafka(t)
	m := metrics.New()
	s := newStack(t, testenv.Postgres(t), stackOpts{metrics: m, tokenTTL: 30 * time.Second, relay: &k})
	ctx := t.Context()

	relay := s.kit.Relay.Relay // the production wiring's relay (stacktest Options.Relay)

	const n = 5
	var ops []string
	for i := range n {
		ops = append(ops, s.createSite(s.tokenA, "m"+string(rune('a'+i))+".metrics.example", "html").ID)
	}
	for _, id := range ops {
		if op := s.waitOp(s.tokenA, id); op.Status != models.OpSucceeded {
			t.Fatalf("operation %s: %s", id, op.Status)
		}
	}
	for range 2 { // a finished operation is cached: the second read is a hit
		if r := s.do("GET", "/api/v1/operations/"+ops[0], s.tokenA, nil); r.status != http.StatusOK {
			t.Fatalf("GET operation: %d", r.status)
		}
	}
	if r := s.do("GET", "/api/v1/no-such-route/123", s.tokenA, nil); r.status != http.StatusNotFound {
		t.Fatalf("unmatched path: %d", r.status)
	}
	if r := s.do("POST", "/api/v1/sites", s.tokenA, `{"domain":`); r.status != http.StatusBadRequest {
		t.Fatalf("malformed body: %d %s", r.status, r.body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for relay.Stats().Published < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}

	// The fleet and usage series, which the production wiring tracks: one
	// health sweep through Redis and the worker, then its figures.
	run, err := s.healthSweep.Sweep(ctx, time.Now().UTC().Truncate(time.Minute))
	if err != nil || run.Enqueued == 0 {
		t.Fatalf("health sweep: %+v, %v", run, err)
	}
	for {
		if _, ok, err := s.store.LastCompleteSweep(ctx); err == nil && ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the health sweep did not complete")
		}
		time.Sleep(50 * time.Millisecond)
	}

	fams := scrape(t, s.url+"/metrics")
	type check struct {
		name   string
		labels map[string]string
		ok     func(float64) bool
		want   string
	}
	atLeast := func(v float64) func(float64) bool { return func(x float64) bool { return x >= v } }
	equal := func(v float64) func(float64) bool { return func(x float64) bool { return x == v } }
	present := func(float64) bool { return true }
	l := func(kv ...string) map[string]string {
		out := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	checks := []check{
		{"chom_http_requests_total", l("method", "POST", "route", "/api/v1/sites", "status", "202"), atLeast(n), ">= n"},
		{"chom_http_requests_total", l("method", "POST", "route", "/api/v1/sites", "status", "400"), equal(1), "1"},
		{"chom_http_requests_total", l("method", "GET", "route", "unmatched", "status", "404"), equal(1), "1"},
		{"chom_http_requests_total", l("method", "GET", "route", "/api/v1/operations/:id", "status", "200"), atLeast(n + 2), ">= n+2"},
		{"chom_http_request_duration_seconds", l("method", "POST", "route", "/api/v1/sites"), atLeast(n + 1), "count >= n+1"},
		{"chom_http_requests_in_flight", nil, equal(1), "1 (this scrape)"},
		{"chom_queue_jobs_total", l("queue", queue.QueueDefault, "type", queue.TypeSiteProvision, "status", "succeeded"), atLeast(n), ">= n"},
		{"chom_queue_jobs_duration_seconds", l("queue", queue.QueueDefault, "type", queue.TypeSiteProvision), atLeast(n), "count >= n"},
		{"chom_queue_jobs_failed_total", l("queue", queue.QueueDefault), equal(0), "0"},
		{"chom_db_queries_total", l("operation", "SELECT"), atLeast(1), "> 0"},
		{"chom_db_queries_total", l("operation", "INSERT"), atLeast(1), "> 0"},
		{"chom_db_queries_total", l("operation", "UPDATE"), atLeast(1), "> 0"},
		{"chom_db_query_errors_total", l("operation", "SELECT"), present, "present"},
		{"chom_db_query_duration_seconds", l("operation", "SELECT"), atLeast(1), "count > 0"},
		{"chom_cache_hits_total", l("cache", "token"), atLeast(1), "> 0"},
		{"chom_cache_misses_total", l("cache", "token"), atLeast(1), "> 0"},
		{"chom_cache_hits_total", l("cache", "operation"), atLeast(1), "> 0"},
		{"chom_cache_misses_total", l("cache", "operation"), atLeast(1), "> 0"},
		{"chom_rate_limited_total", nil, equal(0), "0"},
		{"chom_sites", l("status", models.SiteStatusActive), equal(n), "n"},
		{"chom_sites", l("status", models.SiteStatusFailed), equal(0), "0"},
		{"chom_events_published_total", nil, atLeast(n), ">= n"},
		{"chom_events_publish_failed_total", nil, present, "present"},
		{"chom_relay_leader", nil, equal(1), "1"},
		{"chom_outbox_lag_seconds", nil, atLeast(0), ">= 0"},
		{"chom_circuit_breaker_state", l("breaker", "kafka"), equal(0), "0 (closed)"},
		{"chom_queue_inspect_errors_total", nil, equal(0), "0"},
		{"go_goroutines", nil, atLeast(1), "> 0"},
		{"chom_vps_servers", l("health", models.HealthHealthy), atLeast(1), ">= 1"},
		{"chom_vps_servers", l("health", models.HealthUnhealthy), equal(0), "0"},
		{"chom_vps_health_checks_total", l("result", "healthy"), atLeast(1), ">= 1"},
		{"chom_vps_health_sweep_servers", nil, atLeast(1), ">= 1"},
		{"chom_vps_health_sweep_duration_seconds", nil, atLeast(0), ">= 0"},
		{"chom_usage_meter_runs_total", l("result", "recorded"), equal(0), "0 (no period metered)"},
		{"chom_usage_records_total", l("metric", "disk_bytes"), equal(0), "0"},
	}
	for _, q := range []string{queue.QueueCritical, queue.QueueDefault, queue.QueueLow} {
		for _, name := range []string{"chom_queue_jobs_pending", "chom_queue_jobs_active", "chom_queue_jobs_retry",
			"chom_queue_jobs_archived", "chom_queue_latency_seconds"} {
			checks = append(checks, check{name, l("queue", q), atLeast(0), ">= 0"})
		}
	}
	for _, c := range checks {
		v, ok := seriesValue(fams, c.name, c.labels)
		if !ok {
			t.Errorf("/metrics lacks %s%v", c.name, c.labels)
			continue
		}
		if !c.ok(v) {
			t.Errorf("%s%v = %v, want %s", c.name, c.labels, v, c.want)
		}
	}
	// Route labels stay templates: no raw path or ID appears.
	for _, s := range fams["chom_http_requests_total"].GetMetric() {
		for _, lp := range s.GetLabel() {
			if lp.GetName() == "route" && (lp.GetValue() == "/api/v1/no-such-route/123" || lp.GetValue() == "/api/v1/operations/"+ops[0]) {
				t.Errorf("raw path in route label: %s", lp.GetValue())
			}
		}
	}
}

// scrape GETs url and parses the Prometheus text format.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d", res.StatusCode)
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// seriesValue finds the series of name whose labels include want: a counter's
// or gauge's value, a histogram's sample count.
func seriesValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, s := range mf.GetMetric() {
		have := map[string]string{}
		for _, lp := range s.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case s.Counter != nil:
			return s.GetCounter().GetValue(), true
		case s.Gauge != nil:
			return s.GetGauge().GetValue(), true
		case s.Histogram != nil:
			return float64(s.GetHistogram().GetSampleCount()), true
		case s.Untyped != nil:
			return s.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}
