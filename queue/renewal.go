package queue

import (
	"time"

	"github.com/hibiken/asynq"
)

// NewCertificateRenewSweepTask builds the periodic certificate:renew_sweep
// task of a schedule row ticking every interval (its task ID and retention
// are set by the scheduler). It goes to the default queue, beside the
// issuances it starts. A failed sweep is retried a few times (it is
// idempotent: a renewal already started is not started again); its timeout
// is 15 minutes, or nine tenths of the interval when that is shorter, so
// sweeps never overlap.
func NewCertificateRenewSweepTask(interval time.Duration) *asynq.Task {
	return asynq.NewTask(TypeCertificateRenewSweep, nil, asynq.Queue(QueueDefault), asynq.MaxRetry(3),
		asynq.Timeout(min(15*time.Minute, periodTimeout(interval))))
}
