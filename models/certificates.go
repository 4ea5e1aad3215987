package models

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/certs/seal"
)

// Certificate statuses: what a site has.
const (
	// CertificatePending: no certificate yet; the first issuance is under way.
	CertificatePending = "pending"
	// CertificateIssued: the site has a certificate (the last renewal may
	// have failed: LastErrorCode says so).
	CertificateIssued = "issued"
	// CertificateFailed: no certificate, and the last attempt failed.
	CertificateFailed = "failed"
)

// Certificate sources.
const (
	// SourceACME: issued by CHOM through ACME and renewed by it.
	SourceACME = "acme"
	// SourceUpload: uploaded by the tenant; never renewed by CHOM.
	SourceUpload = "upload"
)

// Why a certificate.issue operation runs (CertificatePayload.Reason).
const (
	// IssueAfterProvision: the automatic first issuance of an HTTPSAuto site.
	IssueAfterProvision = "provision"
	// IssueRequested: the tenant asked (POST /sites/{id}/certificate).
	IssueRequested = "request"
	// IssueRenewal: the renewal sweep found the certificate due.
	IssueRenewal = "renewal"
	// IssueUpload: the tenant uploaded a certificate to install.
	IssueUpload = "upload"
)

// CertificatePayload is the payload recorded on a certificate.issue
// operation.
type CertificatePayload struct {
	SiteID string `json:"site_id"`
	// Reason is one of the Issue* constants.
	Reason string `json:"reason"`
	// Domains are the names the certificate is for (the site's domain, then
	// its aliases) when the operation was recorded.
	Domains []string `json:"domains"`
}

// PrefixACMEAccount prefixes ACME account IDs.
const PrefixACMEAccount = "acct_"

// ACMEAccount is the platform's account at one CA. KeyPEM is the private
// key in the clear: the store seals it on write and opens it on read.
type ACMEAccount struct {
	bun.BaseModel `bun:"table:acme_accounts"`

	ID           string    `bun:"id,pk"`
	DirectoryURL string    `bun:"directory_url"`
	Email        string    `bun:"email"`
	URI          string    `bun:"uri"`
	KeySealed    string    `bun:"key_sealed" json:"-"`
	KeyPEM       []byte    `bun:"-" json:"-"`
	CreatedAt    time.Time `bun:"created_at"`
	UpdatedAt    time.Time `bun:"updated_at"`
}

// SiteCertificate is a site's certificate record. KeyPEM is the private
// key in the clear (filled by CertificateBySite only); the table holds it
// sealed, bound to the site.
type SiteCertificate struct {
	bun.BaseModel `bun:"table:site_certificates"`

	SiteID           string     `bun:"site_id,pk" json:"-"`
	Status           string     `bun:"status" json:"status"`
	Source           string     `bun:"source" json:"source"`
	Issuer           string     `bun:"issuer" json:"issuer"`
	DomainsJSON      string     `bun:"domains" json:"-"`
	Domains          []string   `bun:"-" json:"domains"`
	Serial           string     `bun:"serial" json:"serial"`
	NotBefore        *time.Time `bun:"not_before" json:"not_before"`
	NotAfter         *time.Time `bun:"not_after" json:"not_after"`
	RenewAfter       *time.Time `bun:"renew_after" json:"renew_after"`
	ChainPEM         string     `bun:"chain_pem" json:"-"`
	KeySealed        string     `bun:"key_sealed" json:"-"`
	KeyPEM           []byte     `bun:"-" json:"-"`
	LastErrorCode    string     `bun:"last_error_code" json:"last_error_code,omitempty"`
	LastErrorMessage string     `bun:"last_error_message" json:"last_error_message,omitempty"`
	LastErrorAt      *time.Time `bun:"last_error_at" json:"last_error_at,omitempty"`
	CreatedAt        time.Time  `bun:"created_at" json:"created_at"`
	UpdatedAt        time.Time  `bun:"updated_at" json:"updated_at"`
}

