package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// Usage metrics recorded by MeterUsage. They are on the wire (usage_records,
// usage.recorded.v1): never rename one once shipped.
const (
	// MetricActiveSites counts the tenant's sites active at the end of the
	// period (unit "site").
	MetricActiveSites = "active_sites"
	// MetricDiskBytes is the bytes of a site's document root (a record with
	// site_id) and their sum over the tenant's active sites (the total).
	MetricDiskBytes = "disk_bytes"
	// MetricBackupStorageBytes is the size of the tenant's backups that exist at
	// the end of the period.
	MetricBackupStorageBytes = "backup_storage_bytes"
	// MetricBandwidthBytes is the response bytes nginx logged for a site's
	// requests in the period (a record with site_id) and their sum (the total).
	MetricBandwidthBytes = "bandwidth_bytes"
)

// Units of the metrics.
const (
	UnitSite = "site"
	UnitByte = "byte"
)

// Results of a meter run, the label values of chom_usage_meter_runs_total.
const (
	MeterRecorded        = "recorded"         // records written for the period
	MeterAlreadyRecorded = "already_recorded" // the period was final already: nothing written
	MeterFailed          = "failed"           // a measurement or the write failed (retried)
	MeterRefused         = "refused"          // a bad payload or a period not over yet (not retried)
)

var (
	meterMetrics = []string{MetricActiveSites, MetricDiskBytes, MetricBackupStorageBytes, MetricBandwidthBytes}
	meterResults = []string{MeterRecorded, MeterAlreadyRecorded, MeterFailed, MeterRefused}
)

// MeterUsageConfig configures MeterUsage.
type MeterUsageConfig struct {
	Store  *models.Store
	Probe  drivers.UsageProbe
	Logger *slog.Logger
	// Now is the clock; default time.Now. A period that has not ended by Now
	// is refused: it cannot be measured yet.
	Now func() time.Time
}

// Validate reports every missing dependency.
func (c MeterUsageConfig) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("jobs: meter Store is required"))
	}
	if c.Probe == nil {
		errs = append(errs, errors.New("jobs: meter Probe is required"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("jobs: meter Logger is required"))
	}
	return errors.Join(errs...)
}

// MeterUsage handles usage:meter: it measures one tenant's usage for one period
// and records it, with a usage.recorded.v1 event per record, in one
// transaction.
//
// What is measured, and when: active_sites counts the sites active at the
// period's end (created before it, not deleted by it, provision succeeded
// before it); for each of those that still has a server, disk_bytes is its
// document root measured now (the job runs just after the period ends) and
// bandwidth_bytes is the sum of the response sizes in its nginx access logs
// for requests in [start, end); the tenant's totals of both are the sums of the
// sites' records; backup_storage_bytes sums the tenant's backups that exist at
// the period's end. Per-site records carry site_id; totals do not.
//
// A recorded period is final: if the tenant already has records for the period
// start, nothing is measured or written; otherwise records are inserted with
// ON CONFLICT DO NOTHING and an event is written only for a record actually
// inserted (two concurrent runs write each record and event once). Event IDs
// derive from tenant, metric, site and period start (events.UsageRecordID),
// so nothing is ever billed twice.
type MeterUsage struct {
	cfg MeterUsageConfig

	records map[string]*atomic.Uint64 // by metric; fixed keys, read-only map
	runs    map[string]*atomic.Uint64 // by result; fixed keys, read-only map
	skipped atomic.Uint64
	refused atomic.Uint64 // access-log files refused (drivers.ErrLogRefused)
}

// NewMeterUsage validates cfg and returns the usage:meter handler.
func NewMeterUsage(cfg MeterUsageConfig) (*MeterUsage, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &MeterUsage{cfg: cfg, records: map[string]*atomic.Uint64{}, runs: map[string]*atomic.Uint64{}}
	for _, k := range meterMetrics {
		m.records[k] = new(atomic.Uint64)
	}
	for _, k := range meterResults {
		m.runs[k] = new(atomic.Uint64)
	}
	return m, nil
}

// MeterStats are the counters of a MeterUsage since it was built.
type MeterStats struct {
	// Records counts usage records written, by metric (per-site records and
	// totals alike): chom_usage_records_total{metric}.
	Records map[string]uint64
	// Runs counts meter runs by result (MeterRecorded, MeterAlreadyRecorded,
	// MeterFailed, MeterRefused): chom_usage_meter_runs_total{result}.
	Runs map[string]uint64
	// SkippedLogLines counts access-log lines that were not in the combined
	// format, so were not billed.
	SkippedLogLines uint64
	// RefusedLogFiles counts access-log files that were not billed because
	// they could not be read safely (drivers.ErrLogRefused: a link, a
	// corrupt or oversize compressed file).
	RefusedLogFiles uint64
}

