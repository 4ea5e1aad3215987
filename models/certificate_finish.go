package models

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// ErrSiteBusy: the site's mutation lock is held by another operation; the
// certificate job waits for it (a deploy must not race a provision, a
// restore or a removal).
var ErrSiteBusy = errors.New("the site has another operation in progress")

// LockSiteForDeploy takes site siteID's mutation lock for certificate
// operation opID, for the deploy to the server (holding it already is
// fine). A site held by another operation is ErrSiteBusy; one that is
// deleted, or no longer active on a server, is ErrNotFound.
func (s *Store) LockSiteForDeploy(ctx context.Context, siteID, opID string) error {
	now := s.nowUTC()
	res, err := s.db.NewUpdate().Model((*Site)(nil)).Set("operation_id = ?", opID).Set("updated_at = ?", now).
		Where("id = ? AND deleted_at IS NULL AND status = ? AND vps_id IS NOT NULL", siteID, SiteStatusActive).
		Where("operation_id IS NULL OR operation_id = ?", opID).Exec(ctx)
	if err != nil {
		return fmt.Errorf("lock site %s for a certificate deploy: %w", siteID, err)
	}
	if affected(res) > 0 {
		return nil
	}
	site, err := s.SiteByID(ctx, siteID)
	if err != nil {
		return err
	}
	if site.DeletedAt != nil || site.Status != SiteStatusActive || site.VPSID == nil {
		return fmt.Errorf("site %s is %s: %w", siteID, site.Status, ErrNotFound)
	}
	return fmt.Errorf("site %s: %w", siteID, ErrSiteBusy)
}

// UnlockSite releases site siteID's lock if operation opID holds it.
func (s *Store) UnlockSite(ctx context.Context, siteID, opID string) error {
	return unlockSite(ctx, s.db, siteID, opID, s.nowUTC())
}

// CompleteIssue ends certificate operation opID successfully, atomically:
// rec (the site's new certificate, key in the clear) replaces the site's
// record sealed, the operation succeeds with result, the site's lock is
// released, the staged certificate of the operation (an upload, or an
// issued one waiting for its deploy) is dropped, and events are written.
// It returns false, writing nothing, when the operation had finished.
func (c *CertificateStore) CompleteIssue(ctx context.Context, opID string, rec SiteCertificate, result any, events []OutboxEvent) (bool, error) {
	row, err := c.certificateRow(rec)
	if err != nil {
		return false, err
	}
	return c.s.finish(ctx, opID, Outcome{Status: OpSucceeded, Result: result}, events,
		func(ctx context.Context, tx bun.Tx, now time.Time) error {
			row.CreatedAt, row.UpdatedAt = now, now
			if err := putCertificate(ctx, tx, row); err != nil {
				return err
			}
			if err := deleteUpload(ctx, tx, opID); err != nil {
				return err
			}
			return unlockSite(ctx, tx, rec.SiteID, opID, now)
		})
}

// FailIssue ends certificate operation opID as out (failed or cancelled),
// atomically: the site's record keeps its certificate, if any, and notes
// the error (code and message from out), with retryAt as its next
// renewal try (zero leaves renew_after as it is), or, cancelled, is left as
// before the operation (endIssue); the lock and the staged certificate go;
// events are written. It returns false when the operation had finished.
func (c *CertificateStore) FailIssue(ctx context.Context, opID, siteID string, out Outcome, retryAt time.Time, events []OutboxEvent) (bool, error) {
	return c.s.finish(ctx, opID, out, events, func(ctx context.Context, tx bun.Tx, now time.Time) error {
		return endIssue(ctx, tx, opID, siteID, out, now, retryAt)
	})
}

// endIssue is what an unsuccessful certificate operation leaves: a failure
// is noted on the site's record; a cancel leaves the record as it was before
// the operation (a site that had no certificate has no record again). The
// staged certificate and the site's lock go either way.
func endIssue(ctx context.Context, tx bun.IDB, opID, siteID string, out Outcome, now, retryAt time.Time) error {
	if out.Status == OpCancelled {
		if _, err := tx.NewDelete().Model((*SiteCertificate)(nil)).
			Where("site_id = ? AND status IN (?) AND serial = ''", siteID, bun.In([]string{CertificatePending, CertificateFailed})).
			Exec(ctx); err != nil {
			return fmt.Errorf("certificate record of site %s: %w", siteID, err)
		}
	} else if err := recordCertificateError(ctx, tx, siteID, out.ErrorCode, out.ErrorMessage, now, retryAt, true); err != nil {
		return err
	}
	if err := deleteUpload(ctx, tx, opID); err != nil {
		return err
	}
	return unlockSite(ctx, tx, siteID, opID, now)
}

// abandonPendingIssue cancels a certificate operation that has not started
// (its task has not run): nothing reached the CA or the server.
func (s *Store) abandonPendingIssue(ctx context.Context, opID, siteID string, out Outcome) (bool, error) {
	return s.finishPendingWith(ctx, opID, out, func(ctx context.Context, tx bun.Tx, now time.Time) error {
		return endIssue(ctx, tx, opID, siteID, out, now, time.Time{})
	})
}

// NoteIssueError records on site siteID's certificate record an attempt
// that did not finish the operation (it is retried, or deferred until
// retryAt): GET .../certificate shows why the site waits.
func (c *CertificateStore) NoteIssueError(ctx context.Context, siteID, code, message string, retryAt time.Time) error {
	return recordCertificateError(ctx, c.s.db, siteID, code, message, c.s.nowUTC(), retryAt, false)
}

// recordCertificateError notes code and message on an existing record (a
// record is made by newIssueOperation before any job runs); retryAt, when
// set, becomes its renew_after. final marks the end of the operation.
func recordCertificateError(ctx context.Context, db bun.IDB, siteID, code, message string, now, retryAt time.Time, final bool) error {
	q := db.NewUpdate().Model((*SiteCertificate)(nil)).
		Set("last_error_code = ?", code).Set("last_error_message = ?", message).
		Set("last_error_at = ?", now).Set("updated_at = ?", now).
		Where("site_id = ?", siteID)
	if !retryAt.IsZero() {
		q = q.Set("renew_after = ?", retryAt.UTC().Truncate(time.Microsecond))
	}
	if final {
		// A site that never got a certificate shows failed, not pending,
		// once an issuance has failed for good.
		q = q.Set("status = CASE WHEN status = ? THEN ? ELSE status END", CertificatePending, CertificateFailed)
	}
	if _, err := q.Exec(ctx); err != nil {
		return fmt.Errorf("record certificate error of site %s: %w", siteID, err)
	}
	return nil
}

// markIssuePending shows a site without a certificate as pending again
// (a new issuance of a site whose last one failed).
func markIssuePending(ctx context.Context, db bun.IDB, siteID string, now time.Time) error {
	_, err := db.NewUpdate().Model((*SiteCertificate)(nil)).Set("status = ?", CertificatePending).Set("updated_at = ?", now).
		Where("site_id = ? AND status = ?", siteID, CertificateFailed).Exec(ctx)
	if err != nil {
		return fmt.Errorf("certificate of site %s: %w", siteID, err)
	}
	return nil
}

// deleteCertificateOf drops a site's certificate record (the site left its
// server: deleted, or unserved after losing its domain), so the renewal
// sweep and the expiry metric forget it.
func deleteCertificateOf(ctx context.Context, db bun.IDB, siteID string) error {
	if _, err := db.NewDelete().Model((*SiteCertificate)(nil)).Where("site_id = ?", siteID).Exec(ctx); err != nil {
		return fmt.Errorf("delete certificate of site %s: %w", siteID, err)
	}
	return nil
}
