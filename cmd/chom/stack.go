package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/breaker"
	"github.com/chomhq/chom/drivers/local"
	"github.com/chomhq/chom/drivers/ssh"
	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/metrics"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
	"github.com/chomhq/chom/workers"
	"github.com/chomhq/chom/workers/limits"
)

// newLogger builds the process logger from the config.
// Lines logged with a running task's context carry its task_id, operation_id
// and tenant_id (workers.TaskLogHandler).
func newLogger(w io.Writer, c config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "text" {
		return slog.New(workers.TaskLogHandler(slog.NewTextHandler(w, opts)))
	}
	return slog.New(workers.TaskLogHandler(slog.NewJSONHandler(w, opts)))
}

// backends are the connections every server subcommand shares, and the
// process's metrics (nil: none) that the API and worker built over them report to.
type backends struct {
	db      *bun.DB
	store   *models.Store
	redis   redis.UniversalClient
	metrics *metrics.Metrics
	// breakers and limiter protect every call to a server (protection.go);
	// built on first use and shared by the worker's jobs and health probe.
	breakers *breaker.Registry
	limiter  *limits.Limiter
}

func (b *backends) Close() {
	if b.redis != nil {
		_ = b.redis.Close()
	}
	if b.db != nil {
		_ = b.db.Close()
	}
}