// Stats returns a snapshot of the counters; every metric and result is
// present, zeros included.
func (m *MeterUsage) Stats() MeterStats {
	s := MeterStats{Records: map[string]uint64{}, Runs: map[string]uint64{}, SkippedLogLines: m.skipped.Load(),
		RefusedLogFiles: m.refused.Load()}
	for k, v := range m.records {
		s.Records[k] = v.Load()
	}
	for k, v := range m.runs {
		s.Runs[k] = v.Load()
	}
	return s
}

// MeterReport says what one run of Meter did.
type MeterReport struct {
	// AlreadyRecorded is true when the period was final already.
	AlreadyRecorded bool
	// Inserted are the records this run wrote.
	Inserted []models.UsageRecord
	// SkippedLogLines counts unparsable access-log lines seen.
	SkippedLogLines int64
	// RefusedLogFiles counts access-log files refused (drivers.ErrLogRefused).
	RefusedLogFiles int64
}

// ProcessTask runs one delivery of a usage:meter task. A malformed payload or a
// period that has not ended is refused without retry; a measurement or
// database failure is returned for backoff.
func (m *MeterUsage) ProcessTask(ctx context.Context, t *asynq.Task) error {
	p, err := queue.DecodeUsageMeterPayload(t.Payload())
	if err != nil {
		m.runs[MeterRefused].Add(1)
		return err
	}
	_, err = m.Meter(ctx, p.TenantID, p.PeriodStart, p.PeriodEnd)
	return err
}

// errPeriodNotOver refuses to meter a period that has not ended.
var errPeriodNotOver = errors.New("period has not ended")

// Meter measures and records tenantID's usage for [start, end). See
// MeterUsage for what it measures and why running it again changes nothing.
func (m *MeterUsage) Meter(ctx context.Context, tenantID string, start, end time.Time) (MeterReport, error) {
	start, end = start.UTC(), end.UTC()
	log := m.cfg.Logger.With("tenant_id", tenantID, "period_start", start, "period_end", end)
	if now := m.cfg.Now(); end.After(now) {
		m.runs[MeterRefused].Add(1)
		return MeterReport{}, skipRetry(fmt.Errorf("meter %s %s: %w (now %s)", tenantID, start.Format(time.RFC3339),
			errPeriodNotOver, now.UTC().Format(time.RFC3339)))
	}
	rep, err := m.meter(ctx, log, tenantID, start, end)
	switch {
	case err != nil:
		m.runs[MeterFailed].Add(1)
		if errors.Is(err, drivers.ErrInvalidSpec) {
			err = skipRetry(err)
		}
		return rep, fmt.Errorf("meter %s %s: %w", tenantID, start.Format(time.RFC3339), err)
	case rep.AlreadyRecorded:
		m.runs[MeterAlreadyRecorded].Add(1)
	default:
		m.runs[MeterRecorded].Add(1)
	}
	return rep, nil
}

