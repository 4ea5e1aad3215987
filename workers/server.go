package workers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/metrics"
	"github.com/chomhq/chom/queue"
)

// Defaults of Config, used when a field is zero. The assembly's settings
// table (internal/stack) takes the CHOM_* defaults from these, so each value
// is written once.
const (
	DefaultConcurrency     = 20
	DefaultRetryBase       = 2 * time.Second
	DefaultRetryMax        = 5 * time.Minute
	DefaultShutdownTimeout = 30 * time.Second
	DefaultDeferDelay      = 2 * time.Second
)

// Family is a job family: it names the task types it handles and their
// handlers (jobs.ProvisionSite, jobs.Backups, ...).
type Family interface {
	Routes() []jobs.Route
}

// Config configures a worker process.
type Config struct {
	Redis  redis.UniversalClient
	Logger *slog.Logger
	// Jobs is the worker's job table: every task type of every family is
	// registered on the mux. asynq fails a task whose type has no handler, so
	// every worker of a fleet registers every family its scheduler and ingress
	// enqueue (the assembly, internal/stack, builds one table for all).
	Jobs []Family
	// Concurrency is how many tasks run at once in this process. Default 20.
	Concurrency int
	// RetryBase and RetryMax bound the exponential backoff between attempts.
	// Defaults 2s and 5m.
	RetryBase, RetryMax time.Duration
	// DeferDelay is about how long a deferred task (drivers.ErrDeferred: its
	// server's breaker is open or a concurrency limit is reached) waits before
	// it runs again; each wait is drawn from [DeferDelay/2, 3·DeferDelay/2) so
	// deferred tasks spread out. It costs no retry. Default 2s.
	DeferDelay time.Duration
	// PollInterval is how often an idle worker checks the queues for new tasks,
	// and RetryCheckInterval how often it moves due retries back to pending.
	// Defaults 250ms and 1s: the delay a caller sees between accept and pick-up.
	PollInterval, RetryCheckInterval time.Duration
	// ShutdownTimeout is how long a stopping worker lets running tasks finish
	// before their context is cancelled and they are re-queued. Default 30s.
	ShutdownTimeout time.Duration
	// Metrics, when set, records every task attempt (chom_queue_jobs_*).
	// Optional: nil means no metrics.
	Metrics *metrics.Metrics
}

// Validate reports every missing field.
func (c Config) Validate() error {
	var errs []error
	if c.Redis == nil {
		errs = append(errs, errors.New("workers: Redis is required"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("workers: Logger is required"))
	}
	if len(c.Jobs) == 0 {
		errs = append(errs, errors.New("workers: Jobs is empty: a worker needs at least one job family"))
	}
	seen := map[string]bool{}
	for _, f := range c.Jobs {
		if f == nil {
			errs = append(errs, errors.New("workers: Jobs holds a nil family"))
			continue
		}
		for _, r := range f.Routes() {
			switch {
			case r.Type == "" || r.Handler == nil:
				errs = append(errs, fmt.Errorf("workers: %T has a route without a task type or handler", f))
			case seen[r.Type]:
				errs = append(errs, fmt.Errorf("workers: task type %s is registered twice", r.Type))
			}
			seen[r.Type] = true
		}
	}
	return errors.Join(errs...)
}

// Server is an asynq server running CHOM's handlers.
type Server struct {
	srv *asynq.Server
	mux *asynq.ServeMux
	log *slog.Logger
}

// New builds a worker server; Run starts it.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = DefaultRetryBase
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.DeferDelay <= 0 {
		cfg.DeferDelay = DefaultDeferDelay
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 250 * time.Millisecond
	}
	if cfg.RetryCheckInterval <= 0 {
		cfg.RetryCheckInterval = time.Second
	}
	// The worker's own lines about a task carry its IDs even when the caller's
	// logger was not built with TaskLogHandler.
	tlog := cfg.Logger
	if _, ok := tlog.Handler().(*taskLogHandler); !ok {
		tlog = slog.New(TaskLogHandler(tlog.Handler()))
	}
	srv := asynq.NewServerFromRedisClient(cfg.Redis, asynq.Config{
		Concurrency:              cfg.Concurrency,
		Queues:                   queue.Weights(),
		RetryDelayFunc:           RetryDelay(cfg.RetryBase, cfg.RetryMax, cfg.DeferDelay),
		IsFailure:                IsFailure,
		ShutdownTimeout:          cfg.ShutdownTimeout,
		TaskCheckInterval:        cfg.PollInterval,
		DelayedTaskCheckInterval: cfg.RetryCheckInterval,
		Logger:                   asynqLogger{cfg.Logger.With("component", "asynq")},
		ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
			logTaskError(ctx, tlog, t, err)
		}),
	})
	mux := asynq.NewServeMux()
	// Outermost, so the metrics and log lines time the handler, not the wait.
	mux.Use(awaitRedis(cfg.Redis, tlog))
	if cfg.Metrics != nil {
		mux.Use(ObserveTasks(cfg.Metrics))
	}
	mux.Use(logTasks(tlog))
	for _, f := range cfg.Jobs {
		for _, r := range f.Routes() {
			mux.Handle(r.Type, r.Handler)
		}
	}
	return &Server{srv: srv, mux: mux, log: cfg.Logger}, nil
}

