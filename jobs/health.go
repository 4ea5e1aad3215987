package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// HealthThresholds decide when a reachable server's measurements make a check
// degraded or unhealthy. A measurement at or above a threshold trips it. Load is
// the 1-minute load average divided by the number of CPUs; memory use is
// (total − available) / total; disk use is (total − free) / total of the
// filesystem holding the sites.
type HealthThresholds struct {
	LoadPerCPUDegraded, LoadPerCPUUnhealthy   float64
	MemPercentDegraded, MemPercentUnhealthy   float64
	DiskPercentDegraded, DiskPercentUnhealthy float64
}

// DefaultHealthThresholds are the thresholds used when none are configured:
// load 1.5 / 4 per CPU (a queue of runnable work, then a server too slow to
// answer), memory 90 % / 98 % (page cache is counted as available, so this is
// real pressure; near 100 % the OOM killer starts), disk 85 % / 95 % (the room
// backups and logs need, then writes about to fail).
func DefaultHealthThresholds() HealthThresholds {
	return HealthThresholds{
		LoadPerCPUDegraded: 1.5, LoadPerCPUUnhealthy: 4,
		MemPercentDegraded: 90, MemPercentUnhealthy: 98,
		DiskPercentDegraded: 85, DiskPercentUnhealthy: 95,
	}
}

// Validate reports every inconsistent pair at once: each threshold must be
// positive, degraded at most unhealthy, and percentages at most 100.
func (t HealthThresholds) Validate() error {
	var errs []error
	pair := func(name string, deg, unh, limit float64) {
		if deg <= 0 || unh <= 0 || deg > unh || unh > limit {
			errs = append(errs, fmt.Errorf("jobs: health %s thresholds %g/%g: want 0 < degraded ≤ unhealthy ≤ %g", name, deg, unh, limit))
		}
	}
	pair("load per cpu", t.LoadPerCPUDegraded, t.LoadPerCPUUnhealthy, math.MaxFloat64)
	pair("memory percent", t.MemPercentDegraded, t.MemPercentUnhealthy, 100)
	pair("disk percent", t.DiskPercentDegraded, t.DiskPercentUnhealthy, 100)
	return errors.Join(errs...)
}

// HealthVerdict is what one check says about a server.
type HealthVerdict struct {
	// Result is healthy, degraded or unhealthy.
	Result string
	// Reason says why, for the stored check, the event and the log line.
	Reason string
	// Unreachable is true when the server did not answer at all.
	Unreachable bool
	// HostKeyMismatch is true when the server presented a key other than the
	// pinned one: a security failure, logged at error level.
	HostKeyMismatch bool
}

// Classify turns one probe's outcome into a verdict. A probe error is an
// unhealthy result: unreachable (ErrUnreachable, or the check's timeout), a
// host key mismatch, or any other failure of the probe. A reachable server is
// unhealthy when its nginx answered 5xx or not at all (unless the driver says
// HTTP does not apply, HTTPSkipped), and degraded or unhealthy by thresholds;
// the reason lists what tripped at the worst level. Measurements a driver left
// at zero (no CPUs, no memory or disk total) are not judged.
func Classify(r drivers.HealthReport, probeErr error, t HealthThresholds) HealthVerdict {
	switch {
	case errors.Is(probeErr, drivers.ErrHostKeyUnpinned):
		return HealthVerdict{Result: models.HealthUnhealthy, Reason: "host key not pinned", HostKeyMismatch: true}
	case errors.Is(probeErr, drivers.ErrHostKeyMismatch):
		return HealthVerdict{Result: models.HealthUnhealthy, Reason: "host key mismatch", HostKeyMismatch: true}
	case errors.Is(probeErr, drivers.ErrUnreachable), errors.Is(probeErr, context.DeadlineExceeded):
		return HealthVerdict{Result: models.HealthUnhealthy, Reason: "unreachable", Unreachable: true}
	case probeErr != nil:
		return HealthVerdict{Result: models.HealthUnhealthy, Reason: "probe failed"}
	case !r.Reachable:
		return HealthVerdict{Result: models.HealthUnhealthy, Reason: "unreachable", Unreachable: true}
	}
	var unhealthy, degraded []string
	judge := func(v, deg, unh float64, reason string) {
		switch {
		case v >= unh:
			unhealthy = append(unhealthy, reason)
		case v >= deg:
			degraded = append(degraded, reason)
		}
	}
	if !r.HTTPSkipped {
		switch {
		case r.HTTPStatus == 0:
			unhealthy = append(unhealthy, "http no answer")
		case r.HTTPStatus >= 500:
			unhealthy = append(unhealthy, fmt.Sprintf("http %d", r.HTTPStatus))
		}
	}
	if r.HostShared {
		// The local driver's servers are directories on CHOM's own host: its
		// load, memory and disk say nothing about any one of them.
		r.CPUs, r.MemTotalBytes, r.DiskTotalBytes = 0, 0, 0
	}
	if r.CPUs > 0 {
		per := r.Load1 / float64(r.CPUs)
		judge(per, t.LoadPerCPUDegraded, t.LoadPerCPUUnhealthy, fmt.Sprintf("load %.2f per cpu", per))
	}
	if p, ok := usedPercent(r.MemTotalBytes, r.MemAvailableBytes); ok {
		judge(p, t.MemPercentDegraded, t.MemPercentUnhealthy, fmt.Sprintf("memory %.1f%% used", p))
	}
	if p, ok := usedPercent(r.DiskTotalBytes, r.DiskFreeBytes); ok {
		judge(p, t.DiskPercentDegraded, t.DiskPercentUnhealthy, fmt.Sprintf("disk %.1f%% used", p))
	}
	switch {
	case len(unhealthy) > 0:
		return HealthVerdict{Result: models.HealthUnhealthy, Reason: strings.Join(unhealthy, "; ")}
	case len(degraded) > 0:
		return HealthVerdict{Result: models.HealthDegraded, Reason: strings.Join(degraded, "; ")}
	}
	return HealthVerdict{Result: models.HealthHealthy, Reason: "healthy"}
}

