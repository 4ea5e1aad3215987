package metrics

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Bucket layouts. HTTP requests and queries are milliseconds; long polls end up
// in +Inf (up to 30s), which is why they are not worth finer buckets above 10s.
var (
	httpBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	dbBuckets   = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
	// A provision runs seconds to minutes (its timeout is 15m).
	jobBuckets = []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900}
)

// Metrics is one process's registry and every chom_* collector on it. It is safe
// for concurrent use. Build it with New.
type Metrics struct {
	reg *prometheus.Registry

	namesMu sync.Mutex
	names   map[string]struct{}

	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
	httpInFlight prometheus.Gauge
	httpMu       sync.RWMutex
	httpChildren map[httpKey]httpChild

	jobs        *prometheus.CounterVec
	jobDuration *prometheus.HistogramVec
	jobsFailed  *prometheus.CounterVec

	dbQueries, dbErrors *prometheus.CounterVec
	dbDuration          *prometheus.HistogramVec
	db                  [numDBOps]dbChild

	cacheHits, cacheMisses *prometheus.CounterVec
	rateLimited            prometheus.Counter
	crossSite              prometheus.Counter
	authFailures           *prometheus.CounterVec
	authLimited            prometheus.Counter
	securityRefusals       *prometheus.CounterVec
	sourceErrors           *prometheus.CounterVec

	queues   *queueCollector
	statuses *statusCollector
	certs    *certCollector
	relay    *relayCollector
	breakers *breakerCollector
	fleet    *fleetCollector

	healthChecks, usageRecords, meterRuns, billingEvents *countersCollector
}