// BudgetLimits are a CA's rate limits CHOM keeps under. The zero value of a
// field takes Let's Encrypt's limit.
type BudgetLimits struct {
	// OrdersPerAccount new orders per account per OrdersWindow (300 per 3 h).
	OrdersPerAccount int
	OrdersWindow     time.Duration
	// CertsPerDomain certificates per registered domain per CertsWindow
	// (50 per 7 days).
	CertsPerDomain int
	CertsWindow    time.Duration
}

// withDefaults fills Let's Encrypt's limits.
func (l BudgetLimits) withDefaults() BudgetLimits {
	if l.OrdersPerAccount == 0 {
		l.OrdersPerAccount = 300
	}
	if l.OrdersWindow == 0 {
		l.OrdersWindow = 3 * time.Hour
	}
	if l.CertsPerDomain == 0 {
		l.CertsPerDomain = 50
	}
	if l.CertsWindow == 0 {
		l.CertsWindow = 7 * 24 * time.Hour
	}
	return l
}

// CertificateStoreConfig configures a CertificateStore.
type CertificateStoreConfig struct {
	// Store is the database; required.
	Store *Store
	// Ring seals and opens keys; required.
	Ring *seal.Ring
	// Budget are the CA's rate limits; zero fields take Let's Encrypt's.
	Budget BudgetLimits
}

// CertificateStore keeps ACME accounts, site certificates (keys sealed) and
// the CA rate-limit ledger. It is safe for concurrent use.
type CertificateStore struct {
	s      *Store
	ring   *seal.Ring
	limits BudgetLimits
}

