package metrics_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chomhq/chom/metrics"
)

// Fleet figures come from the store at scrape time; before a sweep completes
// there is no sweep series, and a failed read leaves its series out and counts
// an error.
func TestTrackFleet(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	if _, ok := lookup(t, m, "chom_vps_servers"); ok {
		t.Fatal("fleet series before TrackFleet")
	}
	var fail atomic.Bool
	var swept atomic.Bool
	m.TrackFleet(t.Context(), func(context.Context) (map[string]int, error) {
		if fail.Load() {
			return nil, errors.New("database down")
		}
		return map[string]int{"healthy": 7, "unhealthy": 2, "degraded": 0, "unknown": 1}, nil
	}, func(context.Context) (int, time.Duration, bool, error) {
		if fail.Load() {
			return 0, 0, false, errors.New("database down")
		}
		return 10, 1500 * time.Millisecond, swept.Load(), nil
	})
	if got := sample(t, m, "chom_vps_servers", "health", "unhealthy").value; got != 2 {
		t.Errorf("servers{unhealthy} = %v, want 2", got)
	}
	if _, ok := lookup(t, m, "chom_vps_health_sweep_duration_seconds"); ok {
		t.Error("a sweep duration before any sweep completed")
	}

	// A new read only happens after the cache TTL; TrackFleet again resets it.
	swept.Store(true)
	m.TrackFleet(t.Context(), func(context.Context) (map[string]int, error) { return map[string]int{"healthy": 9}, nil },
		func(context.Context) (int, time.Duration, bool, error) {
			return 10, 1500 * time.Millisecond, swept.Load(), nil
		})
	if got := sample(t, m, "chom_vps_health_sweep_duration_seconds").value; got != 1.5 {
		t.Errorf("sweep duration = %v, want 1.5", got)
	}
	if got := sample(t, m, "chom_vps_health_sweep_servers").value; got != 10 {
		t.Errorf("sweep servers = %v, want 10", got)
	}

	fail.Store(true)
	m.TrackFleet(t.Context(), func(context.Context) (map[string]int, error) { return nil, errors.New("down") },
		func(context.Context) (int, time.Duration, bool, error) { return 0, 0, false, errors.New("down") })
	if _, ok := lookup(t, m, "chom_vps_servers"); ok {
		t.Error("servers series after a failed read")
	}
	for _, src := range []string{"vps", "sweep"} {
		if got := sample(t, m, "chom_metrics_source_errors_total", "source", src).value; got != 1 {
			t.Errorf("source errors{%s} = %v, want 1", src, got)
		}
	}
}

// Component counters are read at each scrape, by label value.
func TestTrackCounters(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	var healthy atomic.Uint64
	m.TrackHealthChecks(func() map[string]uint64 {
		return map[string]uint64{"healthy": healthy.Load(), "unreachable": 4}
	})
	m.TrackUsage(func() map[string]uint64 { return map[string]uint64{"disk_bytes": 3} },
		func() map[string]uint64 { return map[string]uint64{"recorded": 1, "already_recorded": 2} })
	healthy.Store(5)
	for _, c := range []struct {
		name, label, value string
		want               float64
	}{
		{"chom_vps_health_checks_total", "result", "healthy", 5},
		{"chom_vps_health_checks_total", "result", "unreachable", 4},
		{"chom_usage_records_total", "metric", "disk_bytes", 3},
		{"chom_usage_meter_runs_total", "result", "already_recorded", 2},
	} {
		if got := sample(t, m, c.name, c.label, c.value).value; got != c.want {
			t.Errorf("%s{%s=%s} = %v, want %v", c.name, c.label, c.value, got, c.want)
		}
	}
}

// A registry of breakers is reported in bulk beside the ones tracked one by one.
func TestTrackBreakers(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	m.TrackBreaker("kafka", func() string { return "closed" })
	m.TrackBreakers(func() map[string]string {
		return map[string]string{"vps_a": "open", "vps_b": "half-open", "kafka": "open", "vps_c": "bogus"}
	})
	for name, want := range map[string]float64{"kafka": 0, "vps_a": 2, "vps_b": 1} {
		if got := sample(t, m, "chom_circuit_breaker_state", "breaker", name).value; got != want {
			t.Errorf("breaker %s = %v, want %v", name, got, want)
		}
	}
	if _, ok := lookup(t, m, "chom_circuit_breaker_state", "breaker", "vps_c"); ok {
		t.Error("an unknown state was reported")
	}
}

func TestTrackCertificates(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	if _, ok := lookup(t, m, "chom_certificate_expiry_timestamp_seconds"); ok {
		t.Fatal("certificate series before TrackCertificates")
	}
	expires := time.Date(2027, 3, 5, 12, 0, 0, 0, time.UTC)
	m.TrackCertificates(t.Context(), func(context.Context) ([]metrics.CertificateExpiry, error) {
		return []metrics.CertificateExpiry{{SiteID: "site_a", Source: "acme", NotAfter: expires},
			{SiteID: "site_b", Source: "upload", NotAfter: expires.Add(time.Hour)}}, nil
	})
	if got := sample(t, m, "chom_certificate_expiry_timestamp_seconds", "site_id", "site_a", "source", "acme").value; got != float64(expires.Unix()) {
		t.Errorf("expiry{site_a} = %v, want %d", got, expires.Unix())
	}
	if got := sample(t, m, "chom_certificate_expiry_timestamp_seconds", "site_id", "site_b", "source", "upload").value; got != float64(expires.Unix()+3600) {
		t.Errorf("expiry{site_b} = %v, want %d", got, expires.Unix()+3600)
	}
	m.TrackCertificates(t.Context(), func(context.Context) ([]metrics.CertificateExpiry, error) { return nil, errors.New("database down") })
	if _, ok := lookup(t, m, "chom_certificate_expiry_timestamp_seconds"); ok {
		t.Error("expiry series after a failed read")
	}
	if got := sample(t, m, "chom_metrics_source_errors_total", "source", "certificates").value; got != 1 {
		t.Errorf("source errors{certificates} = %v, want 1", got)
	}
}