// New returns a Metrics with its own registry holding the Go and process
// collectors and every chom_* family (see the package documentation and the
// docs/operations.md, Metrics, for what each means). It panics only if the families
// below clash, which is a programming error caught by the tests.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), names: make(map[string]struct{}), httpChildren: make(map[httpKey]httpChild)}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Only the Go and process families are learnt from a gather: ours are tracked
	// as they are created, so a labelled family with no series yet is named too.
	if mfs, err := m.reg.Gather(); err == nil {
		for _, mf := range mfs {
			m.names[mf.GetName()] = struct{}{}
		}
	}

	m.httpRequests = counterVec(m, "chom_http_requests_total",
		"HTTP requests answered by the ingress, by method, route template (unmatched for no route) and status.",
		"method", "route", "status")
	m.httpDuration = histogramVec(m, "chom_http_request_duration_seconds",
		"Time from the first middleware to the last byte written, by method and route template.", httpBuckets,
		"method", "route")
	m.httpInFlight = gauge(m, "chom_http_requests_in_flight", "HTTP requests being served now.")

	m.jobs = counterVec(m, "chom_queue_jobs_total",
		"Task attempts finished by this worker, by queue, task type and status (succeeded; failed when the attempt returned an error; deferred when a breaker or limit put it off).",
		"queue", "type", "status")
	m.jobDuration = histogramVec(m, "chom_queue_jobs_duration_seconds", "Time one task attempt took, by queue and task type.",
		jobBuckets, "queue", "type")
	m.jobsFailed = counterVec(m, "chom_queue_jobs_failed_total", "Task attempts that returned an error, by queue.", "queue")

	m.dbQueries = counterVec(m, "chom_db_queries_total",
		"Database statements run through bun, by operation (SELECT, INSERT, UPDATE, DELETE, OTHER).", "operation")
	m.dbErrors = counterVec(m, "chom_db_query_errors_total",
		"Database statements that failed (no rows is not a failure), by operation.", "operation")
	m.dbDuration = histogramVec(m, "chom_db_query_duration_seconds", "Time one database statement took, by operation.",
		dbBuckets, "operation")
	for op := range numDBOps {
		name := op.String()
		m.db[op] = dbChild{queries: m.dbQueries.WithLabelValues(name), errors: m.dbErrors.WithLabelValues(name),
			duration: m.dbDuration.WithLabelValues(name)}
	}

	m.cacheHits = counterVec(m, "chom_cache_hits_total", "Lookups answered from an in-process cache (token, operation).", "cache")
	m.cacheMisses = counterVec(m, "chom_cache_misses_total", "Lookups an in-process cache had to pass to the database.", "cache")
	m.rateLimited = counter(m, "chom_rate_limited_total", "Requests refused with 429 because their API token was over its rate.")
	m.crossSite = counter(m, "chom_ops_cross_site_refused_total",
		"Requests that would change queues or tasks through the ops UI refused with 403 because they came from another site (Sec-Fetch-Site, Origin).")
	m.authFailures = counterVec(m, "chom_auth_failures_total",
		"Requests refused because of their credential, by reason: missing, malformed, unknown (no live token with that hash: revoked and expired ones too until the store tells them apart), revoked, expired (a cached token past its expiry), scope (a live token without the route's scope, 403).",
		"reason")
	for _, r := range AuthFailureReasons {
		m.authFailures.WithLabelValues(r)
	}
	m.authLimited = counter(m, "chom_auth_rate_limited_total",
		"Requests refused with 429 before any token lookup because their client address failed authentication too often (CHOM_AUTH_FAIL_RATE, CHOM_AUTH_FAIL_BURST).")
	m.securityRefusals = counterVec(m, "chom_security_refusals_total",
		"Requests or connections refused for a security policy, by reason (see SecurityRefusalReasons); fed by the components that enforce each policy.",
		"reason")
	for _, r := range SecurityRefusalReasons {
		m.securityRefusals.WithLabelValues(r)
	}
	m.sourceErrors = counterVec(m, "chom_metrics_source_errors_total",
		"Scrape-time reads that failed or timed out (sites, backups, certificates, outbox_lag, vps, sweep); the series they feed are left out of that scrape.",
		"source")

	m.queues = newQueueCollector()
	m.statuses = newStatusCollector(m.sourceErrors)
	m.certs = newCertCollector(m.sourceErrors)
	m.relay = newRelayCollector(m.sourceErrors)
	m.breakers = newBreakerCollector()
	m.fleet = newFleetCollector(m.sourceErrors)
	m.healthChecks = newCountersCollector("chom_vps_health_checks_total",
		"VPS health check results recorded by this worker: healthy, degraded, unhealthy, unreachable.", "result")
	m.usageRecords = newCountersCollector("chom_usage_records_total",
		"Usage records written by this worker's meter runs, by metric (per-site records and totals alike).", "metric")
	m.meterRuns = newCountersCollector("chom_usage_meter_runs_total",
		"Meter runs of one tenant and period by result: recorded, already_recorded, failed, refused.", "result")
	m.billingEvents = newCountersCollector("chom_billing_events_total",
		"Records the reference billing consumer handled, by result: billed (an invoice line), duplicate (billed already), dead_lettered, ignored (no billing effect).", "result")
	for _, c := range []interface {
		prometheus.Collector
		familyNames() []string
	}{m.queues, m.statuses, m.certs, m.relay, m.breakers, m.fleet, m.healthChecks, m.usageRecords, m.meterRuns, m.billingEvents} {
		m.mustRegister(c, c.familyNames()...)
	}
	return m
}

// Handler serves the registry in the Prometheus text format. A collector that
// fails does not fail the scrape: the scrape-time collectors report their own
// errors as counters instead.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Gatherer is the registry, for tests (prometheus/testutil) and for serving it
// some other way.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Names returns the sorted name of every metric family registered so far: the Go
// and process families, every chom_* family New created (including labelled ones
// with no series yet) and those added by GaugeFunc and CounterFunc.
func (m *Metrics) Names() []string {
	m.namesMu.Lock()
	defer m.namesMu.Unlock()
	out := make([]string, 0, len(m.names))
	for n := range m.names {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// GaugeFunc registers a gauge whose value is fn() at each scrape, for a
// component's own figures. fn must be fast and safe for concurrent use. It fails
// when name is invalid or already registered.
func (m *Metrics) GaugeFunc(name, help string, fn func() float64) error {
	return m.register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn), name)
}