// NewCertificateStore returns a CertificateStore.
func NewCertificateStore(cfg CertificateStoreConfig) (*CertificateStore, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("models: CertificateStoreConfig.Store is required"))
	}
	if cfg.Ring == nil {
		errs = append(errs, errors.New("models: CertificateStoreConfig.Ring is required (CHOM_CERT_ENCRYPTION_KEYS)"))
	}
	if b := cfg.Budget; b.OrdersPerAccount < 0 || b.CertsPerDomain < 0 || b.OrdersWindow < 0 || b.CertsWindow < 0 {
		errs = append(errs, errors.New("models: CertificateStoreConfig.Budget must not be negative"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &CertificateStore{s: cfg.Store, ring: cfg.Ring, limits: cfg.Budget.withDefaults()}, nil
}

// accountAAD binds a sealed account key to its row.
func accountAAD(id string) string { return "chom/acme-account-key/" + id }

// certificateAAD binds a sealed certificate key to its site.
func certificateAAD(siteID string) string { return "chom/certificate-key/site/" + siteID }

// ACMEAccount returns the account of directoryURL and email with its key
// opened, or ErrNotFound.
func (c *CertificateStore) ACMEAccount(ctx context.Context, directoryURL, email string) (*ACMEAccount, error) {
	var a ACMEAccount
	err := c.s.db.NewSelect().Model(&a).Where("directory_url = ? AND email = ?", directoryURL, email).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("acme account of %s: %w", directoryURL, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read acme account: %w", err)
	}
	if a.KeyPEM, err = c.ring.Open(a.KeySealed, accountAAD(a.ID)); err != nil {
		return nil, fmt.Errorf("open the key of acme account %s: %w", a.ID, err)
	}
	return &a, nil
}

// CreateACMEAccount stores an account (sealing its key) unless one of its
// directory and email exists, and returns the stored account: of two workers
// registering at once, the first to store wins.
func (c *CertificateStore) CreateACMEAccount(ctx context.Context, a ACMEAccount) (*ACMEAccount, error) {
	now := c.s.nowUTC()
	a.ID, a.CreatedAt, a.UpdatedAt = NewID(PrefixACMEAccount), now, now
	sealed, err := c.ring.Seal(a.KeyPEM, accountAAD(a.ID))
	if err != nil {
		return nil, err
	}
	a.KeySealed = sealed
	if _, err := c.s.db.NewInsert().Model(&a).On("CONFLICT (directory_url, email) DO NOTHING").Exec(ctx); err != nil {
		return nil, fmt.Errorf("store acme account: %w", err)
	}
	return c.ACMEAccount(ctx, a.DirectoryURL, a.Email)
}

// PutCertificate writes a site's certificate record (insert or replace),
// sealing rec.KeyPEM bound to the site. CreatedAt is kept on a replace.
func (c *CertificateStore) PutCertificate(ctx context.Context, rec SiteCertificate) error {
	row, err := c.certificateRow(rec)
	if err != nil {
		return err
	}
	now := c.s.nowUTC()
	row.CreatedAt, row.UpdatedAt = now, now
	return putCertificate(ctx, c.s.db, row)
}

// certificateRow is rec as stored: its key sealed to the site, its domains
// encoded, its times in UTC microseconds.
func (c *CertificateStore) certificateRow(rec SiteCertificate) (SiteCertificate, error) {
	if rec.SiteID == "" {
		return rec, errors.New("put certificate: no site ID")
	}
	if len(rec.KeyPEM) > 0 {
		sealed, err := c.ring.Seal(rec.KeyPEM, certificateAAD(rec.SiteID))
		if err != nil {
			return rec, err
		}
		rec.KeySealed = sealed
	}
	if err := rec.encodeDomains(rec.Domains); err != nil {
		return rec, fmt.Errorf("put certificate: %w", err)
	}
	for _, t := range []**time.Time{&rec.NotBefore, &rec.NotAfter, &rec.RenewAfter, &rec.LastErrorAt} {
		if *t != nil {
			u := (*t).UTC().Truncate(time.Microsecond)
			*t = &u
		}
	}
	return rec, nil
}

// putCertificate inserts or replaces a prepared row (certificateRow).
func putCertificate(ctx context.Context, db bun.IDB, row SiteCertificate) error {
	_, err := db.NewInsert().Model(&row).
		On("CONFLICT (site_id) DO UPDATE").
		Set("status = EXCLUDED.status, source = EXCLUDED.source, issuer = EXCLUDED.issuer, domains = EXCLUDED.domains").
		Set("serial = EXCLUDED.serial, not_before = EXCLUDED.not_before, not_after = EXCLUDED.not_after").
		Set("renew_after = EXCLUDED.renew_after, chain_pem = EXCLUDED.chain_pem, key_sealed = EXCLUDED.key_sealed").
		Set("last_error_code = EXCLUDED.last_error_code, last_error_message = EXCLUDED.last_error_message").
		Set("last_error_at = EXCLUDED.last_error_at, updated_at = EXCLUDED.updated_at").
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("put certificate of %s: %w", row.SiteID, err)
	}
	return nil
}

// CertificateBySite returns a site's certificate record with its key
// opened, or ErrNotFound.
func (c *CertificateStore) CertificateBySite(ctx context.Context, siteID string) (*SiteCertificate, error) {
	rec, err := c.certificateRecord(ctx, siteID, true)
	if err != nil {
		return nil, err
	}
	if rec.KeySealed != "" {
		if rec.KeyPEM, err = c.ring.Open(rec.KeySealed, certificateAAD(siteID)); err != nil {
			return nil, fmt.Errorf("open the certificate key of %s: %w", siteID, err)
		}
	}
	return rec, nil
}

// CertificateRecord returns a site's certificate record without its key
// (neither read nor opened: KeySealed and KeyPEM are empty), or ErrNotFound.
func (c *CertificateStore) CertificateRecord(ctx context.Context, siteID string) (*SiteCertificate, error) {
	return c.certificateRecord(ctx, siteID, false)
}

func (c *CertificateStore) certificateRecord(ctx context.Context, siteID string, withKey bool) (*SiteCertificate, error) {
	var rec SiteCertificate
	q := c.s.db.NewSelect().Model(&rec).Where("site_id = ?", siteID)
	if !withKey {
		q = q.ExcludeColumn("key_sealed")
	}
	err := q.Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("certificate of %s: %w", siteID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read certificate of %s: %w", siteID, err)
	}
	if err := rec.decode(); err != nil {
		return nil, err
	}
	return &rec, nil
}

// encodeDomains sets Domains and their stored JSON.
func (r *SiteCertificate) encodeDomains(domains []string) error {
	if domains == nil {
		domains = []string{}
	}
	b, err := json.Marshal(domains)
	if err != nil {
		return fmt.Errorf("certificate of %s: domains: %w", r.SiteID, err)
	}
	r.Domains, r.DomainsJSON = domains, string(b)
	return nil
}

// decode fills Domains from the stored JSON.
func (r *SiteCertificate) decode() error {
	if err := json.Unmarshal([]byte(r.DomainsJSON), &r.Domains); err != nil {
		return fmt.Errorf("certificate of %s: domains: %w", r.SiteID, err)
	}
	return nil
}

// RecordCertificateError notes a failed issuance or renewal of a site
// outside an operation (an operator's tool, a test): the code and message go
// on the record, and renew_after moves to retryAt (the sweep's next try); the
// certificate itself, if any, stays. A site without a record gets one in
// status failed. It is the operation's own path (ensureCertificateRecord,
// then the final recordCertificateError) in one transaction.
func (c *CertificateStore) RecordCertificateError(ctx context.Context, siteID, code, message string, retryAt time.Time) error {
	now := c.s.nowUTC()
	return c.s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		if err := ensureCertificateRecord(ctx, tx, siteID, []string{}, now); err != nil {
			return err
		}
		return recordCertificateError(ctx, tx, siteID, code, message, now, retryAt, true)
	})
}

