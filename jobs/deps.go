package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/models"
)

// Notifier announces that an operation changed, so long polls wake early.
type Notifier interface {
	OperationChanged(ctx context.Context, opID string)
}

// NopNotifier announces nothing.
type NopNotifier struct{}

// OperationChanged does nothing.
func (NopNotifier) OperationChanged(context.Context, string) {}

// Deps are what the site handlers need.
type Deps struct {
	Store       *models.Store
	Provisioner drivers.Provisioner
	Notifier    Notifier
	Logger      *slog.Logger
	// Enqueuer enqueues the operations a job releases (the provision that
	// waited for an unserve). Optional: without it the reconciler enqueues
	// them after CHOM_RECONCILE_GRACE.
	Enqueuer OperationEnqueuer
	// IssueCertificates is true on a platform that issues certificates
	// (CHOM_CERT_ENCRYPTION_KEYS set): a provision that activates an
	// HTTPSAuto site then records its first certificate.issue in the same
	// transaction and enqueues it.
	IssueCertificates bool
}

// Validate reports every missing dependency.
func (d Deps) Validate() error {
	var errs []error
	if d.Store == nil {
		errs = append(errs, errors.New("jobs: Store is required"))
	}
	if d.Provisioner == nil {
		errs = append(errs, errors.New("jobs: Provisioner is required"))
	}
	if d.Notifier == nil {
		errs = append(errs, errors.New("jobs: Notifier is required"))
	}
	if d.Logger == nil {
		errs = append(errs, errors.New("jobs: Logger is required"))
	}
	return errors.Join(errs...)
}

// finalAttempt reports whether the running task has no retry left, so a failure
// now is final and must be compensated.
func finalAttempt(ctx context.Context) bool {
	retried, ok1 := asynq.GetRetryCount(ctx)
	maxRetry, ok2 := asynq.GetMaxRetry(ctx)
	if !ok1 || !ok2 {
		return true // not under asynq (a direct call): nothing will retry it
	}
	return retried >= maxRetry
}

// errCancelled stops a job whose operation was cancelled.
var errCancelled = errors.New("operation cancelled")

// permanent reports whether err can never succeed on retry.
func permanent(err error) bool {
	return errors.Is(err, drivers.ErrInvalidSpec) || errors.Is(err, drivers.ErrConfigRejected) ||
		errors.Is(err, drivers.ErrHostKeyMismatch) || errors.Is(err, models.ErrNotFound) || errors.Is(err, asynq.SkipRetry)
}

// errorCode classifies err for the operation's error object.
func errorCode(err error) string {
	switch {
	case errors.Is(err, models.ErrNoCapacity):
		return "no_capacity"
	case errors.Is(err, drivers.ErrInvalidSpec):
		return "invalid_site_spec"
	case errors.Is(err, models.ErrNotFound):
		return "target_missing"
	default:
		return "provisioning_failed"
	}
}

// skipRetry marks err as permanent for asynq, keeping its text.
func skipRetry(err error) error { return fmt.Errorf("%w: %w", err, asynq.SkipRetry) }

// beginOperation starts one delivery of the task of operation id: it marks the
// operation running (Store.StartOperation) and tells pollers. It returns a nil
// operation, and logs why, when there is nothing to do because the operation
// has finished already (a redelivered task); an unknown operation is an error
// that is not retried.
func beginOperation(ctx context.Context, store *models.Store, notifier Notifier, log *slog.Logger, id string) (*models.Operation, error) {
	op, err := store.StartOperation(ctx, id)
	if errors.Is(err, models.ErrNotFound) {
		return nil, skipRetry(err)
	}
	if err != nil {
		return nil, err
	}
	if op.Terminal() {
		log.InfoContext(ctx, "operation already finished; nothing to do", "status", op.Status)
		return nil, nil
	}
	notifier.OperationChanged(ctx, op.ID)
	return op, nil
}