// usedPercent is 100·(total − free)/total, and false when total is unknown.
func usedPercent(total, free uint64) (float64, bool) {
	if total == 0 {
		return 0, false
	}
	free = min(free, total)
	return 100 * float64(total-free) / float64(total), true
}

// NextHealth applies one result to a server's health state with hysteresis n:
// the status changes only once n consecutive results agree on the new status
// (results that agree with the current status reset the count; a result that
// differs from the previous candidate starts a new count at 1). A server whose
// status is unknown (never checked) takes its first result at once: it has no
// history to protect, and an unknown server takes sites, so a first unhealthy
// result must stop placements without waiting n periods. n ≤ 1 means no
// hysteresis.
func NextHealth(cur models.HealthState, result string, n int) models.HealthState {
	if cur.Status == "" || cur.Status == models.HealthUnknown || n <= 1 {
		return models.HealthState{Status: result}
	}
	if result == cur.Status {
		return models.HealthState{Status: cur.Status}
	}
	next := models.HealthState{Status: cur.Status, Candidate: result, Streak: 1}
	if result == cur.Candidate {
		next.Streak = cur.Streak + 1
	}
	if next.Streak >= n {
		return models.HealthState{Status: result}
	}
	return next
}

// HealthCheckStats counts check results since start. Unreachable servers are
// counted under Unreachable only (they are unhealthy results too).
type HealthCheckStats struct {
	Healthy, Degraded, Unhealthy, Unreachable uint64
}

// HealthRecorder records one health check with its decision in one
// transaction: *models.Store (a transaction per check) and
// *models.HealthWriter (group-committed) are both one.
type HealthRecorder interface {
	RecordHealthCheck(ctx context.Context, check *models.VPSHealthCheck,
		decide func(v *models.VPSServer) (models.HealthDecision, error)) (*models.HealthRecorded, error)
}

// HealthCheckConfig configures the vps:health_check handler.
type HealthCheckConfig struct {
	Store *models.Store
	// Recorder writes the checks; default Store. The worker passes a
	// models.HealthWriter, which commits the checks of concurrent handlers
	// in one transaction.
	Recorder HealthRecorder
	Probe    drivers.HealthProbe
	Logger   *slog.Logger
	// Notifier announces on-demand check operations as they change. Default
	// NopNotifier.
	Notifier Notifier
	// Thresholds classify measurements; the zero value means
	// DefaultHealthThresholds.
	Thresholds HealthThresholds
	// Hysteresis is how many consecutive agreeing results change a server's
	// status. Default 3.
	Hysteresis int
	// CheckTimeout bounds one probe; a probe that takes longer is an
	// unreachable result. Default 10s.
	CheckTimeout time.Duration
	// OnHostKeyMismatch, when set, is called once per check refused for its
	// host key (a key other than the pinned one, or none pinned under the
	// strict policy): the assembly counts it in chom_security_refusals_total.
	OnHostKeyMismatch func()
}

