package stack

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/drivers/breaker"
	"github.com/chomhq/chom/metrics"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
	"github.com/chomhq/chom/workers"
	"github.com/chomhq/chom/workers/limits"
)

// NewLogger builds a process logger from c (CHOM_LOG_LEVEL, CHOM_LOG_FORMAT).
// Lines logged with a running task's context carry its task_id, operation_id
// and tenant_id (workers.TaskLogHandler).
func NewLogger(w io.Writer, c Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "text" {
		return slog.New(workers.TaskLogHandler(slog.NewTextHandler(w, opts)))
	}
	return slog.New(workers.TaskLogHandler(slog.NewJSONHandler(w, opts)))
}

// Backends are the connections a process's roles share: the database, Redis
// (nil for the relay and the billing consumer) and the process's metrics
// registry, plus the per-server breakers and concurrency limits every job and
// probe of the process shares.
type Backends struct {
	DB    *bun.DB
	Store *models.Store
	// ReadDB is the streaming replica of CHOM_DATABASE_READ_URL, opened for
	// the ingress (BackendOptions.Reads); nil without one.
	ReadDB  *bun.DB
	Redis   redis.UniversalClient
	Metrics *metrics.Metrics

	breakers *breaker.Registry
	limiter  *limits.Limiter
	closers  []func()
}

// BackendOptions say what OpenBackends opens.
type BackendOptions struct {
	// Migrate applies the schema migrations after connecting.
	Migrate bool
	// NoRedis skips Redis (the relay and the billing consumer need none).
	NoRedis bool
	// Reads opens the read replica of CHOM_DATABASE_READ_URL too, when it is
	// set (the ingress's reads use it).
	Reads bool
	// MaxConns caps the database pool below CHOM_DB_MAX_CONNS; 0: no cap.
	MaxConns int
	// Metrics is the registry every statement is measured in and the roles
	// built over the backends report to; nil: a new one.
	Metrics *metrics.Metrics
	// Quotas are the store's default per-tenant limits (Config.Quotas;
	// OpenBackends takes them from its Config).
	Quotas models.Limits
	// DomainVerification is the store's verification mode (Config.DomainVerification).
	DomainVerification string
}

// OpenBackends connects to c's database (migrating it when asked) and Redis.
// Close releases both.
func OpenBackends(ctx context.Context, c Config, o BackendOptions) (*Backends, error) {
	o.Quotas = c.Quotas
	o.DomainVerification = c.DomainVerification
	conns := c.DBMaxConns
	if o.MaxConns > 0 {
		conns = min(conns, o.MaxConns)
	}
	db, err := models.Open(ctx, c.DatabaseURL, models.PoolConfig{MaxOpenConns: conns})
	if err != nil {
		return nil, err
	}
	b := &Backends{closers: []func(){func() { _ = db.Close() }}}
	if o.Reads && c.DatabaseReadURL != "" {
		rdb, err := models.Open(ctx, c.DatabaseReadURL, models.PoolConfig{MaxOpenConns: conns})
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("CHOM_DATABASE_READ_URL: %w", err)
		}
		b.closers = append(b.closers, func() { _ = rdb.Close() })
		b.ReadDB = rdb
	}
	var rdb redis.UniversalClient
	if !o.NoRedis {
		if rdb, err = queue.NewRedisClient(c.RedisURL, c.RedisPoolSize); err != nil {
			b.Close()
			return nil, err
		}
		b.closers = append(b.closers, func() { _ = rdb.Close() })
	}
	if err := b.attach(ctx, db, rdb, o); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// NewBackends builds Backends over connections the caller opened and keeps
// (Close does not close them): the test kit's way to give a role a database
// schema of its own or a Redis client behind a proxy it can cut.
func NewBackends(ctx context.Context, db *bun.DB, rdb redis.UniversalClient, o BackendOptions) (*Backends, error) {
	b := &Backends{}
	if err := b.attach(ctx, db, rdb, o); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *Backends) attach(ctx context.Context, db *bun.DB, rdb redis.UniversalClient, o BackendOptions) error {
	b.DB, b.Redis, b.Metrics = db, rdb, o.Metrics
	if b.Metrics == nil {
		b.Metrics = metrics.New()
	}
	// bun v1.3's AddQueryHook is marked deprecated in favour of an option it
	// does not have yet; it is the only way to add a hook to an opened DB.
	db.AddQueryHook(b.Metrics.QueryHook())
	if b.ReadDB != nil {
		b.ReadDB.AddQueryHook(b.Metrics.QueryHook())
	}
	if o.Migrate {
		if _, err := models.MigrateUp(ctx, db); err != nil {
			return err
		}
	}
	store, err := models.New(models.Config{DB: db, QuotaDefaults: o.Quotas, DomainVerification: o.DomainVerification})
	if err != nil {
		return err
	}
	b.Store = store
	return nil
}

