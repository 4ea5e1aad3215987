package metrics

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RelayStats are the outbox relay's figures (events.Relay.Stats, adapted by
// cmd/chom).
type RelayStats struct {
	// Published and Failed are monotonic counts of records.
	Published, Failed uint64
	// Leader is true while this relay holds the outbox lease.
	Leader bool
	// Breaker is the Kafka circuit breaker's state: closed, half-open or open.
	Breaker string
}

// TrackRelay makes scrapes report chom_events_published_total,
// chom_events_publish_failed_total and chom_relay_leader from stats, and
// chom_outbox_lag_seconds from lag (a database read bounded by a short timeout;
// on failure the gauge is left out and chom_metrics_source_errors_total
// {source="outbox_lag"} counts it). The breaker's state is
// chom_circuit_breaker_state{breaker="kafka"}. stats must be cheap and safe for
// concurrent use; ctx bounds every lag read. With lag, the outbox_lag error
// series is created at zero at once.
func (m *Metrics) TrackRelay(ctx context.Context, stats func() RelayStats, lag func(ctx context.Context) (time.Duration, error)) {
	m.initSources(map[string]bool{"outbox_lag": lag != nil})
	m.relay.src.Store(&relaySource{ctx: ctx, stats: stats, lag: lag})
	m.TrackBreaker("kafka", func() string { return stats().Breaker })
}

type relaySource struct {
	ctx   context.Context
	stats func() RelayStats
	lag   func(ctx context.Context) (time.Duration, error)
}

type relayCollector struct {
	src     atomic.Pointer[relaySource]
	errs    *prometheus.CounterVec
	timeout time.Duration

	lagDesc, published, failed, leader *prometheus.Desc
}

func newRelayCollector(errs *prometheus.CounterVec) *relayCollector {
	return &relayCollector{
		errs: errs, timeout: scrapeTimeout,
		lagDesc: prometheus.NewDesc("chom_outbox_lag_seconds",
			"Age of the oldest outbox row not yet published to Kafka; 0 when the outbox is drained.", nil, nil),
		published: prometheus.NewDesc("chom_events_published_total",
			"Outbox records Kafka acknowledged to this relay (a republished row counts again).", nil, nil),
		failed: prometheus.NewDesc("chom_events_publish_failed_total",
			"Outbox records whose publish failed, each attempt counted.", nil, nil),
		leader: prometheus.NewDesc("chom_relay_leader", "1 while this relay holds the outbox lease and publishes, else 0.", nil, nil),
	}
}

func (c *relayCollector) familyNames() []string {
	return []string{"chom_outbox_lag_seconds", "chom_events_published_total", "chom_events_publish_failed_total", "chom_relay_leader"}
}

// Describe implements prometheus.Collector.
func (c *relayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lagDesc, c.published, c.failed, c.leader} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *relayCollector) Collect(ch chan<- prometheus.Metric) {
	src := c.src.Load()
	if src == nil {
		return
	}
	st := src.stats()
	ch <- prometheus.MustNewConstMetric(c.published, prometheus.CounterValue, float64(st.Published))
	ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(st.Failed))
	leader := 0.0
	if st.Leader {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(c.leader, prometheus.GaugeValue, leader)
	if src.lag == nil {
		return
	}
	ctx, cancel := context.WithTimeout(src.ctx, c.timeout)
	defer cancel()
	lag, err := src.lag(ctx)
	if err != nil {
		c.errs.WithLabelValues("outbox_lag").Inc()
		return
	}
	ch <- prometheus.MustNewConstMetric(c.lagDesc, prometheus.GaugeValue, lag.Seconds())
}
