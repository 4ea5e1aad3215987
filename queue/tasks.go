package queue

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/models"
)

// Task types. These strings are on the wire: never rename one once shipped.
const (
	TypeSiteProvision       = "site:provision"
	TypeSiteDeprovision     = "site:deprovision"
	TypeOperationsReconcile = "operations:reconcile"
)

// Queues, from most to least urgent.
const (
	QueueCritical = "critical"
	QueueDefault  = "default"
	QueueLow      = "low"
)

// Weights are the queues' shares of worker time: critical work is picked six times
// as often as low, but low work is never starved.
func Weights() map[string]int {
	return map[string]int{QueueCritical: 6, QueueDefault: 3, QueueLow: 1}
}

// Retention keeps finished tasks in Redis this long, for asynqmon and so that a
// re-enqueue of a finished operation's task conflicts instead of running again.
const Retention = 24 * time.Hour

// OperationPayload is the payload of every task that carries out an operation.
type OperationPayload struct {
	OperationID string `json:"operation_id"`
	TenantID    string `json:"tenant_id"`
}

// Validate reports a payload that cannot name an operation.
func (p OperationPayload) Validate() error {
	var errs []error
	if p.OperationID == "" {
		errs = append(errs, errors.New("operation_id is required"))
	}
	if p.TenantID == "" {
		errs = append(errs, errors.New("tenant_id is required"))
	}
	return errors.Join(errs...)
}

// ErrBadPayload marks a task payload that can never be processed. It wraps
// asynq.SkipRetry, so such a task is archived at once.
var ErrBadPayload = fmt.Errorf("malformed task payload: %w", asynq.SkipRetry)

// DecodeOperationPayload parses and validates a task payload; a bad one wraps
// ErrBadPayload.
func DecodeOperationPayload(b []byte) (OperationPayload, error) {
	var p OperationPayload
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	return p, nil
}

// TaskSpec holds the per-type defaults of an operation task.
type TaskSpec struct {
	Queue    string
	MaxRetry int
	Timeout  time.Duration
}

// specs is the one place where each operation type's task defaults live.
var specs = map[string]struct {
	taskType string
	spec     TaskSpec
}{
	models.OpTypeSiteProvision:   {TypeSiteProvision, TaskSpec{Queue: QueueDefault, MaxRetry: 8, Timeout: 15 * time.Minute}},
	models.OpTypeSiteDeprovision: {TypeSiteDeprovision, TaskSpec{Queue: QueueDefault, MaxRetry: 8, Timeout: 15 * time.Minute}},
}

// SpecFor returns the task type and defaults that carry out an operation type.
func SpecFor(opType string) (string, TaskSpec, error) {
	s, ok := specs[opType]
	if !ok {
		return "", TaskSpec{}, fmt.Errorf("queue: no task carries out operation type %q", opType)
	}
	return s.taskType, s.spec, nil
}

// TaskForOperation builds the task that carries out op. Its task ID is the
// operation ID, so enqueuing it twice is a conflict, never a second task.
func TaskForOperation(op *models.Operation) (*asynq.Task, TaskSpec, error) {
	taskType, spec, err := SpecFor(op.Type)
	if err != nil {
		return nil, TaskSpec{}, err
	}
	payload, err := json.Marshal(OperationPayload{OperationID: op.ID, TenantID: op.TenantID})
	if err != nil {
		return nil, TaskSpec{}, fmt.Errorf("queue: encode payload of %s: %w", op.ID, err)
	}
	return asynq.NewTask(taskType, payload,
		asynq.TaskID(op.ID),
		asynq.Queue(spec.Queue),
		asynq.MaxRetry(spec.MaxRetry),
		asynq.Timeout(spec.Timeout),
		asynq.Retention(Retention),
	), spec, nil
}

// NewReconcileTask builds the periodic reconciler task. It goes to the critical
// queue: it is what recovers work lost when Redis lost tasks.
func NewReconcileTask() *asynq.Task {
	return asynq.NewTask(TypeOperationsReconcile, nil,
		asynq.Queue(QueueCritical), asynq.MaxRetry(0), asynq.Timeout(2*time.Minute), asynq.Retention(time.Hour))
}