// Validate reports every missing dependency and bad setting.
func (c HealthCheckConfig) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("jobs: health check Store is required"))
	}
	if c.Probe == nil {
		errs = append(errs, errors.New("jobs: health check Probe is required"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("jobs: health check Logger is required"))
	}
	if c.Hysteresis < 0 || c.CheckTimeout < 0 {
		errs = append(errs, errors.New("jobs: health check Hysteresis and CheckTimeout must not be negative"))
	}
	if c.Thresholds != (HealthThresholds{}) {
		errs = append(errs, c.Thresholds.Validate())
	}
	return errors.Join(errs...)
}

// Defaults of the health configs, used when a field is zero; the assembly's
// settings table takes CHOM_HEALTH_HYSTERESIS', CHOM_HEALTH_CHECK_TIMEOUT's and
// CHOM_HEALTH_RETENTION's defaults from these.
const (
	DefaultHysteresis      = 3
	DefaultCheckTimeout    = 10 * time.Second
	DefaultHealthRetention = 24 * time.Hour
)

// CheckHealth handles vps:health_check: probe one server, classify the result,
// record it and apply hysteresis; on a status change the same transaction
// writes the vps.health_changed.v1 event. It also carries out on-demand checks
// (operations of type vps.health_check). It is safe for concurrent use.
type CheckHealth struct {
	cfg                                       HealthCheckConfig
	log                                       *slog.Logger
	healthy, degraded, unhealthy, unreachable atomic.Uint64
}

// NewCheckHealth validates cfg, fills its defaults and returns the handler.
func NewCheckHealth(cfg HealthCheckConfig) (*CheckHealth, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Notifier == nil {
		cfg.Notifier = NopNotifier{}
	}
	if cfg.Recorder == nil {
		cfg.Recorder = cfg.Store
	}
	if cfg.Thresholds == (HealthThresholds{}) {
		cfg.Thresholds = DefaultHealthThresholds()
	}
	if cfg.Hysteresis == 0 {
		cfg.Hysteresis = DefaultHysteresis
	}
	if cfg.CheckTimeout == 0 {
		cfg.CheckTimeout = DefaultCheckTimeout
	}
	return &CheckHealth{cfg: cfg, log: cfg.Logger.With("component", "health")}, nil
}

// Stats returns the results counted since the handler was built.
func (h *CheckHealth) Stats() HealthCheckStats {
	return HealthCheckStats{Healthy: h.healthy.Load(), Degraded: h.degraded.Load(),
		Unhealthy: h.unhealthy.Load(), Unreachable: h.unreachable.Load()}
}

// ProcessTask runs one vps:health_check task: a sweep check, or the check of an
// on-demand operation. A server that no longer exists is not retried.
func (h *CheckHealth) ProcessTask(ctx context.Context, t *asynq.Task) error {
	p, err := queue.DecodeHealthCheckPayload(t.Payload())
	if err != nil {
		return err
	}
	if p.OperationID != "" {
		return h.runOperation(ctx, p)
	}
	_, err = h.Check(ctx, p.VPSID, p.PeriodStart.UTC().Format(time.RFC3339), models.HealthSourceSweep, &p.PeriodStart)
	if errors.Is(err, models.ErrNotFound) {
		return skipRetry(err)
	}
	return err
}

// HealthCheckResult is the result of an on-demand check's operation.
type HealthCheckResult struct {
	VPSID     string    `json:"vps_id"`
	Result    string    `json:"result"`
	Status    string    `json:"status"`
	Reason    string    `json:"reason"`
	CheckedAt time.Time `json:"checked_at"`
}

// runOperation carries out an on-demand check. Its check key is the operation
// ID, so a retried task records the check once and finishes with it.
func (h *CheckHealth) runOperation(ctx context.Context, p queue.HealthCheckPayload) error {
	log := h.log.With("operation_id", p.OperationID, "tenant_id", p.TenantID)
	op, err := beginOperation(ctx, h.cfg.Store, h.cfg.Notifier, log, p.OperationID)
	if op == nil || err != nil {
		return err
	}
	rec, err := h.Check(ctx, op.TargetID, op.ID, models.HealthSourceManual, nil)
	if err != nil {
		if ctx.Err() == nil && (permanent(err) || finalAttempt(ctx)) {
			code, msg := "health_check_failed", "the health check could not be recorded after all retries"
			if errors.Is(err, models.ErrNotFound) {
				code, msg = "target_missing", "the server no longer exists"
			}
			_, ferr := h.cfg.Store.FinishOperation(ctx, op.ID, models.Outcome{Status: models.OpFailed,
				ErrorCode: code, ErrorMessage: msg}, nil)
			h.cfg.Notifier.OperationChanged(ctx, op.ID)
			if ferr != nil {
				return ferr
			}
			return skipRetry(err)
		}
		return err
	}
	c := rec.Check
	_, err = h.cfg.Store.FinishOperation(ctx, op.ID, models.Outcome{Status: models.OpSucceeded, Result: HealthCheckResult{
		VPSID: c.VPSID, Result: c.Result, Status: c.StatusAfter, Reason: c.Reason, CheckedAt: c.CheckedAt,
	}}, nil)
	h.cfg.Notifier.OperationChanged(ctx, op.ID)
	return err
}

