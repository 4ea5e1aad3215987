package queue

import (
	"time"

	"github.com/hibiken/asynq"
)

// TypeOperationsPrune is periodic: it deletes finished operations older than
// CHOM_OPERATION_RETENTION and audit rows older than CHOM_AUDIT_RETENTION, in
// bounded batches. This string is on the wire: never rename it once shipped.
const TypeOperationsPrune = "operations:prune"

// OperationsPruneTimeout bounds one prune task. The job stops itself well
// before (jobs.DefaultPruneMaxRun) and the next period carries on where it
// stopped, so a first prune of months of history spreads over several periods
// instead of one long task.
const OperationsPruneTimeout = 15 * time.Minute

// NewOperationsPruneTask builds the periodic operations:prune task. It goes
// to the low queue and is not retried: the next period does the same work.
func NewOperationsPruneTask() *asynq.Task {
	return asynq.NewTask(TypeOperationsPrune, nil,
		asynq.Queue(QueueLow), asynq.MaxRetry(0), asynq.Timeout(OperationsPruneTimeout))
}
