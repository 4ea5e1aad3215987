package workers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"
)

// Periodic is one row of the scheduler's table: a task enqueued once per period
// of Every, at the period's start.
type Periodic struct {
	// Name identifies the row in task IDs and logs ("reconcile", "health_sweep").
	// It is part of every tick's task ID, so it never changes once deployed.
	Name string
	// Every is the period. Periods are aligned as time.Time.Truncate aligns
	// them, on the zero time (an hourly row ticks at the top of each hour, a
	// daily one at midnight UTC), so every scheduler agrees on them.
	Every time.Duration
	// NewTask builds the task of the period that starts at period. The scheduler
	// sets its task ID and retention; the builder sets type, payload, queue,
	// timeout and retries.
	NewTask func(period time.Time) (*asynq.Task, error)
}

// SchedulerConfig configures the periodic-task scheduler.
type SchedulerConfig struct {
	// Redis says how to reach Redis; the scheduler opens its own client.
	Redis asynq.RedisConnOpt
	// Logger is required.
	Logger *slog.Logger
	// Table lists the periodic tasks; at least one is required and names are unique.
	Table []Periodic
	// Now is the clock; default time.Now.
	Now func() time.Time
	// RetryEvery is how soon a tick whose enqueue failed (Redis down) is tried
	// again within its period. Default 2s.
	RetryEvery time.Duration
}

// Validate reports every missing or invalid field.
func (c SchedulerConfig) Validate() error {
	var errs []error
	if c.Redis == nil {
		errs = append(errs, errors.New("scheduler: Redis is required"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("scheduler: Logger is required"))
	}
	if len(c.Table) == 0 {
		errs = append(errs, errors.New("scheduler: Table needs at least one periodic task"))
	}
	seen := map[string]bool{}
	for i, p := range c.Table {
		switch {
		case p.Name == "":
			errs = append(errs, fmt.Errorf("scheduler: Table[%d].Name is required", i))
		case seen[p.Name]:
			errs = append(errs, fmt.Errorf("scheduler: Table[%d].Name %q is not unique", i, p.Name))
		}
		seen[p.Name] = true
		if p.Every <= 0 {
			errs = append(errs, fmt.Errorf("scheduler: Table[%d] (%s): Every must be positive", i, p.Name))
		}
		if p.NewTask == nil {
			errs = append(errs, fmt.Errorf("scheduler: Table[%d] (%s): NewTask is required", i, p.Name))
		}
	}
	return errors.Join(errs...)
}

// Scheduler enqueues CHOM's periodic tasks from a table.
//
// Several schedulers may run (for availability) and a tick is still enqueued
// once: each tick's task ID is "periodic:<name>:<period start, RFC 3339 UTC>",
// so the second scheduler's enqueue of the same period is a task-ID conflict,
// and the task is retained for a whole period so a late duplicate still
// conflicts. (asynq's own Scheduler registers a fixed task per cron entry and
// cannot give each period its own ID, hence this small loop over asynq's
// client.) A scheduler started mid-period enqueues the current period at once,
// so a restart never skips one; an enqueue that fails (Redis down) is retried
// every RetryEvery until it succeeds or its period is over.
type Scheduler struct {
	cfg    SchedulerConfig
	client *asynq.Client
	log    *slog.Logger
}

// NewScheduler validates cfg and returns a scheduler; Run starts it.
func NewScheduler(cfg SchedulerConfig) (*Scheduler, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RetryEvery <= 0 {
		cfg.RetryEvery = 2 * time.Second
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Scheduler{cfg: cfg, client: asynq.NewClient(cfg.Redis), log: cfg.Logger.With("component", "scheduler")}, nil
}

// PeriodicTaskID is the task ID of the tick of row name for the period starting
// at period, e.g. "periodic:health_sweep:2026-12-01T21:00:00Z".
func PeriodicTaskID(name string, period time.Time) string {
	return "periodic:" + name + ":" + period.UTC().Format(time.RFC3339Nano)
}

// Run enqueues every row's ticks until ctx ends, then closes its Redis client.
func (s *Scheduler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, p := range s.cfg.Table {
		wg.Add(1)
		go func() { defer wg.Done(); s.runRow(ctx, p) }()
	}
	wg.Wait()
	if err := s.client.Close(); err != nil {
		return fmt.Errorf("scheduler: close client: %w", err)
	}
	return nil
}

// runRow enqueues row p's tick of each period until ctx ends.
func (s *Scheduler) runRow(ctx context.Context, p Periodic) {
	for {
		period := s.cfg.Now().Truncate(p.Every)
		next := period.Add(p.Every)
		for !s.enqueue(ctx, p, period) {
			if wait := min(s.cfg.RetryEvery, next.Sub(s.cfg.Now())); wait <= 0 || !sleep(ctx, wait) {
				break
			}
		}
		if !sleep(ctx, next.Sub(s.cfg.Now())) {
			return
		}
	}
}

// enqueue puts p's tick of period on the queue and reports whether that tick is
// now queued (by this scheduler or, on a task-ID conflict, by another one).
func (s *Scheduler) enqueue(ctx context.Context, p Periodic, period time.Time) bool {
	if ctx.Err() != nil {
		return true
	}
	id := PeriodicTaskID(p.Name, period)
	task, err := p.NewTask(period)
	if err != nil {
		s.log.Error("build periodic task", "periodic", p.Name, "task_id", id, "error", err)
		return true // a builder error does not heal by retrying
	}
	_, err = s.client.EnqueueContext(ctx, task, asynq.TaskID(id), asynq.Retention(p.Every))
	switch {
	case err == nil:
		s.log.Debug("periodic task enqueued", "periodic", p.Name, "task_id", id, "task_type", task.Type())
		return true
	case errors.Is(err, asynq.ErrTaskIDConflict), errors.Is(err, asynq.ErrDuplicateTask):
		return true // another scheduler has this period
	case ctx.Err() != nil:
		return true
	default:
		s.log.Warn("periodic enqueue failed; retrying", "periodic", p.Name, "task_id", id, "error", err)
		return false
	}
}

// sleep waits for d or until ctx ends, and reports whether the wait was complete.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