// Check probes server vpsID once and records the result under key (the sweep
// period, or an operation ID) with hysteresis applied. A key already recorded
// is not probed again: the earlier record is returned (Duplicate). It
// fails with ErrNotFound for an unknown server, and with ctx's error when ctx
// ends (nothing is recorded then); an unreachable server is a recorded result,
// not an error.
func (h *CheckHealth) Check(ctx context.Context, vpsID, key, source string, period *time.Time) (*models.HealthRecorded, error) {
	v, recorded, err := h.cfg.Store.VPSForCheck(ctx, vpsID, key)
	if err != nil {
		return nil, err
	}
	log := h.log.With("vps_id", vpsID)
	if recorded {
		prior, err := h.cfg.Store.HealthCheckByKey(ctx, vpsID, key)
		if err != nil {
			return nil, err
		}
		return &models.HealthRecorded{Before: v, Check: prior, Duplicate: true}, nil
	}
	pctx, cancel := context.WithTimeout(ctx, h.cfg.CheckTimeout)
	report, perr := h.cfg.Probe.Probe(pctx, drivers.HealthTarget{
		Server:  drivers.Server{ID: v.ID, Hostname: v.Hostname, IPAddress: v.IPAddress, SSHPort: v.SSHPort},
		HostKey: v.HostKey,
	})
	cancel()
	if ctx.Err() != nil {
		return nil, ctx.Err() // shutting down or the task timed out: not the server's fault
	}
	verdict := Classify(report, perr, h.cfg.Thresholds)
	switch {
	case verdict.HostKeyMismatch:
		log.Error("vps host key refused", "reason", verdict.Reason, "error", perr)
		if h.cfg.OnHostKeyMismatch != nil {
			h.cfg.OnHostKeyMismatch()
		}
	case perr != nil:
		log.Warn("health probe failed", "reason", verdict.Reason, "error", perr)
	}
	check := checkRow(vpsID, key, source, period, report, verdict)
	rec, err := h.cfg.Recorder.RecordHealthCheck(ctx, check, func(cur *models.VPSServer) (models.HealthDecision, error) {
		d := models.HealthDecision{Next: NextHealth(cur.HealthState(), verdict.Result, h.cfg.Hysteresis)}
		if perr == nil && report.HostKey != "" && cur.HostKey == "" {
			d.PinHostKey = report.HostKey
		}
		if d.Next.Status != cur.HealthStatus {
			ev, err := events.VPSHealthOutbox(healthEvent(cur, d.Next.Status, check))
			if err != nil {
				return d, skipRetry(err)
			}
			d.Events = append(d.Events, ev)
		}
		return d, nil
	})
	if err != nil {
		return nil, err
	}
	if rec.Duplicate {
		return rec, nil
	}
	h.count(verdict)
	if from, to := rec.Before.HealthStatus, rec.Check.StatusAfter; from != to {
		level := slog.LevelInfo
		if to == models.HealthUnhealthy {
			level = slog.LevelWarn
		}
		log.Log(ctx, level, "vps health changed", "from", from, "to", to, "reason", check.Reason, "check_key", key)
	}
	if rec.Before.HostKey == "" && check.Reachable && report.HostKey != "" {
		log.Info("ssh host key pinned", "source", "first use", "fingerprint", models.HostKeySHA256(report.HostKey))
	}
	return rec, nil
}

func (h *CheckHealth) count(v HealthVerdict) {
	switch {
	case v.Unreachable:
		h.unreachable.Add(1)
	case v.Result == models.HealthHealthy:
		h.healthy.Add(1)
	case v.Result == models.HealthDegraded:
		h.degraded.Add(1)
	default:
		h.unhealthy.Add(1)
	}
}

