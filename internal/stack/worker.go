package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/chomhq/chom/domainverify"
	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/local"
	"github.com/chomhq/chom/drivers/ssh"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
	"github.com/chomhq/chom/workers"
)

// Worker is the queue worker role: an asynq server running the job table
// over the configured driver, every driver call that changes a server behind
// the guard (the server's breaker, then the server's and the tenant's
// concurrency limits).
type Worker struct {
	Server *workers.Server
	// The job families of the table, for tests that call a handler directly
	// or read its counters. Meter, MeterSweep and Backups are nil when the
	// driver cannot measure usage or make backups.
	Provision   *jobs.ProvisionSite
	Deprovision *jobs.DeprovisionSite
	Reconciler  *jobs.Reconciler
	Prune       *jobs.PruneOperations
	HealthSweep *jobs.SweepHealth
	HealthCheck *jobs.CheckHealth
	MeterSweep  *jobs.MeterSweep
	Meter       *jobs.MeterUsage
	Backups     *jobs.Backups
	// Layout migrates sites to the current server layout and LayoutSweep
	// enqueues that for every active site; nil when the driver has no
	// drivers.LayoutMigrator.
	Layout      *jobs.MigrateLayout
	LayoutSweep *jobs.MigrateLayoutSweep
	Verify      *jobs.VerifyDomains
	// IssueCertificate and Certificates are nil when certificates are off
	// (no CHOM_CERT_ENCRYPTION_KEYS) or the driver cannot deploy them.
	IssueCertificate *jobs.IssueCertificate
	RenewSweep       *jobs.RenewSweep
	Certificates     *Certificates
}

// NewWorker builds a worker over b: the driver CHOM_DRIVER names (or
// h.Driver), the guard, the health probe, the backup store and the job table.
func NewWorker(c Config, b *Backends, log *slog.Logger, h Hooks) (*Worker, error) {
	drv, err := newDriver(c, log, h)
	if err != nil {
		return nil, err
	}
	guards, err := newJobGuards(c, b, log)
	if err != nil {
		return nil, err
	}
	guard := guards.Both()
	w := &Worker{}
	deps := jobs.Deps{Store: b.Store, Provisioner: drivers.GuardProvisioner(drv.Provisioner, guard),
		Notifier: queue.NewNotifier(b.Redis), Logger: log, Enqueuer: queue.NewEnqueuer(b.Redis)}
	if deps.IssueCertificates, err = w.certificateJobs(c, b, log, drv, guards, deps.Notifier); err != nil {
		return nil, err
	}
	if w.Provision, err = jobs.NewProvisionSite(deps); err != nil {
		return nil, err
	}
	if w.Deprovision, err = jobs.NewDeprovisionSite(deps); err != nil {
		return nil, err
	}
	if w.Reconciler, err = jobs.NewReconciler(jobs.ReconcilerConfig{
		Store: b.Store, Inspector: queue.NewInspector(b.Redis), Enqueuer: queue.NewEnqueuer(b.Redis),
		Logger: log.With("component", "reconciler"), Grace: offIsNegative(c.ReconcileGrace),
	}); err != nil {
		return nil, err
	}
	if w.Prune, err = jobs.NewPruneOperations(jobs.RetentionConfig{Store: b.Store, Logger: log.With("component", "retention"),
		Operations: c.OperationRetention, Audit: c.AuditRetention}); err != nil {
		return nil, err
	}
	if err := w.healthJobs(c, b, log, h); err != nil {
		return nil, err
	}
	checker, err := domainverify.New(domainverify.Config{Resolver: c.DNSResolver})
	if err != nil {
		return nil, err
	}
	if w.Verify, err = jobs.NewVerifyDomains(jobs.VerifyDomainsConfig{Store: b.Store, Checker: checker,
		Enqueuer: queue.NewEnqueuer(b.Redis), Notifier: deps.Notifier, Logger: log.With("component", "domains"),
		Timeout: c.DomainVerifyTimeout}); err != nil {
		return nil, err
	}
	if err := w.usageJobs(c, b, log, drv, h); err != nil {
		return nil, err
	}
	if err := w.backupJobs(c, b, log, drv, guard); err != nil {
		return nil, err
	}
	if m, ok := drv.Provisioner.(drivers.LayoutMigrator); ok {
		if w.Layout, err = jobs.NewMigrateLayout(jobs.LayoutConfig{Store: b.Store,
			Migrator: drivers.GuardLayoutMigrator(m, guard), Logger: log}); err != nil {
			return nil, err
		}
		if w.LayoutSweep, err = jobs.NewMigrateLayoutSweep(b.Store, queue.NewEnqueuer(b.Redis), log.With("component", "layout")); err != nil {
			return nil, err
		}
	}
	cfg := workers.Config{
		Redis: b.Redis, Logger: log, Jobs: w.table(),
		Concurrency: c.Concurrency, RetryBase: c.RetryBase, RetryMax: c.RetryMax, ShutdownTimeout: c.ShutdownTimeout,
		DeferDelay: c.JobDeferDelay, Metrics: b.Metrics,
	}
	if h.Worker != nil {
		h.Worker(&cfg)
	}
	if w.Server, err = workers.New(cfg); err != nil {
		return nil, err
	}
	return w, nil
}

