package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// TaskInspector is the part of queue.Inspector the reconciler uses.
type TaskInspector interface {
	TaskState(ctx context.Context, queueName, id string) (queue.TaskState, error)
	RunArchived(ctx context.Context, queueName, id string) error
}

// OperationEnqueuer is the part of queue.Enqueuer the reconciler uses.
type OperationEnqueuer interface {
	EnqueueOperation(ctx context.Context, op *models.Operation) error
}

// ReconcilerConfig configures the reconciler.
type ReconcilerConfig struct {
	Store     *models.Store
	Inspector TaskInspector
	Enqueuer  OperationEnqueuer
	Logger    *slog.Logger
	// Grace is how old an unfinished operation must be before the reconciler looks
	// at it, so that it never races the ingress's own enqueue. Default 30s.
	Grace time.Duration
	// Batch is the most operations looked at per run. Default 500.
	Batch int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// DefaultReconcileGrace is ReconcilerConfig.Grace when zero
// (CHOM_RECONCILE_GRACE's default).
const DefaultReconcileGrace = 30 * time.Second

// Reconciler handles operations:reconcile. The database is the source of truth:
// every pending or running operation must have a live task in Redis. One whose task
// is missing (Redis was down at accept time, flushed, or lost data) is enqueued
// again under its own ID; one whose task was archived while the operation was
// unfinished (a worker died during the last attempt) is run again. Task-ID
// conflicts make both safe to repeat.
type Reconciler struct{ cfg ReconcilerConfig }

// NewReconciler validates cfg and returns the handler.
func NewReconciler(cfg ReconcilerConfig) (*Reconciler, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("jobs: reconciler Store is required"))
	}
	if cfg.Inspector == nil {
		errs = append(errs, errors.New("jobs: reconciler Inspector is required"))
	}
	if cfg.Enqueuer == nil {
		errs = append(errs, errors.New("jobs: reconciler Enqueuer is required"))
	}
	if cfg.Logger == nil {
		errs = append(errs, errors.New("jobs: reconciler Logger is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Grace == 0 {
		cfg.Grace = DefaultReconcileGrace
	}
	if cfg.Batch == 0 {
		cfg.Batch = 500
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Reconciler{cfg: cfg}, nil
}

// ReconcileReport counts what one run did.
type ReconcileReport struct {
	Checked    int
	Enqueued   int
	Rerun      int
	KeysPruned int64
}

// ProcessTask runs one reconciliation pass.
func (r *Reconciler) ProcessTask(ctx context.Context, _ *asynq.Task) error {
	_, err := r.Run(ctx)
	return err
}

// Run reconciles up to Batch unfinished operations and prunes expired idempotency keys.
func (r *Reconciler) Run(ctx context.Context) (ReconcileReport, error) {
	var rep ReconcileReport
	ops, err := r.cfg.Store.UnfinishedOperations(ctx, r.cfg.Now().Add(-r.cfg.Grace), r.cfg.Batch)
	if err != nil {
		return rep, err
	}
	var errs []error
	for i := range ops {
		op := &ops[i]
		rep.Checked++
		_, spec, err := queue.TaskForOperation(op)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		state, err := r.cfg.Inspector.TaskState(ctx, spec.Queue, op.ID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		switch state {
		case queue.TaskMissing:
			if err := r.cfg.Enqueuer.EnqueueOperation(ctx, op); err != nil {
				errs = append(errs, fmt.Errorf("re-enqueue %s: %w", op.ID, err))
				continue
			}
			rep.Enqueued++
			r.cfg.Logger.InfoContext(ctx, "re-enqueued operation whose task was missing", "operation_id", op.ID, "status", op.Status)
		case queue.TaskArchived:
			if err := r.cfg.Inspector.RunArchived(ctx, spec.Queue, op.ID); err != nil {
				errs = append(errs, err)
				continue
			}
			rep.Rerun++
			r.cfg.Logger.WarnContext(ctx, "re-ran archived task of unfinished operation", "operation_id", op.ID)
		}
	}
	pruned, err := r.cfg.Store.PruneIdempotencyKeys(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	rep.KeysPruned = pruned
	if rep.Enqueued+rep.Rerun > 0 {
		r.cfg.Logger.InfoContext(ctx, "reconciled operations", "checked", rep.Checked, "enqueued", rep.Enqueued, "rerun", rep.Rerun)
	}
	return rep, errors.Join(errs...)
}