// Close closes what OpenBackends opened.
func (b *Backends) Close() {
	for i := len(b.closers) - 1; i >= 0; i-- {
		b.closers[i]()
	}
	b.closers = nil
}

// WithRedis returns Backends sharing b's database, store, metrics, breakers
// and limits but reaching Redis through rdb (the test kit gives the API a
// client behind a proxy it can cut).
func (b *Backends) WithRedis(rdb redis.UniversalClient) *Backends {
	c := *b
	c.Redis = rdb
	c.closers = nil
	return &c
}

// TrackPlatform makes the process's metrics report the platform-wide figures
// read at scrape time: queue depths from Redis and site, backup and server
// counts and certificate expiries from the database. ctx is the process's lifetime.
func (b *Backends) TrackPlatform(ctx context.Context) {
	insp := queue.NewInspector(b.Redis)
	b.Metrics.TrackQueues(ctx, queue.Names(), func(ctx context.Context) ([]metrics.QueueDepth, error) {
		ds, err := insp.Depths(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]metrics.QueueDepth, len(ds))
		for i, d := range ds {
			out[i] = metrics.QueueDepth{Queue: d.Queue, Pending: d.Pending, Active: d.Active, Retry: d.Retry,
				Archived: d.Archived, Latency: time.Duration(d.LatencyMS) * time.Millisecond}
		}
		return out, nil
	})
	b.Metrics.TrackStatuses(ctx, b.Store.CountSitesByStatus, b.Store.CountBackupsByStatus)
	b.Metrics.TrackCertificates(ctx, func(ctx context.Context) ([]metrics.CertificateExpiry, error) {
		es, err := b.Store.CertificateExpiries(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]metrics.CertificateExpiry, len(es))
		for i, e := range es {
			out[i] = metrics.CertificateExpiry{SiteID: e.SiteID, Source: e.Source, NotAfter: e.NotAfter}
		}
		return out, nil
	})
	b.Metrics.TrackFleet(ctx, b.Store.CountVPSByHealth, func(ctx context.Context) (int, time.Duration, bool, error) {
		s, ok, err := b.Store.LastCompleteSweep(ctx)
		return s.Servers, s.Duration, ok, err
	})
}

// vpsBreakers returns the process's per-server circuit breakers, built on
// first use, so the SSH health probe and every job of a worker share one
// breaker per server. Their states are reported as
// chom_circuit_breaker_state{breaker="vps_<id>"}.
func (b *Backends) vpsBreakers(c Config, log *slog.Logger) (*breaker.Registry, error) {
	if b.breakers != nil {
		return b.breakers, nil
	}
	r, err := breaker.New(breaker.Config{Failures: uint32(c.HealthBreakerFailures), OpenTimeout: c.HealthBreakerOpen,
		Logger: log.With("component", "breaker")})
	if err != nil {
		return nil, fmt.Errorf("breakers: %w", err)
	}
	b.Metrics.TrackBreakers(r.States)
	b.breakers = r
	return r, nil
}

// jobLimiter returns the process's per-server and per-tenant concurrency
// limits, built on first use. They live in Redis, so they hold across every
// worker process of the fleet.
func (b *Backends) jobLimiter(c Config, log *slog.Logger) (*limits.Limiter, error) {
	if b.limiter != nil {
		return b.limiter, nil
	}
	l, err := limits.New(limits.Config{Redis: b.Redis, VPSMax: c.VPSMaxJobs, TenantMax: c.TenantMaxJobs,
		Lease: c.JobSlotLease, Logger: log.With("component", "limits")})
	if err != nil {
		return nil, fmt.Errorf("limits: %w", err)
	}
	b.limiter = l
	return l, nil
}
