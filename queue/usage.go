package queue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/hibiken/asynq"
)

// UsagePeriodPayload is the payload of usage:meter_sweep: the period to meter,
// [period_start, period_end).
type UsagePeriodPayload struct {
	PeriodStart time.Time `json:"period_start"`
	PeriodEnd   time.Time `json:"period_end"`
}

// Validate reports a period that is missing or empty.
func (p UsagePeriodPayload) Validate() error {
	var errs []error
	if p.PeriodStart.IsZero() {
		errs = append(errs, errors.New("period_start is required"))
	}
	if p.PeriodEnd.IsZero() {
		errs = append(errs, errors.New("period_end is required"))
	} else if !p.PeriodEnd.After(p.PeriodStart) {
		errs = append(errs, errors.New("period_end must be after period_start"))
	}
	return errors.Join(errs...)
}

// UsageMeterPayload is the payload of usage:meter: one tenant's period.
type UsageMeterPayload struct {
	TenantID    string    `json:"tenant_id"`
	PeriodStart time.Time `json:"period_start"`
	PeriodEnd   time.Time `json:"period_end"`
}

// tenantIDPattern is the shape of a tenant ID (models.PrefixTenant + 32 hex);
// it goes into a task ID, so nothing else is accepted.
var tenantIDPattern = regexp.MustCompile(`^ten_[0-9a-f]{32}$`)

// Validate reports every missing or invalid field.
func (p UsageMeterPayload) Validate() error {
	var errs []error
	if !tenantIDPattern.MatchString(p.TenantID) {
		errs = append(errs, fmt.Errorf("tenant_id %q must be a tenant ID", p.TenantID))
	}
	if err := (UsagePeriodPayload{PeriodStart: p.PeriodStart, PeriodEnd: p.PeriodEnd}).Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// DecodeUsagePeriodPayload parses and validates a usage:meter_sweep payload
// (unknown fields refused); a bad one wraps ErrBadPayload.
func DecodeUsagePeriodPayload(b []byte) (UsagePeriodPayload, error) {
	var p UsagePeriodPayload
	if err := decodeStrict(b, &p); err != nil {
		return p, err
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	return p, nil
}

// DecodeUsageMeterPayload parses and validates a usage:meter payload (unknown
// fields refused); a bad one wraps ErrBadPayload.
func DecodeUsageMeterPayload(b []byte) (UsageMeterPayload, error) {
	var p UsageMeterPayload
	if err := decodeStrict(b, &p); err != nil {
		return p, err
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	return p, nil
}

// decodeStrict decodes one JSON object into v, refusing unknown fields and
// trailing data; a failure wraps ErrBadPayload.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data after the payload", ErrBadPayload)
	}
	return nil
}

// NewUsageMeterSweepTask builds the sweep of the metering row of the scheduler:
// its tick at period start p meters the period [p-interval, p) that just ended.
// It goes to the low queue; a failed sweep is retried (its meter tasks'
// IDs make a second sweep add nothing).
func NewUsageMeterSweepTask(tick time.Time, interval time.Duration) (*asynq.Task, error) {
	if interval <= 0 {
		return nil, fmt.Errorf("queue: metering interval %s must be positive", interval)
	}
	b, err := json.Marshal(UsagePeriodPayload{PeriodStart: tick.Add(-interval).UTC(), PeriodEnd: tick.UTC()})
	if err != nil {
		return nil, fmt.Errorf("queue: encode meter sweep payload: %w", err)
	}
	return asynq.NewTask(TypeUsageMeterSweep, b, asynq.Queue(QueueLow), asynq.MaxRetry(5),
		asynq.Timeout(5*time.Minute)), nil
}

// UsageMeterTaskID is the task ID of the meter of tenantID for the period
// starting at start: "meter:<tenant_id>:<period start, RFC 3339 UTC>".
func UsageMeterTaskID(tenantID string, start time.Time) string {
	return "meter:" + tenantID + ":" + start.UTC().Format(time.RFC3339)
}

// NewUsageMeterTask builds the meter of one tenant's period. Its task ID is per
// tenant and period start (UsageMeterTaskID), so a second sweep of the period
// conflicts; it goes to the low queue, is retried with backoff (a server may be
// unreachable for a while) and is retained a day, so a late duplicate still
// conflicts. Re-running it anyway is harmless: a recorded period is final.
func NewUsageMeterTask(p UsageMeterPayload) (*asynq.Task, error) {
	p.PeriodStart, p.PeriodEnd = p.PeriodStart.UTC(), p.PeriodEnd.UTC()
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("queue: meter task: %w", err)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("queue: encode meter payload: %w", err)
	}
	return asynq.NewTask(TypeUsageMeter, b, asynq.TaskID(UsageMeterTaskID(p.TenantID, p.PeriodStart)),
		asynq.Queue(QueueLow), asynq.MaxRetry(8), asynq.Timeout(10*time.Minute), asynq.Retention(Retention)), nil
}