// DeleteCertificate removes a site's record (the site went back to HTTP or
// was deleted); a missing record is not an error.
func (c *CertificateStore) DeleteCertificate(ctx context.Context, siteID string) error {
	return deleteCertificateOf(ctx, c.s.db, siteID)
}

// DueForRenewal lists up to limit ACME certificates whose renew_after is at
// or before now, the most overdue first, without their keys: the renewal
// sweep's work list. Uploaded certificates are never listed (CHOM cannot
// renew them; the expiry alert covers them).
func (c *CertificateStore) DueForRenewal(ctx context.Context, now time.Time, limit int) ([]SiteCertificate, error) {
	var recs []SiteCertificate
	err := c.s.db.NewSelect().Model(&recs).
		ExcludeColumn("key_sealed", "chain_pem").
		Where("source = ? AND renew_after IS NOT NULL AND renew_after <= ?", SourceACME, now.UTC()).
		OrderExpr("renew_after, site_id").Limit(int64(limit)).Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("list certificates due: %w", err)
	}
	for i := range recs {
		if err := recs[i].decode(); err != nil {
			return nil, err
		}
	}
	return recs, nil
}

// ResealReport counts what a Reseal pass re-sealed.
type ResealReport struct {
	Accounts, Certificates int
	// Uploads counts the keys of uploaded (or issued and not yet deployed)
	// certificates waiting for their operation.
	Uploads int
}

// Reseal re-seals, under the ring's primary key, every account key,
// certificate key and pending upload's key sealed under another key, batch
// rows at a time (each batch in its own short statements, so a large fleet
// is not locked). A row changed meanwhile is left to the next pass; a row
// whose key is no longer in the ring stops the pass with an error naming the
// row and the key id. Run it (chom certificates reseal) after putting a new
// key first in CHOM_CERT_ENCRYPTION_KEYS, and drop the old key only once it
// reports nothing left.
func (c *CertificateStore) Reseal(ctx context.Context, batch int) (ResealReport, error) {
	if batch <= 0 {
		batch = 100
	}
	var rep ResealReport
	prefix := "v1:" + c.ring.Primary() + ":"
	tables := []struct {
		table, key string
		aux        string // a second column the AAD binds, or ""
		aad        func(id, aux string) string
		n          *int
	}{
		{"acme_accounts", "id", "", func(id, _ string) string { return accountAAD(id) }, &rep.Accounts},
		{"site_certificates", "site_id", "", func(id, _ string) string { return certificateAAD(id) }, &rep.Certificates},
		{"certificate_uploads", "operation_id", "site_id", uploadAAD, &rep.Uploads},
	}
	for _, t := range tables {
		after := ""
		for {
			var rows []struct {
				ID        string `bun:"id"`
				Aux       string `bun:"aux"`
				KeySealed string `bun:"key_sealed"`
			}
			q := c.s.db.NewSelect().Table(t.table).ColumnExpr("? AS id, key_sealed", bun.Ident(t.key))
			if t.aux != "" {
				q = q.ColumnExpr("? AS aux", bun.Ident(t.aux))
			}
			err := q.Where("key_sealed <> '' AND substr(key_sealed, 1, ?) <> ?", len(prefix), prefix).
				Where("? > ?", bun.Ident(t.key), after).
				OrderExpr("?", bun.Ident(t.key)).Limit(int64(batch)).Scan(ctx, &rows)
			if err != nil {
				return rep, fmt.Errorf("reseal %s: %w", t.table, err)
			}
			if len(rows) == 0 {
				break
			}
			for _, r := range rows {
				fresh, err := c.ring.Reseal(r.KeySealed, t.aad(r.ID, r.Aux))
				if err != nil {
					return rep, fmt.Errorf("reseal %s %s: %w", t.table, r.ID, err)
				}
				res, err := c.s.db.NewUpdate().Table(t.table).Set("key_sealed = ?", fresh).
					Where("? = ? AND key_sealed = ?", bun.Ident(t.key), r.ID, r.KeySealed).Exec(ctx)
				if err != nil {
					return rep, fmt.Errorf("reseal %s %s: %w", t.table, r.ID, err)
				}
				if n, _ := res.RowsAffected(); n == 1 {
					*t.n++
				}
			}
			after = rows[len(rows)-1].ID
		}
	}
	return rep, nil
}

