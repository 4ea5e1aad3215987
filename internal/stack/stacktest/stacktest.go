// Package stacktest starts CHOM's production wiring (package stack) inside a
// test: the ingress on a loopback port, a worker with the guard, breakers,
// limits, metrics and the whole job table, and optionally the scheduler and
// the relay, over a database the test chose (a PostgreSQL schema or an SQLite
// file) and a Redis database of its own. What differs from production is only
// what a test needs to differ: shorter timings, a temporary driver root and
// backup directory, and the Hooks a test passes to count or fail driver calls.
//
// It is imported only from tests.
package stacktest

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/internal/stack"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/metrics"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/workers"
)

// SigningKey signs the kit's backup download links.
const SigningKey = "stacktest-backup-signing-key-0123456789"

// Options say what Start runs.
type Options struct {
	// DB is the database, opened by the test (testenv.Postgres or an SQLite
	// file); Start migrates it. Required.
	DB *bun.DB
	// Env are CHOM_* settings applied over the kit's test defaults (Defaults).
	Env map[string]string
	// NoWorker builds the worker (its handlers can be called directly) but
	// does not run it; StartWorker runs it later.
	NoWorker bool
	// Scheduler runs the scheduler too.
	Scheduler bool
	// Relay runs the outbox relay too (CHOM_KAFKA_BROKERS must be in Env).
	Relay bool
	// Hooks are passed to the roles, after the kit's own timings.
	Hooks stack.Hooks
	// Metrics is the registry of every role; nil: a new one.
	Metrics *metrics.Metrics
	// Logger receives every role's lines; nil: discarded, or stderr when
	// CHOM_TEST_VERBOSE is set.
	Logger *slog.Logger
}

// Defaults are the kit's settings under Options.Env: fast retries and
// deferrals, no token cache or rate limit, a short health-check timeout and
// a fixed signing key. CHOM_REDIS_URL, CHOM_LISTEN, CHOM_LOCAL_ROOT and
// CHOM_BACKUP_DIR are set by Start.
func Defaults() map[string]string {
	return map[string]string{
		"CHOM_WORKER_CONCURRENCY":   "8",
		"CHOM_RETRY_BASE":           "20ms",
		"CHOM_RETRY_MAX":            "100ms",
		"CHOM_JOB_DEFER_DELAY":      "100ms",
		"CHOM_SHUTDOWN_TIMEOUT":     "5s",
		"CHOM_RECONCILE_GRACE":      "0",
		"CHOM_TOKEN_CACHE_TTL":      "-1s", // tests revoke tokens and expect it at once
		"CHOM_RATE_LIMIT":           "0",
		"CHOM_HEALTH_CHECK_TIMEOUT": "2s",
		"CHOM_REDIS_POOL_SIZE":      "16",
		"CHOM_BACKUP_SIGNING_KEY":   SigningKey,
		"CHOM_RELAY_POLL_INTERVAL":  "20ms",
		"CHOM_KAFKA_PARTITIONS":     "1",
		"CHOM_KAFKA_REPLICATION":    "1",
		"CHOM_LOG_LEVEL":            "debug",
	}
}

// Stack is one CHOM installation for one test.
type Stack struct {
	Config  stack.Config
	DB      *bun.DB
	Store   *models.Store
	Metrics *metrics.Metrics
	// Redis is the test's Redis database; the worker and scheduler use it
	// directly, the ingress through Proxy, which the test can cut.
	Redis       testenv.RedisDB
	WorkerRedis redis.UniversalClient
	Proxy       *testenv.Proxy
	// Ingress is the API; URL its base (http://127.0.0.1:port).
	Ingress *stack.Ingress
	URL     string
	// Worker is built always and running unless Options.NoWorker.
	Worker *stack.Worker
	// Relay is the outbox relay when Options.Relay; nil otherwise.
	Relay *stack.Relay
	// Root is the local driver's root, BackupDir the backup store's.
	Root, BackupDir string

	t       testing.TB
	running bool
}

