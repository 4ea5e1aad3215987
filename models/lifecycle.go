package models

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// BeginProvision moves a pending site to provisioning. It is a no-op for a site in
// any other status, so a retried task can call it again.
func (s *Store) BeginProvision(ctx context.Context, siteID string) error {
	_, err := s.db.NewUpdate().Model((*Site)(nil)).
		Set("status = ?", SiteStatusProvisioning).Set("updated_at = ?", s.nowUTC()).
		Where("id = ? AND status = ?", siteID, SiteStatusPending).Exec(ctx)
	if err != nil {
		return fmt.Errorf("begin provision of site %s: %w", siteID, err)
	}
	return nil
}

// ProvisionedSite is what a driver reports about a provisioned site.
type ProvisionedSite struct {
	DocumentRoot string
	SystemUser   string
}

// CompleteProvision ends a provision operation successfully: the site becomes
// active, the operation succeeds with result, and events are written, atomically.
// It returns false, writing nothing, when the operation had already finished.
func (s *Store) CompleteProvision(ctx context.Context, opID, siteID string, ps ProvisionedSite, result any, events []OutboxEvent) (bool, error) {
	done, _, err := s.completeProvision(ctx, opID, siteID, ps, result, events, false)
	return done, err
}

// CompleteProvisionAndIssue is CompleteProvision on a platform that issues
// certificates: in the same transaction, an HTTPSAuto site without a
// certificate gets its first certificate.issue operation, returned for the
// caller to enqueue after the commit (nil when the site opted out or has a
// certificate; the reconciler enqueues it if the caller cannot).
func (s *Store) CompleteProvisionAndIssue(ctx context.Context, opID, siteID string, ps ProvisionedSite, result any, events []OutboxEvent) (bool, *Operation, error) {
	return s.completeProvision(ctx, opID, siteID, ps, result, events, true)
}

func (s *Store) completeProvision(ctx context.Context, opID, siteID string, ps ProvisionedSite, result any, events []OutboxEvent, issue bool) (bool, *Operation, error) {
	var next *Operation
	done, err := s.finish(ctx, opID, Outcome{Status: OpSucceeded, Result: result}, events,
		func(ctx context.Context, tx bun.Tx, now time.Time) error {
			next = nil
			_, err := tx.NewUpdate().Model((*Site)(nil)).
				Set("status = ?", SiteStatusActive).Set("document_root = ?", ps.DocumentRoot).
				Set("system_user = ?", ps.SystemUser).Set("operation_id = NULL").Set("updated_at = ?", now).
				Where("id = ?", siteID).Exec(ctx)
			if err != nil {
				return fmt.Errorf("activate site %s: %w", siteID, err)
			}
			if issue {
				next, err = autoIssue(ctx, tx, siteID, now)
			}
			return err
		})
	if err != nil || !done {
		return done, nil, err
	}
	return true, next, nil
}

// AbandonProvision ends a provision that failed for good (out.Status OpFailed) or
// was cancelled (OpCancelled) after the job undid its work on the server: the
// server slot is freed, a failed site stays visible as failed, a cancelled one is
// deleted (freeing its domain). Returns false when the operation had already finished.
func (s *Store) AbandonProvision(ctx context.Context, opID, siteID string, out Outcome, events []OutboxEvent) (bool, error) {
	return s.finish(ctx, opID, out, events, func(ctx context.Context, tx bun.Tx, now time.Time) error {
		if err := releaseSlot(ctx, tx, siteID, now); err != nil {
			return err
		}
		q := tx.NewUpdate().Model((*Site)(nil)).Set("operation_id = NULL").Set("updated_at = ?", now).Where("id = ?", siteID)
		if out.Status == OpCancelled {
			q = q.Set("status = ?", SiteStatusDeleted).Set("deleted_at = ?", now)
			if err := deleteClaims(ctx, tx, siteID); err != nil {
				return err
			}
		} else {
			q = q.Set("status = ?", SiteStatusFailed)
		}
		if _, err := q.Exec(ctx); err != nil {
			return fmt.Errorf("mark site %s %s: %w", siteID, out.Status, err)
		}
		return nil
	})
}