// BudgetDeniedError: a rate limit of the CA is spent; nothing was reserved.
type BudgetDeniedError struct {
	// Limit names the limit: "orders per account" or "certificates per
	// registered domain <domain>".
	Limit string
	// Until is when the oldest counted use leaves the window: retry then.
	Until time.Time
}

func (e *BudgetDeniedError) Error() string {
	return "rate-limit budget spent (" + e.Limit + ") until " + e.Until.UTC().Format(time.RFC3339)
}

// RetryAt is when a reservation can succeed again (acme.Budget's contract).
func (e *BudgetDeniedError) RetryAt() time.Time { return e.Until }

// budgetRow is one use counted in the ledger: an order of an account or a
// certificate of a registered domain, under a reservation.
type budgetRow struct {
	bun.BaseModel `bun:"table:acme_budget"`

	ID          int64     `bun:"id,pk,autoincrement"`
	Bucket      string    `bun:"bucket"`
	Reservation string    `bun:"reservation"`
	CreatedAt   time.Time `bun:"created_at"`
}

// Bucket names in the ledger.
func orderBucket(account string) string { return "order:" + account }
func certBucket(domain string) string   { return "cert:" + domain }

// Reserve takes one new order of account and one certificate of each
// registered domain, atomically across the fleet: on PostgreSQL each bucket
// is locked (a transaction-scoped advisory lock, in sorted order, so two
// reservations cannot deadlock), on SQLite the single connection serialises.
// When a bucket is full it reserves nothing and returns a
// *BudgetDeniedError with the time the oldest counted use leaves the window.
// It implements acme.Budget.
func (c *CertificateStore) Reserve(ctx context.Context, account string, registeredDomains []string) (string, error) {
	type bucket struct {
		name   string
		limit  int
		window time.Duration
		what   string
	}
	buckets := []bucket{{orderBucket(account), c.limits.OrdersPerAccount, c.limits.OrdersWindow, "orders per account"}}
	for _, d := range registeredDomains {
		buckets = append(buckets, bucket{certBucket(d), c.limits.CertsPerDomain, c.limits.CertsWindow, "certificates per registered domain " + d})
	}
	slices.SortFunc(buckets, func(a, b bucket) int { return strings.Compare(a.name, b.name) })
	buckets = slices.CompactFunc(buckets, func(a, b bucket) bool { return a.name == b.name })
	id := NewID("rsv_")
	now := c.s.nowUTC()
	err := c.s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		for _, b := range buckets {
			if c.s.pg {
				if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", b.name); err != nil {
					return fmt.Errorf("lock %s: %w", b.name, err)
				}
			}
		}
		for _, b := range buckets {
			since := now.Add(-b.window)
			var used []time.Time
			// The oldest uses first: when the bucket is full, the one whose
			// leaving frees a place is at index used-limit.
			if err := tx.NewSelect().Table("acme_budget").Column("created_at").
				Where("bucket = ? AND created_at > ?", b.name, since).
				OrderExpr("created_at").Scan(ctx, &used); err != nil {
				return fmt.Errorf("count %s: %w", b.name, err)
			}
			if len(used) >= b.limit {
				return &BudgetDeniedError{Limit: b.what, Until: used[len(used)-b.limit].Add(b.window)}
			}
		}
		for _, b := range buckets {
			if _, err := tx.NewInsert().Model(&budgetRow{Bucket: b.name, Reservation: id, CreatedAt: now}).
				Exec(ctx); err != nil {
				return fmt.Errorf("reserve %s: %w", b.name, err)
			}
			// Uses older than the window count no more: drop them.
			if _, err := tx.NewDelete().Model((*budgetRow)(nil)).
				Where("bucket = ? AND created_at <= ?", b.name, now.Add(-b.window)).Exec(ctx); err != nil {
				return fmt.Errorf("prune %s: %w", b.name, err)
			}
		}
		return nil
	})
	if err != nil {
		var denied *BudgetDeniedError
		if errors.As(err, &denied) {
			return "", denied
		}
		return "", fmt.Errorf("reserve rate-limit budget: %w", err)
	}
	return id, nil
}