// checkRow is the stored form of one probe and its verdict.
func checkRow(vpsID, key, source string, period *time.Time, r drivers.HealthReport, v HealthVerdict) *models.VPSHealthCheck {
	c := &models.VPSHealthCheck{
		VPSID: vpsID, CheckKey: key, Source: source, Result: v.Result, Reason: v.Reason,
		Reachable: r.Reachable && !v.Unreachable && !v.HostKeyMismatch,
		ConnectMS: ms(r.ConnectLatency),
	}
	if period != nil {
		p := period.UTC()
		c.PeriodStart = &p
	}
	if !c.Reachable {
		return c
	}
	c.Load1, c.Load5, c.Load15, c.CPUs = r.Load1, r.Load5, r.Load15, r.CPUs
	c.MemTotalBytes, c.MemAvailableBytes = clampInt64(r.MemTotalBytes), clampInt64(r.MemAvailableBytes)
	c.DiskTotalBytes, c.DiskFreeBytes = clampInt64(r.DiskTotalBytes), clampInt64(r.DiskFreeBytes)
	c.HTTPStatus, c.HTTPMS, c.HTTPError = r.HTTPStatus, ms(r.HTTPLatency), r.HTTPError
	return c
}

// healthEvent is the event of a change of v's status to `to`, decided by c.
func healthEvent(v *models.VPSServer, to string, c *models.VPSHealthCheck) events.VPSHealthEvent {
	e := events.VPSHealthEvent{
		VPSID: v.ID, Hostname: v.Hostname, From: v.HealthStatus, To: to, Reason: c.Reason,
		CheckKey: c.CheckKey, CheckedAt: c.CheckedAt, Measurements: events.HealthMeasurements{Reachable: c.Reachable},
	}
	if v.Allocation == models.AllocationDedicated && v.TenantID != nil {
		e.TenantID = *v.TenantID
	}
	m := &e.Measurements
	if c.ConnectMS > 0 {
		m.ConnectMS = ptr(round1(c.ConnectMS))
	}
	if !c.Reachable {
		return e
	}
	if c.CPUs > 0 {
		m.CPUs, m.Load1 = ptr(c.CPUs), ptr(round1(c.Load1))
		m.LoadPerCPU = ptr(math.Round(100*c.Load1/float64(c.CPUs)) / 100)
	}
	if p, ok := usedPercent(uint64(c.MemTotalBytes), uint64(c.MemAvailableBytes)); ok {
		m.MemUsedPercent = ptr(round1(p))
	}
	if p, ok := usedPercent(uint64(c.DiskTotalBytes), uint64(c.DiskFreeBytes)); ok {
		m.DiskUsedPct = ptr(round1(p))
	}
	if c.HTTPStatus >= 100 && c.HTTPStatus <= 599 {
		m.HTTPStatus = ptr(c.HTTPStatus)
	}
	return e
}

func ptr[T any](v T) *T { return &v }

func round1(f float64) float64 { return math.Round(f*10) / 10 }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func clampInt64(v uint64) int64 { return int64(min(v, math.MaxInt64)) }

// HealthEnqueuer is the part of queue.Enqueuer the health sweep uses; it treats
// a task-ID conflict as success.
type HealthEnqueuer interface {
	Enqueue(ctx context.Context, task *asynq.Task, opts ...asynq.Option) error
}

// HealthSweepConfig configures the vps:health_sweep handler.
type HealthSweepConfig struct {
	Store    *models.Store
	Enqueuer HealthEnqueuer
	Logger   *slog.Logger
	// Interval is the sweep period; checks time out within it. Required.
	Interval time.Duration
	// PageSize is how many server IDs are read per query. Default 1000.
	PageSize int
	// Concurrency is how many enqueues run at once. Default 32: asynq has no
	// batch enqueue, and 32 round trips in flight keep Redis busy without
	// flooding it.
	Concurrency int
	// Retention is how long checks are kept; each sweep prunes older ones.
	// Default 24h; negative keeps them forever.
	Retention time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Validate reports every missing dependency and bad setting.
func (c HealthSweepConfig) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("jobs: health sweep Store is required"))
	}
	if c.Enqueuer == nil {
		errs = append(errs, errors.New("jobs: health sweep Enqueuer is required"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("jobs: health sweep Logger is required"))
	}
	if c.Interval <= 0 {
		errs = append(errs, errors.New("jobs: health sweep Interval must be positive"))
	}
	if c.PageSize < 0 || c.Concurrency < 0 {
		errs = append(errs, errors.New("jobs: health sweep PageSize and Concurrency must not be negative"))
	}
	return errors.Join(errs...)
}

