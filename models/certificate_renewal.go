package models

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// The renewal sweep's side of the certificate records.
//
// A certificate is due when its renew_after has passed (DueForRenewal). The
// sweep then calls StartRenewal per site, which decides inside one
// transaction, holding the record's row lock, so two sweeps (two schedulers'
// ticks, a retried sweep) never start two renewals of one site. A due record
// that cannot be renewed now is moved out of the way, so it never holds the
// head of the due list and starves the sites behind it:
//
//   - a site busy with an unfinished certificate.issue, or not active on a
//     server (suspended, being updated, held for domain proof): renew_after
//     moves RenewalRecheck later; the running issuance sets the real time
//     when it ends, an inactive site is tried again an hour on;
//   - a deleted site: renew_after is cleared, the site is never renewed again.
//
// A site's HTTPS mode does not matter: a certificate CHOM issued (after the
// provision, or because the tenant asked while the mode was "off") is
// renewed, as letting it expire would break the site it serves. A site goes
// back to plain HTTP by having its record deleted.
//
// ACME Renewal Information (RFC 9773) moves renew_after earlier, never later
// (RecordRenewalInfo): CHOM renews at the earlier of its own time and the CA's.

// RenewalRecheck is how much later a due certificate that cannot be renewed
// now (its site busy or inactive) is looked at again. Starting a renewal
// moves renew_after the same way, so the next sweeps skip it while the
// issuance runs; the issuance sets the real time when it ends.
const RenewalRecheck = time.Hour

// renewalRow is the part of a certificate record StartRenewal re-checks.
type renewalRow struct {
	SiteID     string     `bun:"site_id"`
	Source     string     `bun:"source"`
	RenewAfter *time.Time `bun:"renew_after"`
}

// StartRenewal records, in one transaction, a certificate.issue operation
// (reason IssueRenewal, actor RenewalActor, no idempotency key) for the site
// whose certificate is due, and returns it for the caller to enqueue (the
// reconciler enqueues it if that fails). It returns nil, and no error, when
// there is nothing to start: the site has no record, an uploaded one, or one
// no longer due; its site is deleted (the record leaves the schedule), not
// active on a server, or has an unfinished certificate.issue (the record
// moves RenewalRecheck later). Everything is re-checked under the record's
// row lock (PostgreSQL; SQLite's single writer serialises), so concurrent
// calls for one site start one renewal.
func (s *Store) StartRenewal(ctx context.Context, siteID string) (*Operation, error) {
	now := s.nowUTC()
	var started *Operation
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		var rec renewalRow
		q := tx.NewSelect().Table("site_certificates").Column("site_id", "source", "renew_after").Where("site_id = ?", siteID)
		if s.pg {
			q = q.For("UPDATE")
		}
		err := q.Scan(ctx, &rec)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("lock the certificate of %s: %w", siteID, err)
		}
		if rec.Source != SourceACME || rec.RenewAfter == nil || rec.RenewAfter.After(now) {
			return nil
		}
		site := new(Site)
		if err := tx.NewSelect().Model(site).Where("id = ?", siteID).Scan(ctx); err != nil {
			return notFound(err, "site", siteID)
		}
		if site.DeletedAt != nil || site.Status == SiteStatusDeleted {
			return setRenewAfter(ctx, tx, siteID, nil, now)
		}
		running, err := unfinishedIssue(ctx, tx, siteID)
		if err != nil {
			return err
		}
		later := now.Add(RenewalRecheck)
		if running != "" || site.Status != SiteStatusActive || site.VPSID == nil {
			return setRenewAfter(ctx, tx, siteID, &later, now)
		}
		a := Accept{TenantID: site.TenantID, Actor: RenewalActor}
		op, err := newIssueOperation(ctx, tx, a, site, IssueRenewal, NewID(PrefixOperation), now)
		if err != nil {
			return err
		}
		if _, err := tx.NewInsert().Model(op).Exec(ctx); err != nil {
			return fmt.Errorf("insert operation: %w", err)
		}
		if _, err := tx.NewInsert().Model(newAudit(a, "certificate.issue", op, now)).Exec(ctx); err != nil {
			return fmt.Errorf("insert audit log: %w", err)
		}
		started = op
		return setRenewAfter(ctx, tx, siteID, &later, now)
	})
	if issueRaced(err) {
		return nil, nil // a request of the tenant started one first
	}
	if err != nil {
		return nil, fmt.Errorf("start the renewal of %s: %w", siteID, err)
	}
	return started, nil
}

