package queue

import (
	"time"

	"github.com/hibiken/asynq"
)

// Backup task types. These strings are on the wire: never rename one once shipped.
const (
	// TypeBackupCreate, TypeBackupRestore and TypeBackupDelete carry out the
	// backup.create, backup.restore and backup.delete operations (payload:
	// OperationPayload; task ID: the operation ID).
	TypeBackupCreate  = "backup:create"
	TypeBackupRestore = "backup:restore"
	TypeBackupDelete  = "backup:delete"
	// TypeBackupPrune is periodic: it records a backup.delete for every expired
	// backup and every scheduled backup beyond its schedule's keep-N.
	TypeBackupPrune = "backup:prune"
	// TypeBackupSchedules is periodic: it books the due scheduled backups.
	TypeBackupSchedules = "backup:schedules"
)

// Backup task defaults. An archive streams for as long as the site is big, so
// create and restore get an hour; deletes are quick. Prune and the schedule
// sweep are not retried: the next period does the same work again.
var (
	backupCreateSpec  = TaskSpec{Queue: QueueLow, MaxRetry: 5, Timeout: time.Hour}
	backupRestoreSpec = TaskSpec{Queue: QueueDefault, MaxRetry: 5, Timeout: time.Hour}
	backupDeleteSpec  = TaskSpec{Queue: QueueLow, MaxRetry: 8, Timeout: 5 * time.Minute}
)

// NewBackupPruneTask builds the periodic backup:prune task (its task ID and
// retention are set by the scheduler).
func NewBackupPruneTask() *asynq.Task {
	return asynq.NewTask(TypeBackupPrune, nil, asynq.Queue(QueueLow), asynq.MaxRetry(0), asynq.Timeout(5*time.Minute))
}

// NewBackupSchedulesTask builds the periodic backup:schedules task.
func NewBackupSchedulesTask() *asynq.Task {
	return asynq.NewTask(TypeBackupSchedules, nil, asynq.Queue(QueueDefault), asynq.MaxRetry(0), asynq.Timeout(5*time.Minute))
}
