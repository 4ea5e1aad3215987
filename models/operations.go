package models

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// GetOperation returns the tenant's operation with id. Another tenant's is ErrNotFound.
func (s *Store) GetOperation(ctx context.Context, tenantID, id string) (*Operation, error) {
	op := new(Operation)
	err := s.db.NewSelect().Model(op).Where("id = ? AND tenant_id = ?", id, tenantID).Scan(ctx)
	if err != nil {
		return nil, notFound(err, "operation", id)
	}
	return op, nil
}

// OperationByID returns an operation whatever its tenant: for workers and the
// reconciler, which act on IDs from the queue or the database.
func (s *Store) OperationByID(ctx context.Context, id string) (*Operation, error) {
	op := new(Operation)
	if err := s.db.NewSelect().Model(op).Where("id = ?", id).Scan(ctx); err != nil {
		return nil, notFound(err, "operation", id)
	}
	return op, nil
}

// OperationFilter narrows an operation listing.
type OperationFilter struct {
	Status     string
	Type       string
	TargetType string
	TargetID   string
	Cursor     string
	Limit      int
}

// ListOperations returns a page of the tenant's operations, newest first.
func (s *Store) ListOperations(ctx context.Context, tenantID string, f OperationFilter) ([]Operation, error) {
	var out []Operation
	q := s.db.NewSelect().Model(&out).Where("tenant_id = ?", tenantID).OrderExpr("id DESC").Limit(int64(f.Limit))
	if f.Status != "" {
		q = q.Where("status = ?", f.Status)
	}
	if f.Type != "" {
		q = q.Where("op_type = ?", f.Type)
	}
	if f.TargetType != "" {
		q = q.Where("target_type = ?", f.TargetType)
	}
	if f.TargetID != "" {
		q = q.Where("target_id = ?", f.TargetID)
	}
	if f.Cursor != "" {
		q = q.Where("id < ?", f.Cursor)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("list operations of tenant %s: %w", tenantID, err)
	}
	return out, nil
}

// StartOperation moves an operation to running (or keeps it running, on a retry)
// and counts the attempt. It returns the operation as it now is; a terminal
// operation is returned unchanged, and the caller must then do nothing.
func (s *Store) StartOperation(ctx context.Context, id string) (*Operation, error) {
	now := s.nowUTC()
	res, err := s.db.NewUpdate().Model((*Operation)(nil)).
		Set("status = ?", OpRunning).
		Set("attempts = attempts + 1").
		Set("started_at = COALESCE(started_at, ?)", now).
		Set("updated_at = ?", now).
		Where("id = ? AND status IN (?, ?)", id, OpPending, OpRunning).
		Exec(ctx)
	if err != nil {
		return nil, fmt.Errorf("start operation %s: %w", id, err)
	}
	_ = res
	return s.OperationByID(ctx, id)
}

// SetProgress records progress (0–100) of a running operation. Progress never goes
// backwards, so a retried step cannot make a poller see it drop.
func (s *Store) SetProgress(ctx context.Context, id string, progress int) error {
	_, err := s.db.NewUpdate().Model((*Operation)(nil)).
		Set("progress = ?", progress).Set("updated_at = ?", s.nowUTC()).
		Where("id = ? AND status = ? AND progress < ?", id, OpRunning, progress).
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("set progress of operation %s: %w", id, err)
	}
	return nil
}

// Outcome is how an operation ended.
type Outcome struct {
	Status       string // OpSucceeded, OpFailed or OpCancelled
	Result       any    // marshalled to JSON when not nil
	ErrorCode    string
	ErrorMessage string
}