// CompleteDeprovision ends a deprovision successfully: the site is deleted, its
// server slot freed, its domain claims dropped, events written; a site that
// waited for it to leave its server (domains.go) is released. Returns false
// when already finished.
func (s *Store) CompleteDeprovision(ctx context.Context, opID, siteID string, events []OutboxEvent) (bool, error) {
	return s.finish(ctx, opID, Outcome{Status: OpSucceeded, Result: map[string]string{"site_id": siteID}}, events,
		func(ctx context.Context, tx bun.Tx, now time.Time) error {
			if err := releaseSlot(ctx, tx, siteID, now); err != nil {
				return err
			}
			// A site that proved one of its domains and waited for this one
			// to leave its server goes ahead; the reconciler enqueues its
			// provision (pending, no longer held).
			if _, err := s.releaseWaiting(ctx, tx, siteID, now); err != nil {
				return err
			}
			if err := deleteClaims(ctx, tx, siteID); err != nil {
				return err
			}
			if err := deleteCertificateOf(ctx, tx, siteID); err != nil {
				return err
			}
			_, err := tx.NewUpdate().Model((*Site)(nil)).
				Set("status = ?", SiteStatusDeleted).Set("deleted_at = ?", now).
				Set("operation_id = NULL").Set("updated_at = ?", now).
				Where("id = ?", siteID).Exec(ctx)
			if err != nil {
				return fmt.Errorf("delete site %s: %w", siteID, err)
			}
			return nil
		})
}

// AbandonDeprovision ends a deprovision that failed for good or was cancelled. A
// cancelled one gives the site back its previous status; a failed one leaves the
// site failed (a new DELETE may be tried). Returns false when already finished.
func (s *Store) AbandonDeprovision(ctx context.Context, opID, siteID, previousStatus string, out Outcome, events []OutboxEvent) (bool, error) {
	return s.finish(ctx, opID, out, events, func(ctx context.Context, tx bun.Tx, now time.Time) error {
		status := SiteStatusFailed
		if out.Status == OpCancelled && previousStatus != "" {
			status = previousStatus
		}
		_, err := tx.NewUpdate().Model((*Site)(nil)).
			Set("status = ?", status).Set("operation_id = NULL").Set("updated_at = ?", now).
			Where("id = ?", siteID).Exec(ctx)
		if err != nil {
			return fmt.Errorf("restore site %s: %w", siteID, err)
		}
		return nil
	})
}

// CancelResult says what a cancel request did.
type CancelResult struct {
	Operation *Operation
	// Immediate is true when the operation had not started and is now cancelled;
	// false when it is running and its job will stop at its next step.
	Immediate bool
}

// CancelOperation cancels a tenant's operation, best effort. A pending operation is
// cancelled at once (with its target put back as it was); a running one is flagged
// and its job stops at its next step and undoes its work; a finished one is a
// ConflictError. Another tenant's operation is ErrNotFound.
func (s *Store) CancelOperation(ctx context.Context, tenantID, opID string) (*CancelResult, error) {
	op, err := s.GetOperation(ctx, tenantID, opID)
	if err != nil {
		return nil, err
	}
	if op.Terminal() {
		return nil, fmt.Errorf("cancel operation %s: %w", opID, &ConflictError{Reason: "the operation has already finished with status " + op.Status, OperationID: op.ID})
	}
	var payload SitePayload
	_ = json.Unmarshal([]byte(op.Payload), &payload)
	if op.Type == OpTypeSiteDeprovision && payload.Unserve {
		// Taking a site off its server after another account proved its
		// domain is not the tenant's to undo.
		return nil, fmt.Errorf("cancel operation %s: %w", opID, &ConflictError{
			Reason: "the site is being taken off its server until its domain is verified; this cannot be cancelled", OperationID: op.ID})
	}
	cancelled := Outcome{Status: OpCancelled, ErrorCode: "cancelled", ErrorMessage: "cancelled at the caller's request"}
	var done bool
	if op.Status == OpPending {
		switch op.Type {
		case OpTypeSiteProvision:
			done, err = s.abandonPendingProvision(ctx, op.ID, op.TargetID, cancelled)
		case OpTypeSiteDeprovision:
			done, err = s.abandonPendingDeprovision(ctx, op.ID, op.TargetID, payload.PreviousStatus, cancelled)
		case OpTypeCertificateIssue:
			var cp CertificatePayload
			_ = json.Unmarshal([]byte(op.Payload), &cp)
			done, err = s.abandonPendingIssue(ctx, op.ID, cp.SiteID, cancelled)
		case OpTypeBackupCreate, OpTypeBackupRestore, OpTypeBackupDelete:
			var bp BackupPayload
			_ = json.Unmarshal([]byte(op.Payload), &bp)
			done, err = s.abandonPendingBackupOp(ctx, op, bp, cancelled)
		default:
			done, err = s.finishIfPending(ctx, op.ID, cancelled)
		}
		if err != nil {
			return nil, err
		}
	}
	if !done {
		now := s.nowUTC()
		res, err := s.db.NewUpdate().Model((*Operation)(nil)).
			Set("cancel_requested_at = COALESCE(cancel_requested_at, ?)", now).Set("updated_at = ?", now).
			Where("id = ? AND tenant_id = ? AND status = ?", opID, tenantID, OpRunning).Exec(ctx)
		if err != nil {
			return nil, fmt.Errorf("request cancel of operation %s: %w", opID, err)
		}
		if affected(res) == 0 {
			// It finished between our read and this write.
			cur, err := s.GetOperation(ctx, tenantID, opID)
			if err != nil {
				return nil, err
			}
			if cur.Terminal() {
				return nil, fmt.Errorf("cancel operation %s: %w", opID, &ConflictError{Reason: "the operation has already finished with status " + cur.Status, OperationID: cur.ID})
			}
		}
	}
	cur, err := s.GetOperation(ctx, tenantID, opID)
	if err != nil {
		return nil, err
	}
	return &CancelResult{Operation: cur, Immediate: done}, nil
}

