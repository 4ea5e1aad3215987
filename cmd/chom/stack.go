package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/drivers/local"
	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
	"github.com/chomhq/chom/workers"
)

// newLogger builds the process logger from the config.
func newLogger(w io.Writer, c config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// backends are the connections every server subcommand shares.
type backends struct {
	db    *bun.DB
	store *models.Store
	redis redis.UniversalClient
}

func (b *backends) Close() {
	if b.redis != nil {
		_ = b.redis.Close()
	}
	if b.db != nil {
		_ = b.db.Close()
	}
}

// openBackends connects to the database (migrating it when asked) and Redis.
func openBackends(ctx context.Context, c config, migrate bool) (*backends, error) {
	db, err := models.Open(ctx, c.DatabaseURL, models.PoolConfig{MaxOpenConns: c.DBMaxConns})
	if err != nil {
		return nil, err
	}
	b := &backends{db: db}
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
	var opsUI http.Handler
	if c.OpsUI {
		opt, err := queue.RedisOptions(c.RedisURL)
		if err != nil {
			return nil, err
		}
		opsUI = queue.NewOpsUI(opt, false, c.PrometheusURL)
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
		OpsUI:         opsUI,
		TokenCacheTTL: c.TokenCacheTTL,
		RateLimit:     c.RateLimit,
		// 0 from the environment means "off" to an operator; to the API it means
		// "default", so map it.
		OperationCacheTTL: cacheTTL(c.OpCacheTTL),
		RateBurst:         c.RateBurst,
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
	return workers.NewScheduler(workers.SchedulerConfig{Redis: redisOpt, Logger: log, ReconcileEvery: c.ReconcileEvery})
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
	prov, err := local.New(local.Config{Root: root, Logger: log.With("component", "driver")})
	if err != nil {
		return nil, err
	}
	deps := jobs.Deps{Store: b.store, Provisioner: prov, Notifier: queue.NewNotifier(b.redis), Logger: log}
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
	return workers.New(workers.Config{
		Redis: b.redis, Logger: log, Provision: provision, Deprovision: deprovision, Reconciler: reconciler,
		Concurrency: c.Concurrency, RetryBase: c.RetryBase, RetryMax: c.RetryMax, ShutdownTimeout: c.ShutdownTimeout,
	})
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
