package models

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
)

// How a certificate.issue operation relates to its site:
//
//   - It does not hold the site's mutation lock while it runs: an ACME order
//     may wait minutes on a CA, and a rate-limit deferral days, and a tenant
//     must still be able to back up or delete the site meanwhile. The job
//     takes the lock only around the deploy to the server (LockSiteForDeploy),
//     so a deploy never races a provision, restore or deprovision.
//   - A site has at most one unfinished certificate.issue: a second request
//     is a ConflictError naming the first.
//   - A site has a certificate record from its first issuance on: status
//     pending until a certificate is installed (GET .../certificate answers
//     it), issued after.

// Actors of the certificate operations CHOM starts by itself.
const (
	// AutoIssueActor starts the first issuance of an HTTPSAuto site after its
	// provision.
	AutoIssueActor = "system:certificate-auto-issue"
	// RenewalActor starts renewals (the renewal sweep).
	RenewalActor = "system:certificate-renewal"
)

// unfinishedIssue returns the ID of the site's unfinished certificate.issue
// operation, or "".
func unfinishedIssue(ctx context.Context, tx bun.IDB, siteID string) (string, error) {
	var running []string
	if err := tx.NewSelect().Model((*Operation)(nil)).Column("id").
		Where("target_id = ? AND op_type = ? AND status IN (?, ?)", siteID, OpTypeCertificateIssue, OpPending, OpRunning).
		Limit(1).Scan(ctx, &running); err != nil {
		return "", fmt.Errorf("certificate operations of site %s: %w", siteID, err)
	}
	if len(running) == 0 {
		return "", nil
	}
	return running[0], nil
}

// siteDomains are the names a site's certificate covers: its domain, then
// its aliases.
func siteDomains(site *Site) []string {
	return append([]string{site.Domain}, site.Aliases...)
}

// newIssueOperation builds (without inserting it) a certificate.issue
// operation opID of site for reason, inside tx: a site that is not active on
// a server is a ConflictError, so is one with an issuance already
// unfinished (named). The site gets a pending certificate record when it has
// none.
func newIssueOperation(ctx context.Context, tx bun.IDB, a Accept, site *Site, reason, opID string, now time.Time) (*Operation, error) {
	if site.Status != SiteStatusActive || site.VPSID == nil {
		return nil, fmt.Errorf("issue a certificate for site %s: %w", site.ID, &ConflictError{
			Reason: "the site is " + site.Status + ": a certificate is issued for an active site"})
	}
	// Starts of a site's certificate operations (a request, an upload, the
	// sweep's renewal) queue on its certificate row, so the check below sees
	// what a start before it committed. (A site without a record has nothing
	// to renew; two requests racing there meet the unique index,
	// issueRaced.)
	if tx.Dialect().Name() == dialect.PG {
		if _, err := tx.NewSelect().Table("site_certificates").Column("site_id").Where("site_id = ?", site.ID).
			For("UPDATE").Exec(ctx); err != nil {
			return nil, fmt.Errorf("lock the certificate of site %s: %w", site.ID, err)
		}
	}
	running, err := unfinishedIssue(ctx, tx, site.ID)
	if err != nil {
		return nil, err
	}
	if running != "" {
		return nil, fmt.Errorf("issue a certificate for site %s: %w", site.ID, &ConflictError{
			Reason: "a certificate operation of the site is in progress", OperationID: running})
	}
	domains := siteDomains(site)
	op, err := newOperation(a, OpTypeCertificateIssue, TargetSite, site.ID,
		CertificatePayload{SiteID: site.ID, Reason: reason, Domains: domains}, now)
	if err != nil {
		return nil, err
	}
	op.ID = opID
	if err := ensureCertificateRecord(ctx, tx, site.ID, domains, now); err != nil {
		return nil, err
	}
	return op, nil
}

// ensureCertificateRecord gives a site without a certificate record a
// pending one, and shows one whose last issuance failed as pending again.
func ensureCertificateRecord(ctx context.Context, tx bun.IDB, siteID string, domains []string, now time.Time) error {
	rec := SiteCertificate{SiteID: siteID, Status: CertificatePending, Source: SourceACME, CreatedAt: now, UpdatedAt: now}
	if err := rec.encodeDomains(domains); err != nil {
		return err
	}
	if _, err := tx.NewInsert().Model(&rec).On("CONFLICT (site_id) DO NOTHING").Exec(ctx); err != nil {
		return fmt.Errorf("certificate record of site %s: %w", siteID, err)
	}
	return markIssuePending(ctx, tx, siteID, now)
}