// SweepRun describes the enqueue phase of one sweep.
type SweepRun struct {
	PeriodStart time.Time
	// Enqueued counts the checks handed to Redis (a task-ID conflict counts:
	// the check is there), Failed the enqueues that failed.
	Enqueued, Failed int
	// Duration is how long listing and enqueueing took.
	Duration time.Duration
}

// SweepHealth handles vps:health_sweep: it pages through the active servers and
// enqueues one vps:health_check per server for the period, with bounded
// concurrency, then prunes checks older than the retention.
type SweepHealth struct {
	cfg  HealthSweepConfig
	log  *slog.Logger
	mu   sync.Mutex
	last SweepRun
}

// NewSweepHealth validates cfg, fills its defaults and returns the handler.
func NewSweepHealth(cfg HealthSweepConfig) (*SweepHealth, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.PageSize == 0 {
		cfg.PageSize = 1000
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 32
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultHealthRetention
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &SweepHealth{cfg: cfg, log: cfg.Logger.With("component", "health_sweep")}, nil
}

// LastRun returns the enqueue phase of the latest sweep this handler ran (zero
// before the first). How long the checks themselves took is
// models.Store.LastCompleteSweep.
func (h *SweepHealth) LastRun() SweepRun {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

// ProcessTask runs one sweep. It fails when any enqueue failed (the checks that
// made it in still run; the next period sweeps every server again).
func (h *SweepHealth) ProcessTask(ctx context.Context, t *asynq.Task) error {
	p, err := queue.DecodeHealthSweepPayload(t.Payload())
	if err != nil {
		return err
	}
	run, err := h.Sweep(ctx, p.PeriodStart)
	if err != nil {
		return err
	}
	if h.cfg.Retention > 0 {
		n, err := h.cfg.Store.PruneHealthChecks(ctx, h.cfg.Now().Add(-h.cfg.Retention), 0)
		if err != nil {
			h.log.Warn("prune health checks failed", "error", err)
		} else if n > 0 {
			h.log.Info("pruned health checks", "deleted", n)
		}
	}
	if run.Failed > 0 {
		return fmt.Errorf("health sweep %s: %d of %d enqueues failed", p.PeriodStart.Format(time.RFC3339),
			run.Failed, run.Failed+run.Enqueued)
	}
	return nil
}

// Sweep enqueues the checks of every active server for the period starting at
// period and logs how long it took. It stops early when ctx ends.
func (h *SweepHealth) Sweep(ctx context.Context, period time.Time) (SweepRun, error) {
	start := time.Now()
	run := SweepRun{PeriodStart: period.UTC()}
	var enqueued, failed atomic.Int64
	var errMu sync.Mutex
	var firstErr error
	ids := make(chan string)
	var wg sync.WaitGroup
	for range h.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				task, err := queue.NewHealthCheckTask(id, period, h.cfg.Interval)
				if err == nil {
					err = h.cfg.Enqueuer.Enqueue(ctx, task)
				}
				if err != nil {
					failed.Add(1)
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					continue
				}
				enqueued.Add(1)
			}
		}()
	}
	var listErr error
	cursor := ""
page:
	for {
		page, err := h.cfg.Store.ActiveVPSIDs(ctx, cursor, h.cfg.PageSize)
		if err != nil {
			listErr = err
			break
		}
		for _, id := range page {
			select {
			case ids <- id:
			case <-ctx.Done():
				listErr = ctx.Err()
				break page
			}
		}
		if len(page) < h.cfg.PageSize {
			break
		}
		cursor = page[len(page)-1]
	}
	close(ids)
	wg.Wait()
	run.Enqueued, run.Failed, run.Duration = int(enqueued.Load()), int(failed.Load()), time.Since(start)
	h.mu.Lock()
	h.last = run
	h.mu.Unlock()
	attrs := []any{"period_start", run.PeriodStart.Format(time.RFC3339), "enqueued", run.Enqueued,
		"failed", run.Failed, "duration_ms", run.Duration.Milliseconds()}
	if firstErr != nil {
		attrs = append(attrs, "error", firstErr)
	}
	if listErr != nil {
		h.log.Warn("health sweep stopped early", append(attrs, "list_error", listErr)...)
		return run, fmt.Errorf("health sweep %s: %w", run.PeriodStart.Format(time.RFC3339), listErr)
	}
	h.log.Info("health sweep enqueued", attrs...)
	return run, nil
}