// CounterFunc registers a counter whose value is fn() at each scrape; fn must
// never go down (a component's monotonic total). It fails when name is invalid or
// already registered.
func (m *Metrics) CounterFunc(name, help string, fn func() float64) error {
	return m.register(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, fn), name)
}

// RateLimited counts one request refused with 429. A nil Metrics ignores it.
func (m *Metrics) RateLimited() {
	if m != nil {
		m.rateLimited.Inc()
	}
}

// Reasons of chom_auth_failures_total, every one created at zero by New.
const (
	AuthMissing   = "missing"
	AuthMalformed = "malformed"
	AuthUnknown   = "unknown"
	AuthRevoked   = "revoked"
	AuthExpired   = "expired"
	AuthScope     = "scope"
)

// AuthFailureReasons lists the documented reasons of chom_auth_failures_total.
var AuthFailureReasons = []string{AuthMissing, AuthMalformed, AuthUnknown, AuthRevoked, AuthExpired, AuthScope}

// SecurityRefusalReasons lists the documented reasons of
// chom_security_refusals_total, created at zero by New: host_key_mismatch (an
// SSH server whose key is not the pinned one) and quota (a tenant over a
// quota). A component enforcing a new policy adds its reason here.
var SecurityRefusalReasons = []string{"host_key_mismatch", "quota"}

// AuthFailed counts one request refused for its credential (reason: one of
// AuthFailureReasons). A nil Metrics ignores it.
func (m *Metrics) AuthFailed(reason string) {
	if m != nil {
		m.authFailures.WithLabelValues(reason).Inc()
	}
}

// AuthRateLimited counts one request refused with 429 because its address
// failed authentication too often. A nil Metrics ignores it.
func (m *Metrics) AuthRateLimited() {
	if m != nil {
		m.authLimited.Inc()
	}
}

// SecurityRefused counts one refusal under a security policy (reason: one of
// SecurityRefusalReasons). A nil Metrics ignores it.
func (m *Metrics) SecurityRefused(reason string) {
	if m != nil {
		m.securityRefusals.WithLabelValues(reason).Inc()
	}
}

// CrossSiteRefused counts one ops UI change refused as cross-site. A nil
// Metrics ignores it.
func (m *Metrics) CrossSiteRefused() {
	if m != nil {
		m.crossSite.Inc()
	}
}

// CacheStats counts the hits and misses of one named cache.
type CacheStats struct {
	hits, misses prometheus.Counter
}

// Cache returns the counters of the cache called name (label cache=name), with
// both series created at zero so rates work from the first scrape. A nil Metrics
// returns nil, whose Hit and Miss do nothing.
func (m *Metrics) Cache(name string) *CacheStats {
	if m == nil {
		return nil
	}
	return &CacheStats{hits: m.cacheHits.WithLabelValues(name), misses: m.cacheMisses.WithLabelValues(name)}
}

// Hit counts a lookup answered from the cache.
func (s *CacheStats) Hit() {
	if s != nil {
		s.hits.Inc()
	}
}

// Miss counts a lookup the cache passed on to the database.
func (s *CacheStats) Miss() {
	if s != nil {
		s.misses.Inc()
	}
}

func (m *Metrics) register(c prometheus.Collector, names ...string) error {
	if err := m.reg.Register(c); err != nil {
		return fmt.Errorf("metrics: register %v: %w", names, err)
	}
	m.namesMu.Lock()
	for _, n := range names {
		m.names[n] = struct{}{}
	}
	m.namesMu.Unlock()
	return nil
}

func (m *Metrics) mustRegister(c prometheus.Collector, names ...string) {
	if err := m.register(c, names...); err != nil {
		panic(err)
	}
}

func counterVec(m *Metrics, name, help string, labels ...string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	m.mustRegister(v, name)
	return v
}

func histogramVec(m *Metrics, name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	m.mustRegister(v, name)
	return v
}

func counter(m *Metrics, name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	m.mustRegister(c, name)
	return c
}

func gauge(m *Metrics, name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	m.mustRegister(g, name)
	return g
}

// scrapeTimeout bounds every scrape-time read (Redis, the database), so a slow
// dependency makes a scrape report an error, never hang it.
const scrapeTimeout = 2 * time.Second
