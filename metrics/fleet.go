package metrics

import (
	"context"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SweepFunc reports the last complete health sweep: how many servers it checked
// and how long it took from its tick to its last result; ok is false when no
// sweep has completed yet. cmd/chom passes models.Store.LastCompleteSweep.
type SweepFunc func(ctx context.Context) (servers int, took time.Duration, ok bool, err error)

// TrackFleet makes scrapes report chom_vps_servers{health} from servers (active
// servers per health status) and chom_vps_health_sweep_duration_seconds and
// chom_vps_health_sweep_servers from sweep, read at most once every 15s like
// TrackStatuses. A failed read leaves its series out of that scrape and counts
// chom_metrics_source_errors_total{source="vps"|"sweep"}. ctx bounds every read;
// a later call replaces the earlier one.
// The error series of each source given is created at zero at once.
func (m *Metrics) TrackFleet(ctx context.Context, servers CountsFunc, sweep SweepFunc) {
	c := m.fleet
	m.initSources(map[string]bool{"vps": servers != nil, "sweep": sweep != nil})
	c.track(ctx, func() { c.serversFn, c.sweepFn = servers, sweep })
}

// lastSweep is what a SweepFunc reported.
type lastSweep struct {
	servers int
	took    time.Duration
	ok      bool
}

type fleetCollector struct {
	scrapeCache
	serversFn CountsFunc
	sweepFn   SweepFunc
	servers   map[string]int // nil: the last read failed
	sweep     lastSweep      // ok false: none complete, or the last read failed

	serversDesc, durationDesc, sizeDesc *prometheus.Desc
}

func newFleetCollector(errs *prometheus.CounterVec) *fleetCollector {
	return &fleetCollector{
		scrapeCache: newScrapeCache(errs),
		serversDesc: prometheus.NewDesc("chom_vps_servers",
			"Active VPS servers by health status (healthy, degraded, unhealthy, unknown), refreshed at most every 15s.",
			[]string{"health"}, nil),
		durationDesc: prometheus.NewDesc("chom_vps_health_sweep_duration_seconds",
			"How long the last complete health sweep took, from its tick to its last recorded check.", nil, nil),
		sizeDesc: prometheus.NewDesc("chom_vps_health_sweep_servers",
			"Servers checked by the last complete health sweep.", nil, nil),
	}
}

func (c *fleetCollector) familyNames() []string {
	return []string{"chom_vps_servers", "chom_vps_health_sweep_duration_seconds", "chom_vps_health_sweep_servers"}
}

// Describe implements prometheus.Collector.
func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.serversDesc
	ch <- c.durationDesc
	ch <- c.sizeDesc
}

// Collect implements prometheus.Collector. Concurrent scrapes wait for one read.
func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	c.collect(func() {
		c.servers, _ = readSource(&c.scrapeCache, "vps", c.serversFn)
		var sweep func(context.Context) (lastSweep, error)
		if c.sweepFn != nil {
			sweep = func(ctx context.Context) (lastSweep, error) {
				n, took, ok, err := c.sweepFn(ctx)
				return lastSweep{servers: n, took: took, ok: ok}, err
			}
		}
		c.sweep, _ = readSource(&c.scrapeCache, "sweep", sweep)
	}, func() {
		for health, n := range c.servers {
			ch <- prometheus.MustNewConstMetric(c.serversDesc, prometheus.GaugeValue, float64(n), health)
		}
		if c.sweep.ok {
			ch <- prometheus.MustNewConstMetric(c.durationDesc, prometheus.GaugeValue, c.sweep.took.Seconds())
			ch <- prometheus.MustNewConstMetric(c.sizeDesc, prometheus.GaugeValue, float64(c.sweep.servers))
		}
	})
}

// CountersFunc returns a component's monotonic counters by label value. It must
// be cheap and safe for concurrent use (a snapshot of atomics).
type CountersFunc func() map[string]uint64

// TrackHealthChecks reports chom_vps_health_checks_total{result} from fn (the
// health check handler's counters: healthy, degraded, unhealthy, unreachable).
func (m *Metrics) TrackHealthChecks(fn CountersFunc) { m.healthChecks.set(fn) }

// TrackUsage reports chom_usage_records_total{metric} from records and
// chom_usage_meter_runs_total{result} from runs (the meter job's counters).
func (m *Metrics) TrackUsage(records, runs CountersFunc) {
	m.usageRecords.set(records)
	m.meterRuns.set(runs)
}

// TrackBilling reports chom_billing_events_total{result} from fn (the reference
// billing consumer's counters: billed, duplicate, dead_lettered, ignored).
func (m *Metrics) TrackBilling(fn CountersFunc) { m.billingEvents.set(fn) }

// countersCollector is a labelled counter family whose values a component
// keeps itself and hands over at scrape time.
type countersCollector struct {
	name string
	desc *prometheus.Desc
	fn   atomic.Pointer[CountersFunc]
}

func newCountersCollector(name, help, label string) *countersCollector {
	return &countersCollector{name: name, desc: prometheus.NewDesc(name, help, []string{label}, nil)}
}

func (c *countersCollector) set(fn CountersFunc) {
	if fn == nil {
		c.fn.Store(nil)
		return
	}
	c.fn.Store(&fn)
}

func (c *countersCollector) familyNames() []string { return []string{c.name} }

// Describe implements prometheus.Collector.
func (c *countersCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *countersCollector) Collect(ch chan<- prometheus.Metric) {
	fn := c.fn.Load()
	if fn == nil {
		return
	}
	counts := (*fn)()
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(counts[k]), k)
	}
}

// TrackBreakers reports every breaker of a registry as
// chom_circuit_breaker_state{breaker=name}, reading states() (name → "closed",
// "half-open" or "open") at each scrape; the per-VPS breakers of the health
// probe are "vps_<id>". Names also tracked with TrackBreaker are reported once,
// from TrackBreaker. A nil states removes the source.
func (m *Metrics) TrackBreakers(states func() map[string]string) {
	b := m.breakers
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bulk = states
}
