package workers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/queue"
)

// SchedulerConfig configures the periodic-task scheduler.
type SchedulerConfig struct {
	// Redis says how to reach Redis. The scheduler opens its own connection:
	// asynq's scheduler closes its client on shutdown and reports an error for a
	// shared one.
	Redis  asynq.RedisConnOpt
	Logger *slog.Logger
	// ReconcileEvery is the reconciler's period. Default 30s.
	ReconcileEvery time.Duration
}

// Scheduler enqueues CHOM's periodic tasks. Several may run (for availability):
// each periodic task is enqueued as unique for its period, so a tick yields one task.
type Scheduler struct {
	s   *asynq.Scheduler
	log *slog.Logger
}

// NewScheduler registers the periodic tasks.
func NewScheduler(cfg SchedulerConfig) (*Scheduler, error) {
	if cfg.Redis == nil || cfg.Logger == nil {
		return nil, errors.New("workers: scheduler needs Redis and Logger")
	}
	if cfg.ReconcileEvery <= 0 {
		cfg.ReconcileEvery = 30 * time.Second
	}
	s := asynq.NewScheduler(cfg.Redis, &asynq.SchedulerOpts{
		Logger: asynqLogger{cfg.Logger.With("component", "scheduler")},
		EnqueueErrorHandler: func(t *asynq.Task, _ []asynq.Option, err error) {
			if !errors.Is(err, asynq.ErrDuplicateTask) {
				cfg.Logger.Warn("periodic enqueue failed", "task_type", t.Type(), "error", err)
			}
		},
	})
	// Unique for a little less than the period: a second scheduler's tick in the
	// same period is a duplicate, the next period's tick is not.
	unique := cfg.ReconcileEvery - cfg.ReconcileEvery/10
	if _, err := s.Register(fmt.Sprintf("@every %s", cfg.ReconcileEvery), queue.NewReconcileTask(), asynq.Unique(unique)); err != nil {
		return nil, fmt.Errorf("register reconciler: %w", err)
	}
	return &Scheduler{s: s, log: cfg.Logger}, nil
}

// Run enqueues periodic tasks until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	if err := s.s.Start(); err != nil {
		return fmt.Errorf("start scheduler: %w", err)
	}
	<-ctx.Done()
	s.s.Shutdown()
	return nil
}