// table is the worker's job table: one line per job family. A family the
// driver cannot serve is left out; its tasks wait for a worker that has it.
func (w *Worker) table() []workers.Family {
	t := []workers.Family{w.Provision, w.Deprovision, w.Reconciler, w.Prune, w.HealthSweep, w.HealthCheck, w.Verify}
	if w.Meter != nil {
		t = append(t, w.MeterSweep, w.Meter)
	}
	if w.Backups != nil {
		t = append(t, w.Backups)
	}
	if w.Layout != nil {
		t = append(t, w.Layout, w.LayoutSweep)
	}
	if w.IssueCertificate != nil {
		t = append(t, w.IssueCertificate, w.RenewSweep)
	}
	return t
}

// Run processes tasks until ctx ends, then shuts down gracefully.
func (w *Worker) Run(ctx context.Context) error {
	return w.Server.Run(ctx)
}

// healthJobs builds the health sweep and check over the probe
// CHOM_HEALTH_PROBE names (or h.HealthProbe), and reports the checks' counts.
func (w *Worker) healthJobs(c Config, b *Backends, log *slog.Logger, h Hooks) error {
	probe := h.HealthProbe
	if probe == nil {
		var err error
		if probe, err = newHealthProbe(c, b, log); err != nil {
			return err
		}
	}
	writer, err := models.NewHealthWriter(models.HealthWriterConfig{Store: b.Store, Logger: log.With("component", "health_writer")})
	if err != nil {
		return err
	}
	check, err := jobs.NewCheckHealth(jobs.HealthCheckConfig{
		Store: b.Store, Recorder: writer, Probe: probe, Logger: log, Notifier: queue.NewNotifier(b.Redis),
		Thresholds: c.HealthThresholds, Hysteresis: c.HealthHysteresis, CheckTimeout: c.HealthCheckTimeout,
		OnHostKeyMismatch: func() { b.Metrics.SecurityRefused("host_key_mismatch") },
	})
	if err != nil {
		return err
	}
	sweep, err := jobs.NewSweepHealth(jobs.HealthSweepConfig{
		Store: b.Store, Enqueuer: queue.NewEnqueuer(b.Redis), Logger: log,
		Interval: c.HealthInterval, Retention: offIsNegative(c.HealthRetention),
	})
	if err != nil {
		return err
	}
	b.Metrics.TrackHealthChecks(func() map[string]uint64 {
		st := check.Stats()
		return map[string]uint64{models.HealthHealthy: st.Healthy, models.HealthDegraded: st.Degraded,
			models.HealthUnhealthy: st.Unhealthy, "unreachable": st.Unreachable}
	})
	w.HealthSweep, w.HealthCheck = sweep, check
	return nil
}

// usageJobs builds metering over the driver's UsageProbe behind the server's
// breaker, so a dead server defers a tenant's meter at once instead of
// costing a dial timeout per site. It takes no concurrency slot: a
// measurement only reads, and one tenant's meter visits its sites in turn.
func (w *Worker) usageJobs(c Config, b *Backends, log *slog.Logger, drv Driver, h Hooks) error {
	if drv.Usage == nil {
		log.Warn("the driver cannot measure usage; usage tasks are not handled by this worker", "driver", c.Driver)
		return nil
	}
	br, err := b.vpsBreakers(c, log)
	if err != nil {
		return err
	}
	mlog := log.With("component", "metering")
	if w.MeterSweep, err = jobs.NewMeterSweep(jobs.MeterSweepConfig{Store: b.Store, Enqueuer: queue.NewEnqueuer(b.Redis), Logger: mlog}); err != nil {
		return err
	}
	meter, err := jobs.NewMeterUsage(jobs.MeterUsageConfig{Store: b.Store, Probe: br.WrapUsageProbe(drv.Usage), Logger: mlog, Now: h.MeterNow})
	if err != nil {
		return err
	}
	b.Metrics.TrackUsage(func() map[string]uint64 { return meter.Stats().Records }, func() map[string]uint64 { return meter.Stats().Runs })
	w.Meter = meter
	return nil
}

