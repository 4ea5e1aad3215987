package metrics

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// scrapeCache is the part the database-backed collectors (statusCollector,
// fleetCollector) share: their sources are read at scrape time at most once
// per statusTTL, each read bounded by timeout, and what was read is reused in
// between; concurrent scrapes wait for one read. A failed read counts
// chom_metrics_source_errors_total{source} and leaves its series out until the
// next read.
type scrapeCache struct {
	errs    *prometheus.CounterVec
	now     func() time.Time
	timeout time.Duration
	tracked atomic.Bool

	mu      sync.Mutex
	ctx     context.Context
	fetched time.Time
}

func newScrapeCache(errs *prometheus.CounterVec) scrapeCache {
	return scrapeCache{errs: errs, now: time.Now, timeout: scrapeTimeout}
}

// track runs set (which installs the sources) under the lock, makes ctx bound
// every later read and forgets what was read before.
func (c *scrapeCache) track(ctx context.Context, set func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ctx = ctx
	set()
	c.fetched = time.Time{}
	c.tracked.Store(true)
}

// collect does nothing until track was called; then, under the lock, it runs
// refresh when the last read is older than statusTTL, and emit.
func (c *scrapeCache) collect(refresh, emit func()) {
	if !c.tracked.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); c.fetched.IsZero() || now.Sub(c.fetched) >= statusTTL {
		c.fetched = now
		refresh()
	}
	emit()
}

// readSource runs fn (nil: no source) within c's timeout, under c's lock. It
// returns false when there is no source or the read failed, and counts the
// failure under source.
func readSource[T any](c *scrapeCache, source string, fn func(context.Context) (T, error)) (T, bool) {
	var zero T
	if fn == nil {
		return zero, false
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.timeout)
	defer cancel()
	v, err := fn(ctx)
	if err != nil {
		c.errs.WithLabelValues(source).Inc()
		return zero, false
	}
	return v, true
}

// initSources creates chom_metrics_source_errors_total{source} at zero for
// every source marked true: the documented sources of that family are the ones
// a process tracks (sites and backups with TrackStatuses, vps and sweep with
// TrackFleet, outbox_lag with TrackRelay), so an error ratio or an alert on
// increase() has a series to read from the first scrape.
func (m *Metrics) initSources(sources map[string]bool) {
	for s, on := range sources {
		if on {
			m.sourceErrors.WithLabelValues(s)
		}
	}
}