func (m *MeterUsage) meter(ctx context.Context, log *slog.Logger, tenantID string, start, end time.Time) (MeterReport, error) {
	var rep MeterReport
	done, err := m.cfg.Store.UsagePeriodRecorded(ctx, tenantID, start)
	if err != nil {
		return rep, err
	}
	if done {
		log.Debug("usage period already recorded; nothing to do")
		rep.AlreadyRecorded = true
		return rep, nil
	}
	sites, err := m.cfg.Store.ActiveSitesAt(ctx, tenantID, end)
	if err != nil {
		return rep, err
	}
	type rec struct {
		metric, siteID, unit string
		qty                  int64
	}
	recs := []rec{{MetricActiveSites, "", UnitSite, int64(len(sites))}}
	var diskTotal, bwTotal int64
	for _, s := range sites {
		if s.Server == nil {
			log.Warn("active site has no server now; its disk and bandwidth are not measured", "site_id", s.Site.ID)
			continue
		}
		spec := siteSpec(&s.Site, s.Server)
		disk, err := m.cfg.Probe.DiskBytes(ctx, spec)
		if err != nil {
			return rep, fmt.Errorf("disk of site %s: %w", s.Site.ID, err)
		}
		bw, err := m.cfg.Probe.Bandwidth(ctx, spec, start, end)
		if err != nil {
			return rep, fmt.Errorf("bandwidth of site %s: %w", s.Site.ID, err)
		}
		if bw.Skipped > 0 {
			log.Warn("access log lines not in combined format were not billed", "site_id", s.Site.ID, "skipped", bw.Skipped)
		}
		rep.SkippedLogLines += bw.Skipped
		if bw.RefusedFiles > 0 {
			log.Warn("access log files refused (a link, corrupt or oversize) were not billed", "site_id", s.Site.ID, "refused_files", bw.RefusedFiles)
		}
		rep.RefusedLogFiles += int64(bw.RefusedFiles)
		diskTotal += disk
		bwTotal += bw.Bytes
		recs = append(recs,
			rec{MetricDiskBytes, s.Site.ID, UnitByte, disk},
			rec{MetricBandwidthBytes, s.Site.ID, UnitByte, bw.Bytes})
	}
	backups, err := m.cfg.Store.BackupBytesAt(ctx, tenantID, end)
	if err != nil {
		return rep, err
	}
	recs = append(recs,
		rec{MetricDiskBytes, "", UnitByte, diskTotal},
		rec{MetricBandwidthBytes, "", UnitByte, bwTotal},
		rec{MetricBackupStorageBytes, "", UnitByte, backups})

	now := m.cfg.Now().UTC()
	writes := make([]models.UsageWrite, 0, len(recs))
	for _, r := range recs {
		ev, err := events.UsageOutbox(events.UsageEvent{
			TenantID: tenantID, Metric: r.metric, SiteID: r.siteID, Quantity: r.qty, Unit: r.unit,
			PeriodStart: start, PeriodEnd: end, OccurredAt: now,
		})
		if err != nil {
			return rep, skipRetry(err)
		}
		writes = append(writes, models.UsageWrite{
			Record: models.UsageRecord{TenantID: tenantID, Metric: r.metric, SiteID: r.siteID, Quantity: r.qty,
				Unit: r.unit, PeriodStart: start, PeriodEnd: end},
			Event: ev,
		})
	}
	inserted, err := m.cfg.Store.RecordUsage(ctx, writes)
	if err != nil {
		return rep, err
	}
	rep.Inserted = inserted
	for _, r := range inserted {
		if c, ok := m.records[r.Metric]; ok {
			c.Add(1)
		}
	}
	m.skipped.Add(uint64(rep.SkippedLogLines))
	m.refused.Add(uint64(rep.RefusedLogFiles))
	log.Info("usage recorded", "records", len(inserted), "active_sites", len(sites),
		"disk_bytes", diskTotal, "bandwidth_bytes", bwTotal, "backup_storage_bytes", backups)
	return rep, nil
}

// MeterEnqueuer is the part of queue.Enqueuer the meter sweep uses; like it,
// it must treat a task-ID conflict as success.
type MeterEnqueuer interface {
	Enqueue(ctx context.Context, task *asynq.Task, opts ...asynq.Option) error
}

// MeterSweepConfig configures MeterSweep.
type MeterSweepConfig struct {
	Store    *models.Store
	Enqueuer MeterEnqueuer
	Logger   *slog.Logger
}

// MeterSweep handles usage:meter_sweep: it enqueues one usage:meter per tenant
// that had a site during the period. Each meter task's ID is per tenant and
// period, so a sweep that runs twice (or is retried after a partial failure)
// enqueues each tenant's meter once.
type MeterSweep struct{ cfg MeterSweepConfig }

// NewMeterSweep validates cfg and returns the usage:meter_sweep handler.
func NewMeterSweep(cfg MeterSweepConfig) (*MeterSweep, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("jobs: meter sweep Store is required"))
	}
	if cfg.Enqueuer == nil {
		errs = append(errs, errors.New("jobs: meter sweep Enqueuer is required"))
	}
	if cfg.Logger == nil {
		errs = append(errs, errors.New("jobs: meter sweep Logger is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &MeterSweep{cfg: cfg}, nil
}

// ProcessTask runs one delivery of a usage:meter_sweep task. A malformed
// payload is not retried; a failed listing or enqueue is returned for backoff
// after every other tenant's meter was enqueued.
func (s *MeterSweep) ProcessTask(ctx context.Context, t *asynq.Task) error {
	p, err := queue.DecodeUsagePeriodPayload(t.Payload())
	if err != nil {
		return err
	}
	_, err = s.Sweep(ctx, p.PeriodStart, p.PeriodEnd)
	return err
}

// Sweep enqueues the meter of every tenant with a site in [start, end) and
// returns how many tenants it enqueued (conflicts included).
func (s *MeterSweep) Sweep(ctx context.Context, start, end time.Time) (int, error) {
	tenants, err := s.cfg.Store.MeteringTenants(ctx, start, end)
	if err != nil {
		return 0, err
	}
	var errs []error
	n := 0
	for _, id := range tenants {
		task, err := queue.NewUsageMeterTask(queue.UsageMeterPayload{TenantID: id, PeriodStart: start, PeriodEnd: end})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := s.cfg.Enqueuer.Enqueue(ctx, task); err != nil {
			errs = append(errs, fmt.Errorf("tenant %s: %w", id, err))
			continue
		}
		n++
	}
	s.cfg.Logger.Info("usage meter sweep", "period_start", start.UTC(), "period_end", end.UTC(),
		"tenants", len(tenants), "enqueued", n)
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("meter sweep %s: %w", start.UTC().Format(time.RFC3339), err)
	}
	return n, nil
}