// abandonPendingProvision cancels a provision that has not started: nothing is on a
// server yet, so the site is simply deleted. Only a still-pending operation changes.
func (s *Store) abandonPendingProvision(ctx context.Context, opID, siteID string, out Outcome) (bool, error) {
	return s.finishPendingWith(ctx, opID, out, func(ctx context.Context, tx bun.Tx, now time.Time) error {
		if err := releaseSlot(ctx, tx, siteID, now); err != nil {
			return err
		}
		if err := deleteClaims(ctx, tx, siteID); err != nil {
			return err
		}
		_, err := tx.NewUpdate().Model((*Site)(nil)).
			Set("status = ?", SiteStatusDeleted).Set("deleted_at = ?", now).
			Set("operation_id = NULL").Set("updated_at = ?", now).Where("id = ?", siteID).Exec(ctx)
		return err
	})
}

func (s *Store) abandonPendingDeprovision(ctx context.Context, opID, siteID, previous string, out Outcome) (bool, error) {
	if previous == "" {
		previous = SiteStatusActive
	}
	return s.finishPendingWith(ctx, opID, out, func(ctx context.Context, tx bun.Tx, now time.Time) error {
		_, err := tx.NewUpdate().Model((*Site)(nil)).
			Set("status = ?", previous).Set("operation_id = NULL").Set("updated_at = ?", now).Where("id = ?", siteID).Exec(ctx)
		return err
	})
}

func (s *Store) finishIfPending(ctx context.Context, opID string, out Outcome) (bool, error) {
	return s.finishPendingWith(ctx, opID, out, nil)
}

// finishPendingWith finishes an operation only if it is still pending (a job that
// started in the meantime owns it), applying apply in the same transaction.
func (s *Store) finishPendingWith(ctx context.Context, opID string, out Outcome, apply func(ctx context.Context, tx bun.Tx, now time.Time) error) (bool, error) {
	now := s.nowUTC()
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewUpdate().Model((*Operation)(nil)).
			Set("status = ?", out.Status).Set("finished_at = ?", now).Set("updated_at = ?", now).
			Set("error_code = ?", out.ErrorCode).Set("error_message = ?", out.ErrorMessage).
			Where("id = ? AND status = ?", opID, OpPending).Exec(ctx)
		if err != nil {
			return fmt.Errorf("cancel pending operation %s: %w", opID, err)
		}
		if affected(res) == 0 {
			return errAlreadyFinished
		}
		if apply != nil {
			return apply(ctx, tx, now)
		}
		return nil
	})
	if err == errAlreadyFinished {
		return false, nil
	}
	return err == nil, err
}

// CancelRequested reports whether a cancel was asked for the operation.
func (s *Store) CancelRequested(ctx context.Context, opID string) (bool, error) {
	var at *time.Time
	err := s.db.NewSelect().Model((*Operation)(nil)).Column("cancel_requested_at").Where("id = ?", opID).Scan(ctx, &at)
	if err != nil {
		return false, notFound(err, "operation", opID)
	}
	return at != nil, nil
}

// MarkServerTouched records, before a driver call of operation opID that may
// reach its server, that the job may have changed something there (so a
// cancel or a failure must undo it on the server). A time already recorded is
// kept.
func (s *Store) MarkServerTouched(ctx context.Context, opID string) error {
	_, err := s.db.NewUpdate().Model((*Operation)(nil)).
		Set("server_touched_at = COALESCE(server_touched_at, ?)", s.nowUTC()).
		Where("id = ?", opID).Exec(ctx)
	if err != nil {
		return fmt.Errorf("mark operation %s as touching its server: %w", opID, err)
	}
	return nil
}

// UnmarkServerTouched takes back a MarkServerTouched of operation opID whose
// driver call was refused before it ran (drivers.ErrDeferred), when no earlier
// call had been recorded: the server is as it was before the operation.
func (s *Store) UnmarkServerTouched(ctx context.Context, opID string) error {
	_, err := s.db.NewUpdate().Model((*Operation)(nil)).
		Set("server_touched_at = NULL").
		Where("id = ?", opID).Exec(ctx)
	if err != nil {
		return fmt.Errorf("unmark operation %s as touching its server: %w", opID, err)
	}
	return nil
}