// Settle ends a reservation: when the CA never saw the order, nothing of it
// counts; when it saw the order but issued nothing, the order counts and the
// certificates are given back; when it issued, everything counts. A
// reservation never settled (the worker died) keeps counting until its
// window passes: the safe side. It implements acme.Budget.
func (c *CertificateStore) Settle(ctx context.Context, reservation string, orderSeen, issued bool) error {
	q := c.s.db.NewDelete().Model((*budgetRow)(nil)).Where("reservation = ?", reservation)
	switch {
	case issued:
		return nil
	case orderSeen:
		q = q.Where("bucket LIKE 'cert:%'")
	}
	if _, err := q.Exec(ctx); err != nil {
		return fmt.Errorf("settle reservation %s: %w", reservation, err)
	}
	return nil
}

// BudgetUse reports how many uses the ledger counts in bucket's window now:
// orders of an account ("order:" + account URI) or certificates of a
// registered domain ("cert:" + domain). For metrics and tests.
func (c *CertificateStore) BudgetUse(ctx context.Context, kind, key string) (int, error) {
	window := c.limits.OrdersWindow
	if kind == "cert" {
		window = c.limits.CertsWindow
	}
	n, err := c.s.db.NewSelect().Table("acme_budget").
		Where("bucket = ? AND created_at > ?", kind+":"+key, c.s.nowUTC().Add(-window)).Count(ctx)
	if err != nil {
		return 0, fmt.Errorf("budget use of %s:%s: %w", kind, key, err)
	}
	return int(n), nil
}

// CertificateExpiry is when a site's current certificate expires.
type CertificateExpiry struct {
	SiteID   string    `bun:"site_id"`
	Source   string    `bun:"source"`
	NotAfter time.Time `bun:"not_after"`
}

// CertificateExpiries lists the current certificate of every site that is
// not deleted, across every tenant, for the platform's operational metrics
// (chom_certificate_expiry_timestamp_seconds); it reads no key and needs no
// key ring. A site whose only attempts failed has no certificate and is not
// listed.
func (s *Store) CertificateExpiries(ctx context.Context) ([]CertificateExpiry, error) {
	var out []CertificateExpiry
	err := s.db.NewSelect().TableExpr("site_certificates AS c").
		ColumnExpr("c.site_id, c.source, c.not_after").
		Join("JOIN sites AS s ON s.id = c.site_id").
		Where("c.not_after IS NOT NULL AND s.status <> ?", SiteStatusDeleted).
		OrderExpr("c.site_id").Scan(ctx, &out)
	if err != nil {
		return nil, fmt.Errorf("list certificate expiries: %w", err)
	}
	return out, nil
}
