package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CertificateExpiry is one site's current certificate as
// chom_certificate_expiry_timestamp_seconds reports it.
type CertificateExpiry struct {
	SiteID string
	// Source is how the site got it: acme (CHOM renews it) or upload (the
	// tenant does).
	Source   string
	NotAfter time.Time
}

// ExpiriesFunc lists every live site's current certificate. cmd/chom passes
// models.Store.CertificateExpiries.
type ExpiriesFunc func(ctx context.Context) ([]CertificateExpiry, error)

// TrackCertificates makes scrapes report
// chom_certificate_expiry_timestamp_seconds{site_id, source}: when each live
// site's certificate expires, in Unix seconds, read at most once every 15s
// like TrackStatuses. A failed read leaves the family out of that scrape and
// counts chom_metrics_source_errors_total{source="certificates"}. ctx bounds
// every read; a later call replaces the earlier one.
//
// It is a series per site with a certificate: the alerts and the dashboard
// need to name the site. Every process that tracks the platform reports the
// same values, so queries take min by (site_id).
func (m *Metrics) TrackCertificates(ctx context.Context, expiries ExpiriesFunc) {
	c := m.certs
	m.initSources(map[string]bool{"certificates": expiries != nil})
	c.track(ctx, func() { c.fn = expiries })
}

type certCollector struct {
	scrapeCache
	fn       ExpiriesFunc
	expiries []CertificateExpiry // nil after a failed read
	desc     *prometheus.Desc
}

func newCertCollector(errs *prometheus.CounterVec) *certCollector {
	return &certCollector{
		scrapeCache: newScrapeCache(errs),
		desc: prometheus.NewDesc("chom_certificate_expiry_timestamp_seconds",
			"When each live site's current TLS certificate expires (Unix seconds), by how it was obtained: acme (renewed by CHOM 30 days ahead) or upload (renewed by the tenant); refreshed at most every 15s.",
			[]string{"site_id", "source"}, nil),
	}
}

func (c *certCollector) familyNames() []string {
	return []string{"chom_certificate_expiry_timestamp_seconds"}
}

// Describe implements prometheus.Collector.
func (c *certCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector. Concurrent scrapes wait for one read.
func (c *certCollector) Collect(ch chan<- prometheus.Metric) {
	c.collect(func() {
		c.expiries, _ = readSource(&c.scrapeCache, "certificates", c.fn)
	}, func() {
		for _, e := range c.expiries {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(e.NotAfter.Unix()), e.SiteID, e.Source)
		}
	})
}