// openBackends connects to the database (migrating it when asked) and Redis. With
// a non-nil m every statement is measured (chom_db_*), and the API and worker
// built over b report to m.
func openBackends(ctx context.Context, c config, migrate bool, m *metrics.Metrics) (*backends, error) {
	db, err := models.Open(ctx, c.DatabaseURL, models.PoolConfig{MaxOpenConns: c.DBMaxConns})
	if err != nil {
		return nil, err
	}
	instrumentDB(db, m)
	b := &backends{db: db, metrics: m}
	if migrate {
		if _, err := models.MigrateUp(ctx, db); err != nil {
			b.Close()
			return nil, err
		}
	}
	b.store, err = models.New(models.Config{DB: db})
	if err != nil {
		b.Close()
		return nil, err
	}
	b.redis, err = queue.NewRedisClient(c.RedisURL, c.RedisPoolSize)
	if err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// newAPI builds the HTTP API over b. Site creations go through acceptor, which the
// caller must run.
func newAPI(c config, b *backends, log *slog.Logger, watcher *queue.Watcher, acceptor *models.SiteAcceptor) (*ingress.API, error) {
	// Two asynqmon handlers, chosen per request by the token's scope: the full
	// UI for admin, the read-only one for ops. Both get the Prometheus address,
	// in every process that serves the API (`chom ingress`, `chom dev`).
	var opsUI, opsUIReadOnly http.Handler
	if c.OpsUI {
		opt, err := queue.RedisOptions(c.RedisURL)
		if err != nil {
			return nil, err
		}
		opsUI = queue.NewOpsUI(opt, false, c.PrometheusURL)
		opsUIReadOnly = queue.NewOpsUI(opt, true, c.PrometheusURL)
	}
	backupCfg, err := backupAPIConfig(c, "")
	if err != nil {
		return nil, err
	}
	if c.BackupSigningKey == "" {
		log.Info("CHOM_BACKUP_SIGNING_KEY is not set: backup download links are signed with a random key and work only on this process")
	}
	gin.SetMode(gin.ReleaseMode)
	return ingress.New(ingress.Config{
		Store:         b.store,
		Sites:         acceptor,
		Enqueuer:      queue.NewEnqueuer(b.redis),
		Inspector:     queue.NewInspector(b.redis),
		Watcher:       watcher,
		Notifier:      queue.NewNotifier(b.redis),
		Logger:        log,
		Metrics:       b.metrics,
		OpsUI:         opsUI,
		OpsUIReadOnly: opsUIReadOnly,
		TokenCacheTTL: c.TokenCacheTTL,
		RateLimit:     c.RateLimit,
		// 0 from the environment means "off" to an operator; to the API it means
		// "default", so map it.
		OperationCacheTTL: cacheTTL(c.OpCacheTTL),
		RateBurst:         c.RateBurst,
		Backups:           backupCfg,
	})
}

// ingressParts is the HTTP side of a process: the long-poll watcher, the site
// acceptor and the API over them.
type ingressParts struct {
	watcher  *queue.Watcher
	acceptor *models.SiteAcceptor
	api      *ingress.API
}

// newIngress builds the API with its watcher and acceptor over b.
func newIngress(c config, b *backends, log *slog.Logger) (*ingressParts, error) {
	watcher := queue.NewWatcher(b.redis)
	acceptor, err := newAcceptor(c, b, log)
	if err != nil {
		return nil, err
	}
	api, err := newAPI(c, b, log, watcher, acceptor)
	if err != nil {
		return nil, err
	}
	return &ingressParts{watcher: watcher, acceptor: acceptor, api: api}, nil
}

// runners are the loops that serve the API on ln until ctx ends, for runAll.
func (p *ingressParts) runners(ln net.Listener, shutdown time.Duration, log *slog.Logger) []func(context.Context) error {
	return []func(context.Context) error{
		func(ctx context.Context) error { p.watcher.Run(ctx); return nil },
		p.acceptor.Run,
		func(ctx context.Context) error { return serveHTTP(ctx, ln, p.api.Handler(), shutdown, log) },
	}
}

// newScheduler builds the periodic-task scheduler for c's Redis.
func newScheduler(c config, log *slog.Logger) (*workers.Scheduler, error) {
	redisOpt, err := queue.RedisOptions(c.RedisURL)
	if err != nil {
		return nil, err
	}
	return workers.NewScheduler(workers.SchedulerConfig{Redis: redisOpt, Logger: log, Table: schedule(c)})
}

// schedule is the scheduler's table: every periodic task and its interval
// (each interval is a CHOM_* setting; see the README).
func schedule(c config) []workers.Periodic {
	return append([]workers.Periodic{
		{Name: "reconcile", Every: c.ReconcileEvery, NewTask: func(time.Time) (*asynq.Task, error) { return queue.NewReconcileTask(), nil }},
		{Name: "health_sweep", Every: c.HealthInterval, NewTask: func(p time.Time) (*asynq.Task, error) {
			return queue.NewHealthSweepTask(p, c.HealthInterval)
		}},
		// The tick at period start p meters the period [p-interval, p) that just ended.
		{Name: "metering", Every: c.MeteringEvery, NewTask: func(p time.Time) (*asynq.Task, error) {
			return queue.NewUsageMeterSweepTask(p, c.MeteringEvery)
		}},
	}, backupSchedule(c)...)
}

// cacheTTL maps CHOM_OPERATION_CACHE_TTL=0 (off) to the API's "disabled" value.
func cacheTTL(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// newAcceptor builds the group-committing site acceptor of the ingress.
func newAcceptor(c config, b *backends, log *slog.Logger) (*models.SiteAcceptor, error) {
	return models.NewSiteAcceptor(models.SiteAcceptorConfig{Store: b.store, Logger: log.With("component", "acceptor"),
		MaxBatch: c.AcceptBatch, Committers: c.AcceptCommitters})
}

// newWorker builds a worker server over b with the local driver rooted at root.
func newWorker(c config, b *backends, log *slog.Logger, root string) (*workers.Server, error) {
	drv, err := newDriver(c, log, root)
	if err != nil {
		return nil, err
	}
	guard, err := jobGuard(c, b, log)
	if err != nil {
		return nil, err
	}
	jobProv := drivers.GuardProvisioner(drv.prov, guard)
	deps := jobs.Deps{Store: b.store, Provisioner: jobProv, Notifier: queue.NewNotifier(b.redis), Logger: log}
	// The backup jobs' BackupSource is behind the same guard.
	var src drivers.BackupSource
	if drv.backups != nil {
		src = drivers.GuardBackupSource(drv.backups, guard)
	}
	backups, err := newBackupJobs(c, b, log, src, root)
	if err != nil {
		return nil, err
	}
	provision, err := jobs.NewProvisionSite(deps)
	if err != nil {
		return nil, err
	}
	deprovision, err := jobs.NewDeprovisionSite(deps)
	if err != nil {
		return nil, err
	}
	reconciler, err := jobs.NewReconciler(jobs.ReconcilerConfig{
		Store: b.store, Inspector: queue.NewInspector(b.redis), Enqueuer: queue.NewEnqueuer(b.redis),
		Logger: log.With("component", "reconciler"), Grace: c.ReconcileGrace,
	})
	if err != nil {
		return nil, err
	}
	sweep, check, err := newHealthJobs(c, b, log, root)
	if err != nil {
		return nil, err
	}
	// Metering measures through the driver's UsageProbe (both drivers have
	// one); a driver without one would leave usage tasks to workers that have it.
	var meterSweep *jobs.MeterSweep
	var meter *jobs.MeterUsage
	if drv.usage != nil {
		usage, err := protectUsageProbe(c, b, log, drv.usage)
		if err != nil {
			return nil, err
		}
		if meterSweep, err = jobs.NewMeterSweep(jobs.MeterSweepConfig{Store: b.store, Enqueuer: queue.NewEnqueuer(b.redis),
			Logger: log.With("component", "metering")}); err != nil {
			return nil, err
		}
		if meter, err = jobs.NewMeterUsage(jobs.MeterUsageConfig{Store: b.store, Probe: usage, Logger: log.With("component", "metering")}); err != nil {
			return nil, err
		}
		if b.metrics != nil {
			b.metrics.TrackUsage(func() map[string]uint64 { return meter.Stats().Records }, func() map[string]uint64 { return meter.Stats().Runs })
		}
	} else {
		log.Warn("the driver cannot measure usage; usage tasks are not handled by this worker", "driver", c.Driver)
	}
	return workers.New(workers.Config{
		Redis: b.redis, Logger: log, Provision: provision, Deprovision: deprovision, Reconciler: reconciler,
		HealthSweep: sweep, HealthCheck: check,
		MeterSweep: meterSweep, Meter: meter, Backups: backups,
		Concurrency: c.Concurrency, RetryBase: c.RetryBase, RetryMax: c.RetryMax, ShutdownTimeout: c.ShutdownTimeout,
		DeferDelay: c.JobDeferDelay,
		Metrics:    b.metrics,
	})
}

// newHealthJobs builds the health sweep and check handlers with the local
// probe rooted at root. CHOM_LOCAL_HEALTH_URL, when set, is the URL every local
// server's HTTP check asks ("{id}" in it becomes the server's ID); unset, the
// local probe skips HTTP (there is no nginx in `chom dev`).
func newHealthJobs(c config, b *backends, log *slog.Logger, root string) (*jobs.SweepHealth, *jobs.CheckHealth, error) {
	probe, err := newHealthProbe(c, b, log, root)
	if err != nil {
		return nil, nil, err
	}
	check, err := jobs.NewCheckHealth(jobs.HealthCheckConfig{
		Store: b.store, Probe: probe, Logger: log, Notifier: queue.NewNotifier(b.redis),
		Thresholds: c.HealthThresholds, Hysteresis: c.HealthHysteresis, CheckTimeout: c.HealthCheckTimeout,
	})
	if err != nil {
		return nil, nil, err
	}
	sweep, err := jobs.NewSweepHealth(jobs.HealthSweepConfig{
		Store: b.store, Enqueuer: queue.NewEnqueuer(b.redis), Logger: log,
		Interval: c.HealthInterval, Retention: retention(c.HealthRetention),
	})
	if err != nil {
		return nil, nil, err
	}
	if b.metrics != nil {
		b.metrics.TrackHealthChecks(func() map[string]uint64 {
			st := check.Stats()
			return map[string]uint64{models.HealthHealthy: st.Healthy, models.HealthDegraded: st.Degraded,
				models.HealthUnhealthy: st.Unhealthy, "unreachable": st.Unreachable}
		})
	}
	return sweep, check, nil
}

// driver is what the worker's jobs use to reach servers: the provisioner, and
// its BackupSource and UsageProbe when it has them (nil otherwise).
type driver struct {
	prov    drivers.Provisioner
	backups drivers.BackupSource
	usage   drivers.UsageProbe
}

// newDriver builds the driver CHOM_DRIVER names: local (a directory per server
// under root, which it creates: the local health probe reports a missing root
// as an unreachable server) or ssh (real servers, with CHOM_SSH_KEY_FILE as
// CHOM_SSH_USER).
func newDriver(c config, log *slog.Logger, root string) (driver, error) {
	if c.Driver == "ssh" {
		p, err := ssh.NewProvisioner(ssh.Config{KeyFile: c.SSHKeyFile, User: c.SSHUser, Logger: log.With("component", "driver")})
		if err != nil {
			return driver{}, err
		}
		return driver{prov: p, backups: p, usage: p}, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return driver{}, fmt.Errorf("local driver root: %w", err)
	}
	p, err := local.New(local.Config{Root: root, Logger: log.With("component", "driver")})
	if err != nil {
		return driver{}, err
	}
	return driver{prov: p, backups: p, usage: p}, nil
}

// newHealthProbe is the probe CHOM_HEALTH_PROBE names: the local driver's
// directories, or SSH to each server behind a circuit breaker per server (whose
// states b.metrics reports as chom_circuit_breaker_state{breaker="vps_<id>"}).
func newHealthProbe(c config, b *backends, log *slog.Logger, root string) (drivers.HealthProbe, error) {
	if c.HealthProbe != "ssh" {
		hc := local.HealthConfig{Root: root}
		if c.LocalHealthURL != "" {
			hc.URL = func(s drivers.Server) string { return strings.ReplaceAll(c.LocalHealthURL, "{id}", s.ID) }
		}
		return local.NewHealthProbe(hc)
	}
	inner, err := ssh.New(ssh.Config{KeyFile: c.SSHKeyFile, User: c.SSHUser, Logger: log.With("component", "ssh")})
	if err != nil {
		return nil, err
	}
	// The same breakers as the jobs' (protection.go): one per server.
	breakers, err := b.vpsBreakers(c, log)
	if err != nil {
		return nil, err
	}
	return breakers.Wrap(inner), nil
}

// retention maps CHOM_HEALTH_RETENTION=0 (keep forever) to the sweep's
// "never prune" value.
func retention(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// serveHTTP serves h on ln until ctx ends, then drains in-flight requests for up
// to the shutdown timeout. Long polls last at most 30s, so the write timeout
// leaves room for them.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler, shutdown time.Duration, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      45 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdown)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		if !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("http shutdown: %w", err)
		}
		// The drain time is up. What is still open (a long poll, or a connection a
		// client opened but has not used yet, which net/http waits 5s for) is cut,
		// as the shutdown timeout promises: a normal stop, not a failure.
		log.Warn("shutdown timeout reached; closing the connections still open", "timeout", shutdown.String())
		_ = srv.Close()
	}
	return nil
}

// runAll runs every fn until ctx ends or one fails; then it cancels the rest and
// waits for them, returning the first error.
func runAll(ctx context.Context, fns ...func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(fns))
	for _, fn := range fns {
		go func() { errc <- fn(ctx) }()
	}
	var first error
	for range fns {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}
