package models

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// An uploaded certificate travels from the request to the server like this:
// PUT /sites/{id}/certificate checks it (certs.CheckUpload, against the
// site's names as read in the transaction), then StartCertificateUpload
// records, in one transaction, a certificate.issue operation with reason
// IssueUpload and a certificate_uploads row holding the chain and the key,
// sealed and bound to that operation and site. The job reads it back with
// Upload, installs it, and its finish deletes the row (deleteUpload) in the
// transaction that finishes the operation.

// certificateUpload is one row of certificate_uploads.
type certificateUpload struct {
	bun.BaseModel `bun:"table:certificate_uploads"`

	OperationID string    `bun:"operation_id,pk"`
	SiteID      string    `bun:"site_id"`
	ChainPEM    string    `bun:"chain_pem"`
	KeySealed   string    `bun:"key_sealed"`
	CreatedAt   time.Time `bun:"created_at"`
}

// uploadAAD binds a sealed uploaded key to its operation and site: a row
// moved to another operation or site does not open.
func uploadAAD(opID, siteID string) string {
	return "chom/certificate-upload-key/" + opID + "/site/" + siteID
}

// UploadParams is a tenant's certificate upload (PUT
// /sites/{id}/certificate). ChainPEM and KeyPEM are the PEM text as
// uploaded; KeyPEM is sealed before it is written and never logged.
type UploadParams struct {
	Accept
	SiteID   string
	ChainPEM []byte
	KeyPEM   []byte
	// Check vets the upload against the names the certificate must cover
	// (the site's domain, then its aliases, as read inside the
	// transaction); its error is returned as it is and nothing is written.
	// Required: the store does not parse certificates itself.
	Check func(domains []string) error
}

// StartCertificateUpload records the installation of an uploaded
// certificate on the tenant's site: a certificate.issue operation with
// reason IssueUpload, its audit row (action "certificate.upload") and the
// upload (key sealed), in one transaction, under the Idempotency-Key like
// every mutation. Another tenant's or a deleted site is ErrNotFound; an
// upload Check refuses is Check's error; a site that is not active, or has a
// certificate operation unfinished, is a ConflictError (newIssueOperation).
// Any error writes nothing.
func (c *CertificateStore) StartCertificateUpload(ctx context.Context, p UploadParams) (*Accepted, error) {
	if p.Check == nil {
		return nil, errors.New("certificate upload: no Check")
	}
	return c.s.recordMutation(ctx, p.Accept, "certificate.upload", func(ctx context.Context, tx bun.Tx, opID string, now time.Time) (*Operation, error) {
		site := new(Site)
		q := tx.NewSelect().Model(site).Where("id = ? AND tenant_id = ? AND deleted_at IS NULL", p.SiteID, p.TenantID)
		if c.s.pg {
			// Two uploads at once: the second waits here, then finds the
			// first's operation unfinished (SQLite serialises anyway).
			q = q.For("UPDATE")
		}
		if err := q.Scan(ctx); err != nil {
			return nil, notFound(err, "site", p.SiteID)
		}
		if err := p.Check(siteDomains(site)); err != nil {
			return nil, err
		}
		op, err := newIssueOperation(ctx, tx, p.Accept, site, IssueUpload, opID, now)
		if err != nil {
			return nil, err
		}
		// A site with no certificate yet got a pending record (source acme)
		// from newIssueOperation: what is coming is the upload. A site that
		// has a certificate keeps showing it until the upload is installed.
		if _, err := tx.NewUpdate().Model((*SiteCertificate)(nil)).Set("source = ?", SourceUpload).
			Where("site_id = ? AND status = ?", site.ID, CertificatePending).Exec(ctx); err != nil {
			return nil, fmt.Errorf("certificate record of site %s: %w", site.ID, err)
		}
		sealed, err := c.ring.Seal(p.KeyPEM, uploadAAD(opID, site.ID))
		if err != nil {
			return nil, fmt.Errorf("certificate upload of site %s: %w", site.ID, err)
		}
		up := &certificateUpload{OperationID: opID, SiteID: site.ID, ChainPEM: string(p.ChainPEM), KeySealed: sealed, CreatedAt: now}
		if _, err := tx.NewInsert().Model(up).Exec(ctx); err != nil {
			return nil, fmt.Errorf("store certificate upload of site %s: %w", site.ID, err)
		}
		return op, nil
	})
}