// backupJobs builds the backup handlers over the store and the driver's
// BackupSource behind the guard. A driver without one gets no backup
// handlers: the worker then leaves backup tasks to workers that have them.
func (w *Worker) backupJobs(c Config, b *Backends, log *slog.Logger, drv Driver, guard drivers.Guard) error {
	if drv.Backups == nil {
		log.Warn("the driver cannot make backups; backup tasks are not handled by this worker")
		return nil
	}
	store, err := newBackupStore(c)
	if err != nil {
		return err
	}
	if store == nil {
		return errors.New("backups need CHOM_BACKUP_DIR (or CHOM_LOCAL_ROOT)")
	}
	w.Backups, err = jobs.NewBackups(jobs.BackupConfig{Store: b.Store, Source: drivers.GuardBackupSource(drv.Backups, guard), Backups: store,
		Enqueuer: queue.NewEnqueuer(b.Redis), Notifier: queue.NewNotifier(b.Redis), Logger: log.With("component", "backups")})
	return err
}

// jobGuards is the protection of every job's driver call that changes a
// server (provisioning, backups, restores, certificates): the server's breaker
// first (an open one fails fast, before Redis is asked), then the server's and
// the tenant's concurrency limits. Both refusals wrap drivers.ErrDeferred, so
// the task is rescheduled without burning a retry (workers.IsFailure).
type jobGuards struct {
	// Breaker is the per-server circuit breaker alone, Limits the
	// concurrency limits alone (the certificate job holds a slot around a
	// whole order and guards each server call inside it with the breaker).
	Breaker, Limits drivers.Guard
}

// Both is the breaker, then the limits: the guard of one driver call.
func (g jobGuards) Both() drivers.Guard { return drivers.Chain(g.Breaker, g.Limits) }

// newJobGuards builds the breakers and limits of c over b.
func newJobGuards(c Config, b *Backends, log *slog.Logger) (jobGuards, error) {
	br, err := b.vpsBreakers(c, log)
	if err != nil {
		return jobGuards{}, err
	}
	l, err := b.jobLimiter(c, log)
	if err != nil {
		return jobGuards{}, err
	}
	return jobGuards{Breaker: br.Guard, Limits: l.Guard}, nil
}

// newDriver builds the driver CHOM_DRIVER names — local (a directory per
// server under CHOM_LOCAL_ROOT, which it creates: the local health probe
// reports a missing root as an unreachable server) or ssh (real servers, as
// CHOM_SSH_USER with CHOM_SSH_KEY_FILE) — or takes h.Driver, then applies
// h.WrapProvisioner.
func newDriver(c Config, log *slog.Logger, h Hooks) (Driver, error) {
	var drv Driver
	switch {
	case h.Driver != nil:
		drv = *h.Driver
	case c.Driver == "ssh":
		p, err := ssh.NewProvisioner(ssh.Config{KeyFile: c.SSHKeyFile, User: c.SSHUser, TrustOnFirstUse: c.SSHHostKeyPolicy == "tofu",
			Logger: log.With("component", "driver")})
		if err != nil {
			return Driver{}, err
		}
		drv = Driver{Provisioner: p, Backups: p, Usage: p, TLS: p}
	default:
		if c.LocalRoot == "" {
			return Driver{}, errors.New("the local driver needs CHOM_LOCAL_ROOT")
		}
		if err := os.MkdirAll(c.LocalRoot, 0o755); err != nil {
			return Driver{}, fmt.Errorf("local driver root: %w", err)
		}
		p, err := local.New(local.Config{Root: c.LocalRoot, Logger: log.With("component", "driver")})
		if err != nil {
			return Driver{}, err
		}
		drv = Driver{Provisioner: p, Backups: p, Usage: p, TLS: p}
	}
	if h.WrapProvisioner != nil {
		drv.Provisioner = h.WrapProvisioner(drv.Provisioner)
		if src, ok := drv.Provisioner.(drivers.BackupSource); ok {
			drv.Backups = src
		}
	}
	return drv, nil
}

// newHealthProbe is the probe CHOM_HEALTH_PROBE names: the local driver's
// directories (CHOM_LOCAL_HEALTH_URL, when set, is the URL every server's
// HTTP check asks, "{id}" becoming its ID; unset, HTTP is skipped), or SSH to
// each server behind the same per-server breakers as the jobs'.
func newHealthProbe(c Config, b *Backends, log *slog.Logger) (drivers.HealthProbe, error) {
	if c.HealthProbe != "ssh" {
		hc := local.HealthConfig{Root: c.LocalRoot}
		if c.LocalHealthURL != "" {
			hc.URL = func(s drivers.Server) string { return strings.ReplaceAll(c.LocalHealthURL, "{id}", s.ID) }
		}
		return local.NewHealthProbe(hc)
	}
	inner, err := ssh.New(ssh.Config{KeyFile: c.SSHKeyFile, User: c.SSHUser, TrustOnFirstUse: c.SSHHostKeyPolicy == "tofu",
		MaxConns: c.SSHMaxConns, HTTPPort: c.HealthHTTPPort, Logger: log.With("component", "ssh")})
	if err != nil {
		return nil, err
	}
	breakers, err := b.vpsBreakers(c, log)
	if err != nil {
		return nil, err
	}
	return breakers.Wrap(inner), nil
}