// finishOp moves an unfinished operation to its terminal status inside tx. It
// returns false when the operation was already terminal: the caller must then roll
// back, so that every finishing transaction takes effect at most once.
func (s *Store) finishOp(ctx context.Context, tx bun.Tx, id string, out Outcome, now time.Time) (bool, error) {
	q := tx.NewUpdate().Model((*Operation)(nil)).
		Set("status = ?", out.Status).
		Set("finished_at = ?", now).
		Set("updated_at = ?", now).
		Where("id = ? AND status IN (?, ?)", id, OpPending, OpRunning)
	if out.Status == OpSucceeded {
		q = q.Set("progress = 100")
	}
	if out.Result != nil {
		b, err := json.Marshal(out.Result)
		if err != nil {
			return false, fmt.Errorf("finish operation %s: encode result: %w", id, err)
		}
		q = q.Set("result = ?", string(b))
	}
	if out.ErrorCode != "" {
		q = q.Set("error_code = ?", out.ErrorCode).Set("error_message = ?", out.ErrorMessage)
	}
	res, err := q.Exec(ctx)
	if err != nil {
		return false, fmt.Errorf("finish operation %s: %w", id, err)
	}
	return affected(res) == 1, nil
}

// errAlreadyFinished rolls back a finishing transaction whose operation is terminal.
var errAlreadyFinished = fmt.Errorf("operation already finished")

// insertEvents writes outbox rows in tx, and notifies the relay on PostgreSQL
// (NotifyOutbox): it is the one path by which the store writes the outbox.
func (s *Store) insertEvents(ctx context.Context, tx bun.IDB, events []OutboxEvent, now time.Time) error {
	if len(events) == 0 {
		return nil
	}
	for i := range events {
		events[i].CreatedAt = now
		if events[i].OccurredAt.IsZero() {
			events[i].OccurredAt = now
		}
	}
	// The event ID is stable per fact: an event written twice (a job retried after
	// a crash) is kept once.
	if _, err := tx.NewInsert().Model(&events).On("CONFLICT DO NOTHING").Exec(ctx); err != nil {
		return fmt.Errorf("write %d outbox events: %w", len(events), err)
	}
	// Wake the relay at the commit (see OutboxListener); its poll is the
	// fallback when the notification is lost.
	return NotifyOutbox(ctx, tx)
}

// FinishOperation ends an operation with no other state change, writing events.
// It returns false when the operation had already finished (nothing is written).
func (s *Store) FinishOperation(ctx context.Context, id string, out Outcome, events []OutboxEvent) (bool, error) {
	return s.finish(ctx, id, out, events, nil)
}

// finish runs the finishing transaction of an operation: the terminal status, the
// state change apply makes, and the events, all or nothing.
func (s *Store) finish(ctx context.Context, id string, out Outcome, events []OutboxEvent,
	apply func(ctx context.Context, tx bun.Tx, now time.Time) error) (bool, error) {
	now := s.nowUTC()
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		ok, err := s.finishOp(ctx, tx, id, out, now)
		if err != nil {
			return err
		}
		if !ok {
			return errAlreadyFinished
		}
		if apply != nil {
			if err := apply(ctx, tx, now); err != nil {
				return err
			}
		}
		return s.insertEvents(ctx, tx, events, now)
	})
	if err == errAlreadyFinished {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

// UnfinishedOperations returns up to limit pending or running operations created
// before olderThan, oldest first: the reconciler's work list. The provision of a
// site that waits for domain verification is left out: its task must not run
// before the proof (ProveClaims enqueues it).
func (s *Store) UnfinishedOperations(ctx context.Context, olderThan time.Time, limit int) ([]Operation, error) {
	var out []Operation
	err := s.db.NewSelect().Model(&out).
		Where("status IN (?, ?)", OpPending, OpRunning).
		Where("NOT (?TableAlias.op_type = ? AND EXISTS (SELECT 1 FROM sites WHERE sites.id = ?TableAlias.target_id AND sites.status = ?))",
			OpTypeSiteProvision, SiteStatusPendingVerification).
		Where("created_at < ?", olderThan.UTC()).
		OrderExpr("created_at ASC").Limit(int64(limit)).Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("list unfinished operations: %w", err)
	}
	return out, nil
}

// CountOperationsByStatus returns how many operations are in each status.
func (s *Store) CountOperationsByStatus(ctx context.Context) (map[string]int, error) {
	var rows []struct {
		Status string `bun:"status"`
		N      int    `bun:"n"`
	}
	err := s.db.NewSelect().Model((*Operation)(nil)).ColumnExpr("status, COUNT(*) AS n").
		Group("status").Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("count operations: %w", err)
	}
	out := make(map[string]int, len(rows))
	for _, r := range rows {
		out[r.Status] = r.N
	}
	return out, nil
}