// setRenewAfter sets a site's renew_after (nil clears it).
func setRenewAfter(ctx context.Context, tx bun.IDB, siteID string, at *time.Time, now time.Time) error {
	if _, err := tx.NewUpdate().Table("site_certificates").Set("renew_after = ?", at).Set("updated_at = ?", now).
		Where("site_id = ?", siteID).Exec(ctx); err != nil {
		return fmt.Errorf("move the renewal of %s: %w", siteID, err)
	}
	return nil
}

// RenewalInfoCheck is a certificate whose CA the sweep asks for ACME Renewal
// Information.
type RenewalInfoCheck struct {
	SiteID string `bun:"site_id"`
	// Serial identifies the certificate asked about: RecordRenewalInfo
	// changes nothing once another certificate replaced it.
	Serial     string     `bun:"serial"`
	ChainPEM   string     `bun:"chain_pem"`
	NotBefore  time.Time  `bun:"not_before"`
	NotAfter   time.Time  `bun:"not_after"`
	RenewAfter *time.Time `bun:"renew_after"`
}

// RenewalInfoDue lists up to limit issued ACME certificates of live sites
// whose time to ask the CA about has come (ari_check_after passed, or never
// asked), those never asked first, then the longest waiting. Keys are not
// read.
func (s *Store) RenewalInfoDue(ctx context.Context, now time.Time, limit int) ([]RenewalInfoCheck, error) {
	var out []RenewalInfoCheck
	err := s.db.NewSelect().TableExpr("site_certificates AS c").
		ColumnExpr("c.site_id, c.serial, c.chain_pem, c.not_before, c.not_after, c.renew_after").
		Join("JOIN sites AS s ON s.id = c.site_id").
		Where("c.source = ? AND c.status = ? AND c.chain_pem <> '' AND c.not_before IS NOT NULL AND c.not_after IS NOT NULL", SourceACME, CertificateIssued).
		Where("s.deleted_at IS NULL").
		Where("(c.ari_check_after IS NULL OR c.ari_check_after <= ?)", now.UTC()).
		OrderExpr("c.ari_check_after IS NOT NULL, c.ari_check_after, c.site_id").
		Limit(int64(limit)).Scan(ctx, &out)
	if err != nil {
		return nil, fmt.Errorf("list certificates to ask the CA about: %w", err)
	}
	return out, nil
}

// RecordRenewalInfo notes that the CA was asked about certificate serial of
// siteID: the next question is due at nextCheck, and, when renewAt is set
// (the time the CA's window gives), renew_after moves to it if that is
// earlier. It never moves renew_after later, never sets a cleared one (a
// deleted site's), and leaves alone a record whose last attempt failed (the
// failed operation's retry time stands) or whose certificate is no longer
// serial. It reports whether renew_after moved.
func (s *Store) RecordRenewalInfo(ctx context.Context, siteID, serial string, renewAt *time.Time, nextCheck time.Time) (bool, error) {
	now := s.nowUTC()
	moved := false
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewUpdate().Table("site_certificates").Set("ari_check_after = ?", nextCheck.UTC().Truncate(time.Microsecond)).
			Where("site_id = ? AND serial = ?", siteID, serial).Exec(ctx); err != nil {
			return fmt.Errorf("record the renewal information of %s: %w", siteID, err)
		}
		if renewAt == nil {
			return nil
		}
		at := renewAt.UTC().Truncate(time.Microsecond)
		res, err := tx.NewUpdate().Table("site_certificates").Set("renew_after = ?", at).Set("updated_at = ?", now).
			Where("site_id = ? AND serial = ? AND source = ? AND last_error_code = ''", siteID, serial, SourceACME).
			Where("renew_after > ?", at).Exec(ctx)
		if err != nil {
			return fmt.Errorf("move the renewal of %s: %w", siteID, err)
		}
		moved = affected(res) == 1
		return nil
	})
	return moved, err
}