// Run processes tasks until ctx ends, then shuts down gracefully: it stops taking
// tasks and waits up to ShutdownTimeout for running ones; any still running then
// go back to the queue and run again elsewhere (jobs are idempotent).
func (s *Server) Run(ctx context.Context) error {
	if err := s.srv.Start(s.mux); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	<-ctx.Done()
	s.log.Info("worker stopping")
	s.srv.Shutdown()
	return nil
}

// Backoff is exponential backoff with full jitter: attempt n waits a random time
// in [0, min(max, base·2ⁿ)], so retries of many failed tasks spread out.
func Backoff(base, maxDelay time.Duration) asynq.RetryDelayFunc {
	return func(n int, _ error, _ *asynq.Task) time.Duration {
		d := base << min(n, 20)
		if d <= 0 || d > maxDelay {
			d = maxDelay
		}
		return base/2 + time.Duration(rand.Int64N(int64(d)))
	}
}

// IsFailure reports whether err, returned by a task handler, is a failure that
// costs the task a retry. An error wrapping drivers.ErrDeferred is not: the
// call was refused before it reached the server (its breaker is open, or the
// server or tenant runs as many jobs as it may), so asynq reschedules the task
// without raising its retry count, after RetryDelay's short delay. A task
// meeting an open breaker for longer than its retries would last thus waits
// for the server instead of failing; each half-open probe that fails is a real
// failure and does count.
func IsFailure(err error) bool {
	return err != nil && !errors.Is(err, drivers.ErrDeferred)
}

// RetryDelay is the RetryDelayFunc of a worker: a deferred task (see
// IsFailure) waits a random time in [deferDelay/2, 3·deferDelay/2), or until
// the time its error names (a RetryAt() time.Time method: a CA's rate limit,
// a spent issuance budget) when that is later; any other failure waits
// Backoff(base, maxDelay).
func RetryDelay(base, maxDelay, deferDelay time.Duration) asynq.RetryDelayFunc {
	backoff := Backoff(base, maxDelay)
	return func(n int, err error, t *asynq.Task) time.Duration {
		if err != nil && !IsFailure(err) {
			var ra retryAter
			if errors.As(err, &ra) {
				if d := time.Until(ra.RetryAt()); d > deferDelay/2 {
					return d
				}
			}
			return deferDelay/2 + time.Duration(rand.Int64N(int64(max(deferDelay, 1))))
		}
		return backoff(n, err, t)
	}
}

// retryAter is a deferral that knows when it may run again.
type retryAter interface{ RetryAt() time.Time }

// logTaskError is the worker's ErrorHandler: one line per attempt that did not
// succeed. A deferred attempt (see IsFailure) is the one info line "task
// deferred", so a task waiting minutes on an open breaker logs once per
// DeferDelay, not once per log site; a failure is "task failed" at warn.
func logTaskError(ctx context.Context, log *slog.Logger, t *asynq.Task, err error) {
	retried, _ := asynq.GetRetryCount(ctx)
	if !IsFailure(err) {
		log.InfoContext(withTaskIDs(ctx, t), "task deferred", "task_type", t.Type(), "retried", retried, "error", err)
		return
	}
	log.WarnContext(withTaskIDs(ctx, t), "task failed", "task_type", t.Type(), "retried", retried, "error", err)
}

// logTasks puts the task's IDs in its context, so every line logged with it
// (through a TaskLogHandler) carries task_id, operation_id and tenant_id, and
// logs the end of each task with its type and duration: at info on success,
// at warn on failure, and at debug for a deferred attempt, which the
// ErrorHandler (logTaskError) already reports at info.
func logTasks(log *slog.Logger) asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			start := time.Now()
			ctx = withTaskIDs(ctx, t)
			err := next.ProcessTask(ctx, t)
			level := slog.LevelInfo
			switch {
			case err != nil && !IsFailure(err):
				level = slog.LevelDebug
			case err != nil:
				level = slog.LevelWarn
			}
			log.Log(ctx, level, "task done", "task_type", t.Type(),
				"duration_ms", time.Since(start).Milliseconds(), "ok", err == nil)
			return err
		})
	}
}

// asynqLogger feeds asynq's own log lines into slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...)) }