// Start builds and runs the stack; everything stops when the test ends.
func Start(t testing.TB, o Options) *Stack {
	t.Helper()
	if o.DB == nil {
		t.Fatal("stacktest: Options.DB is required")
	}
	ctx := context.WithoutCancel(t.Context())
	s := &Stack{t: t, DB: o.DB, Redis: testenv.Redis(t)}
	// The local driver writes its root into config files, so it takes only
	// plain path characters; test names (and so t.TempDir) may have others.
	s.Root = tempDir(t, "chom-vps-")
	s.BackupDir = tempDir(t, "chom-backups-")
	env := Defaults()
	env["CHOM_REDIS_URL"] = s.Redis.URL
	env["CHOM_LISTEN"] = "127.0.0.1:0"
	env["CHOM_LOCAL_ROOT"] = s.Root
	env["CHOM_BACKUP_DIR"] = s.BackupDir
	maps.Copy(env, o.Env)
	c, err := stack.LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("stacktest: %v", err)
	}
	s.Config, s.Root, s.BackupDir = c, c.LocalRoot, c.BackupDir
	log := o.Logger
	if log == nil {
		log = Logger()
	}

	s.WorkerRedis = s.Redis.Client(t)
	b, err := stack.NewBackends(ctx, o.DB, s.WorkerRedis, stack.BackendOptions{Migrate: true, Metrics: o.Metrics, Quotas: c.Quotas,
		DomainVerification: c.DomainVerification})
	if err != nil {
		t.Fatalf("stacktest: %v", err)
	}
	s.Store, s.Metrics = b.Store, b.Metrics
	b.TrackPlatform(ctx)

	// The API reaches Redis through a proxy the test can cut, with short
	// timeouts so a cut shows at once.
	s.Proxy = testenv.NewProxy(t, s.Redis.Addr)
	apiRedis := redis.NewClient(&redis.Options{Addr: s.Proxy.Addr(), DB: s.Redis.DB,
		DialTimeout: 300 * time.Millisecond, ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond, MaxRetries: 0})
	t.Cleanup(func() { _ = apiRedis.Close() })

	hooks := o.Hooks
	hooks.Ingress = chain(func(cfg *ingress.Config) {
		cfg.EnqueueTimeout, cfg.PollInterval = time.Second, 100*time.Millisecond
	}, o.Hooks.Ingress)
	hooks.Worker = chain(func(cfg *workers.Config) {
		cfg.PollInterval, cfg.RetryCheckInterval = 20*time.Millisecond, 50*time.Millisecond
	}, o.Hooks.Worker)

	if s.Ingress, err = stack.NewIngress(c, b.WithRedis(apiRedis), log, hooks); err != nil {
		t.Fatalf("stacktest: ingress: %v", err)
	}
	s.URL = s.Ingress.URL()
	testenv.RunInBackground(t, "ingress", s.Ingress.Run)
	if s.Worker, err = stack.NewWorker(c, b, log, hooks); err != nil {
		t.Fatalf("stacktest: worker: %v", err)
	}
	if !o.NoWorker {
		s.StartWorker()
	}
	if o.Scheduler {
		sched, err := stack.NewScheduler(c, log)
		if err != nil {
			t.Fatalf("stacktest: scheduler: %v", err)
		}
		testenv.RunInBackground(t, "scheduler", sched.Run)
	}
	if o.Relay {
		if s.Relay, err = stack.NewRelay(ctx, c, b, log); err != nil {
			t.Fatalf("stacktest: relay: %v", err)
		}
		testenv.RunInBackground(t, "relay", s.Relay.Run)
	}
	return s
}

// StartWorker runs the worker for the rest of the test (once).
func (s *Stack) StartWorker() {
	s.t.Helper()
	if s.running {
		s.t.Fatal("stacktest: the worker is already running")
	}
	s.running = true
	testenv.RunInBackground(s.t, "worker", s.Worker.Run)
}

// Logger is the kit's default logger: stderr at debug when CHOM_TEST_VERBOSE
// is set, else nothing.
func Logger() *slog.Logger {
	if os.Getenv("CHOM_TEST_VERBOSE") != "" {
		return slog.New(workers.TaskLogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func tempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// chain runs first, then next when it is set.
func chain[T any](first func(*T), next func(*T)) func(*T) {
	return func(v *T) {
		first(v)
		if next != nil {
			next(v)
		}
	}
}