// IssueRequest is a tenant's request for a (new) certificate.
type IssueRequest struct {
	// HSTS, when set, changes the site's HSTS opt-in; the new certificate is
	// deployed with it.
	HSTS *bool
}

// StartCertificateIssue records a certificate.issue operation for the
// tenant's site (POST /sites/{id}/certificate): a new ACME certificate for
// its domain and aliases, deployed when issued. Another tenant's or a
// deleted site is ErrNotFound; see newIssueOperation for the conflicts.
func (s *Store) StartCertificateIssue(ctx context.Context, a Accept, siteID string, r IssueRequest) (*Accepted, error) {
	acc, err := s.startCertificateIssue(ctx, a, siteID, r)
	if issueRaced(err) {
		// The renewal sweep started one between our check and our insert.
		return nil, fmt.Errorf("issue a certificate for site %s: %w", siteID, &ConflictError{
			Reason: "a certificate operation of the site is in progress"})
	}
	return acc, err
}

// issueRaced reports whether err is the unique violation of
// operations_certificate_issue_open_key (one unfinished certificate.issue
// per site): another transaction started one first.
func issueRaced(err error) bool {
	return uniqueViolation(err, "operations_certificate_issue_open_key", "UNIQUE constraint failed: operations.target_id")
}

func (s *Store) startCertificateIssue(ctx context.Context, a Accept, siteID string, r IssueRequest) (*Accepted, error) {
	return s.recordMutation(ctx, a, "certificate.issue", func(ctx context.Context, tx bun.Tx, opID string, now time.Time) (*Operation, error) {
		site := new(Site)
		if err := tx.NewSelect().Model(site).
			Where("id = ? AND tenant_id = ? AND deleted_at IS NULL", siteID, a.TenantID).Scan(ctx); err != nil {
			return nil, notFound(err, "site", siteID)
		}
		op, err := newIssueOperation(ctx, tx, a, site, IssueRequested, opID, now)
		if err != nil {
			return nil, err
		}
		if r.HSTS != nil && *r.HSTS != site.HSTS {
			if _, err := tx.NewUpdate().Model((*Site)(nil)).Set("hsts = ?", *r.HSTS).Set("updated_at = ?", now).
				Where("id = ?", siteID).Exec(ctx); err != nil {
				return nil, fmt.Errorf("set hsts of site %s: %w", siteID, err)
			}
		}
		return op, nil
	})
}

// autoIssue records, inside the transaction that finished site's provision,
// the first certificate.issue of an HTTPSAuto site, and returns it (nil for
// a site that opted out, or that already has a certificate: a provision run
// again keeps it). The caller enqueues it after the commit; the reconciler
// does if that fails.
func autoIssue(ctx context.Context, tx bun.Tx, siteID string, now time.Time) (*Operation, error) {
	site := new(Site)
	if err := tx.NewSelect().Model(site).Where("id = ?", siteID).Scan(ctx); err != nil {
		return nil, notFound(err, "site", siteID)
	}
	if site.HTTPS != HTTPSAuto || site.DeletedAt != nil {
		return nil, nil
	}
	n, err := tx.NewSelect().Model((*SiteCertificate)(nil)).Where("site_id = ? AND status = ?", siteID, CertificateIssued).Count(ctx)
	if err != nil {
		return nil, fmt.Errorf("certificate of site %s: %w", siteID, err)
	}
	if n > 0 {
		return nil, nil
	}
	if running, err := unfinishedIssue(ctx, tx, siteID); err != nil || running != "" {
		return nil, err
	}
	a := Accept{TenantID: site.TenantID, Actor: AutoIssueActor}
	op, err := newIssueOperation(ctx, tx, a, site, IssueAfterProvision, NewID(PrefixOperation), now)
	if err != nil {
		return nil, err
	}
	if _, err := tx.NewInsert().Model(op).Exec(ctx); err != nil {
		return nil, fmt.Errorf("insert operation: %w", err)
	}
	if _, err := tx.NewInsert().Model(newAudit(a, "certificate.issue", op, now)).Exec(ctx); err != nil {
		return nil, fmt.Errorf("insert audit log: %w", err)
	}
	return op, nil
}
