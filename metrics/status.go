package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CountsFunc counts rows by status, platform-wide, honouring ctx. cmd/chom passes
// models.Store.CountSitesByStatus and CountBackupsByStatus.
type CountsFunc func(ctx context.Context) (map[string]int, error)

// statusTTL is how long counts are reused: scrapes never load the database more
// than once per statusTTL per process, however often or from however many
// Prometheus servers they come.
const statusTTL = 15 * time.Second

// TrackStatuses makes scrapes report chom_sites{status} and
// chom_backups{status} from sites and backups (either may be nil), read at
// most once every 15s and reused in between. A failed read (bounded by a short
// timeout) leaves that family out until the next read and counts
// chom_metrics_source_errors_total{source="sites"|"backups"}. ctx bounds every
// read. A later call replaces the earlier one. The error series of each source
// given is created at zero at once.
//
// Both are gauges (a count of rows now, which goes down when rows change
// status), so they carry no _total suffix: the old report's chom_sites_total and
// chom_backups_total broke the Prometheus convention that _total marks a
// counter, and promtool check metrics refused them.
func (m *Metrics) TrackStatuses(ctx context.Context, sites, backups CountsFunc) {
	c := m.statuses
	m.initSources(map[string]bool{"sites": sites != nil, "backups": backups != nil})
	c.track(ctx, func() { c.sitesFn, c.backupsFn = sites, backups })
}

type statusCollector struct {
	scrapeCache
	sitesFn, backupsFn CountsFunc
	sites, backups     map[string]int // nil: the last read failed

	sitesDesc, backupsDesc *prometheus.Desc
}

func newStatusCollector(errs *prometheus.CounterVec) *statusCollector {
	s := []string{"status"}
	return &statusCollector{
		scrapeCache: newScrapeCache(errs),
		sitesDesc: prometheus.NewDesc("chom_sites",
			"Sites by status, platform-wide (every tenant; deleted ones included), refreshed at most every 15s.", s, nil),
		backupsDesc: prometheus.NewDesc("chom_backups",
			"Backups by status, platform-wide, refreshed at most every 15s.", s, nil),
	}
}

func (c *statusCollector) familyNames() []string {
	return []string{"chom_sites", "chom_backups"}
}

// Describe implements prometheus.Collector.
func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.sitesDesc
	ch <- c.backupsDesc
}

// Collect implements prometheus.Collector. Concurrent scrapes wait for one read.
func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	c.collect(func() {
		c.sites, _ = readSource(&c.scrapeCache, "sites", c.sitesFn)
		c.backups, _ = readSource(&c.scrapeCache, "backups", c.backupsFn)
	}, func() {
		for status, n := range c.sites {
			ch <- prometheus.MustNewConstMetric(c.sitesDesc, prometheus.GaugeValue, float64(n), status)
		}
		for status, n := range c.backups {
			ch <- prometheus.MustNewConstMetric(c.backupsDesc, prometheus.GaugeValue, float64(n), status)
		}
	})
}
