package queue

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chomhq/chom/models"
)

// How Backlog retries: each attempt bounded by backlogAttemptTimeout, one
// every backlogRetryEvery while Redis does not answer.
const (
	backlogAttemptTimeout = 2 * time.Second
	backlogRetryEvery     = 250 * time.Millisecond
)

// BacklogConfig configures a Backlog.
type BacklogConfig struct {
	// Redis is the queue's client. Required.
	Redis redis.UniversalClient
	// Logger is required.
	Logger *slog.Logger
	// RetryFor is how long after its first failure an enqueue is retried;
	// after that the operation is left to the reconciler. It should be the
	// reconciler's grace (CHOM_RECONCILE_GRACE), which leaves operations
	// that young to their own enqueue. Required.
	RetryFor time.Duration
	// Size is how many failed enqueues are kept at once; beyond it one more
	// is left to the reconciler at once. Default 10000.
	Size int
}

// Backlog is an Enqueuer that keeps the enqueues that failed (Redis did not
// answer: a Sentinel failover between the master's death and the replica's
// promotion, or a restart) and retries them in the background, in order,
// until they succeed or RetryFor has passed. Without it each such operation
// waits for the reconciler: its grace and then its next pass, 30 to 60
// seconds with the defaults, where the failover itself takes seconds. The
// operation row is committed before the enqueue, so nothing depends on the
// backlog for safety: a process that dies with a backlog loses only the
// speed-up.
type Backlog struct {
	enq *Enqueuer
	cfg BacklogConfig
	ch  chan backlogItem
}

type backlogItem struct {
	op     *models.Operation
	failed time.Time
}

// NewBacklog validates cfg and returns a Backlog; Run retries its enqueues.
func NewBacklog(cfg BacklogConfig) (*Backlog, error) {
	var errs []error
	if cfg.Redis == nil {
		errs = append(errs, errors.New("queue: backlog: Redis is required"))
	}
	if cfg.Logger == nil {
		errs = append(errs, errors.New("queue: backlog: Logger is required"))
	}
	if cfg.RetryFor <= 0 {
		errs = append(errs, errors.New("queue: backlog: RetryFor must be positive"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Size <= 0 {
		cfg.Size = 10000
	}
	return &Backlog{enq: NewEnqueuer(cfg.Redis), cfg: cfg, ch: make(chan backlogItem, cfg.Size)}, nil
}

// EnqueueOperation enqueues the task of op. When that fails it keeps op for
// Run to retry and still returns the error, so the caller can say so.
func (b *Backlog) EnqueueOperation(ctx context.Context, op *models.Operation) error {
	err := b.enq.EnqueueOperation(ctx, op)
	if err == nil {
		return nil
	}
	if _, _, terr := TaskForOperation(op); terr != nil {
		return err // no retry mends a payload that cannot be built
	}
	select {
	case b.ch <- backlogItem{op: op, failed: time.Now()}:
	default:
		b.cfg.Logger.WarnContext(ctx, "enqueue backlog full; the reconciler will enqueue the operation", "operation_id", op.ID)
	}
	return err
}

// Run retries the kept enqueues until ctx ends.
func (b *Backlog) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case it := <-b.ch:
			b.retry(ctx, it)
		}
	}
}

// retry enqueues it.op, trying every backlogRetryEvery until it succeeds,
// RetryFor has passed since the first failure, or ctx ends.
func (b *Backlog) retry(ctx context.Context, it backlogItem) {
	for attempt := 1; ; attempt++ {
		if time.Since(it.failed) > b.cfg.RetryFor {
			b.cfg.Logger.InfoContext(ctx, "enqueue still failing; left to the reconciler", "operation_id", it.op.ID, "attempts", attempt-1)
			return
		}
		actx, cancel := context.WithTimeout(ctx, backlogAttemptTimeout)
		err := b.enq.EnqueueOperation(actx, it.op)
		cancel()
		if err == nil {
			b.cfg.Logger.InfoContext(ctx, "enqueued operation after retrying", "operation_id", it.op.ID,
				"attempts", attempt, "after", time.Since(it.failed).Round(time.Millisecond).String())
			return
		}
		t := time.NewTimer(backlogRetryEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