// Upload returns the certificate uploaded for operation opID, its key
// opened: what the certificate.issue job installs. ErrNotFound when the
// operation has no upload (it was installed and deleted, or the operation is
// not an upload); an error when the key does not open (the ring lost the
// key that sealed it, or the row was tampered with).
func (c *CertificateStore) Upload(ctx context.Context, opID string) (chainPEM, keyPEM []byte, err error) {
	var up certificateUpload
	err = c.s.db.NewSelect().Model(&up).Where("operation_id = ?", opID).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, fmt.Errorf("certificate upload of %s: %w", opID, ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read certificate upload of %s: %w", opID, err)
	}
	key, err := c.ring.Open(up.KeySealed, uploadAAD(up.OperationID, up.SiteID))
	if err != nil {
		return nil, nil, fmt.Errorf("open the uploaded key of %s: %w", opID, err)
	}
	return []byte(up.ChainPEM), key, nil
}

// deleteUpload removes the upload of operation opID inside tx (the
// operation's finish does, whatever its outcome, so no sealed key outlives
// its operation); a missing upload is not an error.
func deleteUpload(ctx context.Context, tx bun.IDB, opID string) error {
	if _, err := tx.NewDelete().Model((*certificateUpload)(nil)).Where("operation_id = ?", opID).Exec(ctx); err != nil {
		return fmt.Errorf("delete certificate upload of %s: %w", opID, err)
	}
	return nil
}

// SiteCertificateView is a site's certificate record as its tenant reads it
// (GET /sites/{id}/certificate): the record without its key or chain, and
// the unfinished certificate.issue operation of the site, if any.
type SiteCertificateView struct {
	SiteCertificate
	// OperationID is the site's unfinished certificate.issue operation; ""
	// when none.
	OperationID string
}

// TenantSiteCertificate returns the certificate record of the tenant's site
// without reading its key (no key ring needed: the read path never
// decrypts) or its chain. ErrNotFound when the site is another tenant's,
// deleted or unknown, or has no record yet: the answers are the same.
func (s *Store) TenantSiteCertificate(ctx context.Context, tenantID, siteID string) (*SiteCertificateView, error) {
	var v SiteCertificateView
	err := s.db.NewSelect().Model(&v.SiteCertificate).
		ExcludeColumn("key_sealed", "chain_pem").
		Where("site_id = ?", siteID).
		Where("EXISTS (SELECT 1 FROM sites AS s WHERE s.id = ? AND s.tenant_id = ? AND s.deleted_at IS NULL)", siteID, tenantID).
		Scan(ctx)
	if err != nil {
		return nil, notFound(err, "certificate of site", siteID)
	}
	if err := v.decode(); err != nil {
		return nil, err
	}
	if v.OperationID, err = unfinishedIssue(ctx, s.db, siteID); err != nil {
		return nil, err
	}
	return &v, nil
}

// StageCertificate keeps a certificate the CA issued for operation opID,
// sealed like an upload, until the job has deployed it: a retried attempt
// (the deploy failed, the worker died) installs it instead of ordering
// again, which would spend the CA's rate limits. A certificate already
// staged for the operation is kept (the first one wins). CompleteIssue and
// FailIssue drop it.
func (c *CertificateStore) StageCertificate(ctx context.Context, opID, siteID string, chainPEM, keyPEM []byte) error {
	sealed, err := c.ring.Seal(keyPEM, uploadAAD(opID, siteID))
	if err != nil {
		return fmt.Errorf("stage the certificate of %s: %w", opID, err)
	}
	up := &certificateUpload{OperationID: opID, SiteID: siteID, ChainPEM: string(chainPEM), KeySealed: sealed, CreatedAt: c.s.nowUTC()}
	if _, err := c.s.db.NewInsert().Model(up).On("CONFLICT (operation_id) DO NOTHING").Exec(ctx); err != nil {
		return fmt.Errorf("stage the certificate of %s: %w", opID, err)
	}
	return nil
}
