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
	TypeVPSHealthSweep      = "vps:health_sweep"
	TypeVPSHealthCheck      = "vps:health_check"
	TypeUsageMeterSweep     = "usage:meter_sweep"
	TypeUsageMeter          = "usage:meter"
	TypeDomainVerify        = "domain:verify"
	// TypeCertificateIssue carries out a certificate.issue operation.
	TypeCertificateIssue = "certificate:issue"
	// TypeCertificateRenewSweep starts the renewals of the certificates
	// that are due (a scheduled task, no operation).
	TypeCertificateRenewSweep = "certificate:renew_sweep"
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

// Names are the queues workers serve, most urgent first.
func Names() []string { return []string{QueueCritical, QueueDefault, QueueLow} }

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
	// An on-demand health check: a few retries (a worker may die mid-check),
	// then the operation fails; the next sweep checks the server anyway.
	models.OpTypeVPSHealthCheck: {TypeVPSHealthCheck, TaskSpec{Queue: QueueDefault, MaxRetry: 2, Timeout: time.Minute}},
	// A verification checks for up to CHOM_DOMAIN_VERIFY_TIMEOUT, measured
	// from its first start, across attempts: an attempt ends before this
	// timeout and the next one carries on (jobs.VerifyDomains).
	models.OpTypeDomainVerify: {TypeDomainVerify, TaskSpec{Queue: QueueDefault, MaxRetry: 10, Timeout: 15 * time.Minute}},
	// An issuance: one ACME order (CHOM_ACME_TIMEOUT, 5 min by default) and
	// a deploy. A CA that is down or busy is retried with asynq's backoff
	// (about 20 min in all); a spent rate-limit budget is not an attempt:
	// the job schedules itself again for when the budget has room.
	models.OpTypeCertificateIssue: {TypeCertificateIssue, TaskSpec{Queue: QueueDefault, MaxRetry: 8, Timeout: 10 * time.Minute}},
	// Backups (queue/backups.go holds their defaults).
	models.OpTypeBackupCreate:  {TypeBackupCreate, backupCreateSpec},
	models.OpTypeBackupRestore: {TypeBackupRestore, backupRestoreSpec},
	models.OpTypeBackupDelete:  {TypeBackupDelete, backupDeleteSpec},
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

// HealthSweepPayload is the payload of vps:health_sweep: the period it sweeps.
type HealthSweepPayload struct {
	PeriodStart time.Time `json:"period_start"`
}

// HealthCheckPayload is the payload of vps:health_check. A sweep check names the
// server and its period; an on-demand check is an operation's task and carries
// operation_id and tenant_id (the server is the operation's target).
type HealthCheckPayload struct {
	VPSID       string    `json:"vps_id,omitempty"`
	PeriodStart time.Time `json:"period_start,omitzero"`
	OperationID string    `json:"operation_id,omitempty"`
	TenantID    string    `json:"tenant_id,omitempty"`
}

// Validate reports a payload that names neither a sweep check nor an operation.
func (p HealthCheckPayload) Validate() error {
	switch {
	case p.OperationID != "":
		if p.TenantID == "" {
			return errors.New("tenant_id is required with operation_id")
		}
		return nil
	case p.VPSID == "" || p.PeriodStart.IsZero():
		return errors.New("vps_id and period_start (or operation_id) are required")
	}
	return nil
}

// DecodeHealthCheckPayload parses and validates a vps:health_check payload; a
// bad one wraps ErrBadPayload.
func DecodeHealthCheckPayload(b []byte) (HealthCheckPayload, error) {
	var p HealthCheckPayload
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	return p, nil
}

// DecodeHealthSweepPayload parses a vps:health_sweep payload; a bad one wraps
// ErrBadPayload.
func DecodeHealthSweepPayload(b []byte) (HealthSweepPayload, error) {
	var p HealthSweepPayload
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	if p.PeriodStart.IsZero() {
		return p, fmt.Errorf("%w: period_start is required", ErrBadPayload)
	}
	return p, nil
}

// NewHealthSweepTask builds the sweep of the period starting at period, for a
// sweep every interval. It goes to the critical queue, so a long default queue
// cannot delay the enqueue of the fleet's checks; it is not retried (the next
// period sweeps again) and must end within the period.
func NewHealthSweepTask(period time.Time, interval time.Duration) (*asynq.Task, error) {
	b, err := json.Marshal(HealthSweepPayload{PeriodStart: period.UTC()})
	if err != nil {
		return nil, fmt.Errorf("queue: encode health sweep payload: %w", err)
	}
	return asynq.NewTask(TypeVPSHealthSweep, b, asynq.Queue(QueueCritical), asynq.MaxRetry(0),
		asynq.Timeout(periodTimeout(interval)), asynq.Retention(interval)), nil
}

// HealthCheckTaskID is the task ID of the sweep check of server vpsID in the
// period starting at period: "health:<vps_id>:<period RFC 3339>".
func HealthCheckTaskID(vpsID string, period time.Time) string {
	return "health:" + vpsID + ":" + period.UTC().Format(time.RFC3339)
}

// NewHealthCheckTask builds the sweep check of server vpsID for the period
// starting at period, for sweeps every interval. Its task ID is per server and
// period (a second sweep of the same period conflicts and adds nothing), it goes
// to the default queue, it is never retried (the next period checks again) and
// its timeout is shorter than the interval, so checks of one server never pile up.
func NewHealthCheckTask(vpsID string, period time.Time, interval time.Duration) (*asynq.Task, error) {
	b, err := json.Marshal(HealthCheckPayload{VPSID: vpsID, PeriodStart: period.UTC()})
	if err != nil {
		return nil, fmt.Errorf("queue: encode health check payload: %w", err)
	}
	return asynq.NewTask(TypeVPSHealthCheck, b, asynq.TaskID(HealthCheckTaskID(vpsID, period)),
		asynq.Queue(QueueDefault), asynq.MaxRetry(0), asynq.Timeout(periodTimeout(interval)),
		asynq.Retention(interval)), nil
}

// periodTimeout is the timeout of a task that must end within its period: nine
// tenths of it, at least one second.
func periodTimeout(interval time.Duration) time.Duration {
	return max(interval*9/10, time.Second)
}
