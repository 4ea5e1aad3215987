package models

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/uptrace/bun"
)

// Quota names, as problem+json names them (the member "quota").
const (
	QuotaSites       = "sites"
	QuotaBackups     = "backups"
	QuotaBackupBytes = "backup_bytes"
)

// ErrQuotaExceeded: the tenant is at one of its quotas; nothing was written.
var ErrQuotaExceeded = errors.New("quota exceeded")

// QuotaError is an ErrQuotaExceeded that names the quota, its limit and the
// tenant's usage when the request was refused.
type QuotaError struct {
	Quota string
	Limit int64
	Used  int64
}

func (e *QuotaError) Error() string {
	return "quota " + e.Quota + " exceeded: " + strconv.FormatInt(e.Used, 10) + " of " + strconv.FormatInt(e.Limit, 10) + " used"
}

// Unwrap makes errors.Is(err, ErrQuotaExceeded) true.
func (e *QuotaError) Unwrap() error { return ErrQuotaExceeded }

// Limits are a tenant's quotas; 0 means unlimited.
type Limits struct {
	MaxSites       int64 `json:"max_sites"`
	MaxBackups     int64 `json:"max_backups"`
	MaxBackupBytes int64 `json:"max_backup_bytes"`
}

// TenantQuota is an administrator's override of a tenant's limits: a nil
// field takes the platform default (Config.QuotaDefaults); 0 is unlimited.
type TenantQuota struct {
	bun.BaseModel `bun:"table:tenant_quotas"`

	TenantID       string    `bun:"tenant_id,pk" json:"-"`
	MaxSites       *int64    `bun:"max_sites" json:"max_sites"`
	MaxBackups     *int64    `bun:"max_backups" json:"max_backups"`
	MaxBackupBytes *int64    `bun:"max_backup_bytes" json:"max_backup_bytes"`
	UpdatedAt      time.Time `bun:"updated_at" json:"-"`
}

// QuotaUsage is what counts against a tenant's quotas: live (not deleted)
// sites, backups pending, running or completed, and the bytes of completed
// backups.
type QuotaUsage struct {
	Sites       int64 `json:"sites"`
	Backups     int64 `json:"backups"`
	BackupBytes int64 `json:"backup_bytes"`
}

// Quota is a tenant's effective limits, its overrides and its usage.
type Quota struct {
	TenantID  string
	Limits    Limits
	Overrides TenantQuota
	Usage     QuotaUsage
}

// effective applies the overrides of q (nil: no row) over the defaults.
func (s *Store) effective(q *TenantQuota) Limits {
	l := s.quotaDefaults
	if q == nil {
		return l
	}
	if q.MaxSites != nil {
		l.MaxSites = *q.MaxSites
	}
	if q.MaxBackups != nil {
		l.MaxBackups = *q.MaxBackups
	}
	if q.MaxBackupBytes != nil {
		l.MaxBackupBytes = *q.MaxBackupBytes
	}
	return l
}

// QuotaCacheTTL is how long a Store reuses a tenant's limits read for the
// accept path without a lock. It only decides whether a tenant is limited at
// all: a limited tenant's limits are read again under its lock, so a quota
// lowered or lifted takes effect at once, and one set on a tenant that had
// none within this time (at once in the process that set it).
const QuotaCacheTTL = 5 * time.Second

// quotaCache holds tenants' effective limits for QuotaCacheTTL.
type quotaCache struct {
	mu      sync.Mutex
	entries map[string]quotaEntry
}

type quotaEntry struct {
	limits  Limits
	expires time.Time
}

// cachedLimits returns the limits of each tenant of ids, read through the
// cache (misses in one query).
func (s *Store) cachedLimits(ctx context.Context, db bun.IDB, ids []string) (map[string]Limits, error) {
	now := time.Now()
	out := make(map[string]Limits, len(ids))
	var missing []string
	s.quotas.mu.Lock()
	for _, id := range ids {
		if e, ok := s.quotas.entries[id]; ok && now.Before(e.expires) {
			out[id] = e.limits
		} else {
			missing = append(missing, id)
		}
	}
	s.quotas.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	fresh, err := s.limitsOf(ctx, db, missing)
	if err != nil {
		return nil, err
	}
	s.quotas.mu.Lock()
	if s.quotas.entries == nil || len(s.quotas.entries) > 100_000 {
		s.quotas.entries = make(map[string]quotaEntry)
	}
	for id, l := range fresh {
		out[id] = l
		s.quotas.entries[id] = quotaEntry{limits: l, expires: now.Add(QuotaCacheTTL)}
	}
	s.quotas.mu.Unlock()
	return out, nil
}

// forgetLimits drops a tenant's cached limits (its quota changed here).
func (s *Store) forgetLimits(tenantID string) {
	s.quotas.mu.Lock()
	delete(s.quotas.entries, tenantID)
	s.quotas.mu.Unlock()
}

// limitsOf reads the effective limits of each tenant of ids.
func (s *Store) limitsOf(ctx context.Context, db bun.IDB, ids []string) (map[string]Limits, error) {
	var rows []TenantQuota
	if err := db.NewSelect().Model(&rows).Where("tenant_id IN (?)", bun.In(ids)).Scan(ctx); err != nil {
		return nil, fmt.Errorf("read quotas: %w", err)
	}
	out := make(map[string]Limits, len(ids))
	for _, id := range ids {
		out[id] = s.quotaDefaults
	}
	for i := range rows {
		out[rows[i].TenantID] = s.effective(&rows[i])
	}
	return out, nil
}

// lockTenants takes the row locks of the tenants of ids (sorted, so two
// transactions cannot deadlock), serialising the quota checks of one tenant's
// concurrent mutations on PostgreSQL. SQLite needs none: its pool's single
// connection serialises every transaction.
func (s *Store) lockTenants(ctx context.Context, tx bun.Tx, ids []string) error {
	if !s.pg {
		return nil
	}
	var got []string
	if err := tx.NewSelect().Table("tenants").Column("id").Where("id IN (?)", bun.In(ids)).
		OrderExpr("id").For("UPDATE").Scan(ctx, &got); err != nil {
		return fmt.Errorf("lock tenants: %w", err)
	}
	return nil
}

// liveSites counts the live sites of each tenant of ids.
func liveSites(ctx context.Context, db bun.IDB, ids []string) (map[string]int64, error) {
	var rows []struct {
		TenantID string `bun:"tenant_id"`
		N        int64  `bun:"n"`
	}
	if err := db.NewSelect().Table("sites").ColumnExpr("tenant_id, COUNT(*) AS n").
		Where("tenant_id IN (?) AND deleted_at IS NULL", bun.In(ids)).Group("tenant_id").Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("count sites: %w", err)
	}
	out := make(map[string]int64, len(ids))
	for _, r := range rows {
		out[r.TenantID] = r.N
	}
	return out, nil
}

// admitSites decides, inside tx, which of items (site creations) fit their
// tenants' site quotas, in order: it returns a QuotaError for each one that
// does not (nil for the others). Tenants with a limit are locked first, so
// concurrent transactions count one after another.
func (s *Store) admitSites(ctx context.Context, tx bun.Tx, items []batchItem) ([]error, error) {
	var ids []string
	seen := map[string]bool{}
	for _, it := range items {
		if !seen[it.p.TenantID] {
			seen[it.p.TenantID] = true
			ids = append(ids, it.p.TenantID)
		}
	}
	cached, err := s.cachedLimits(ctx, tx, ids)
	if err != nil {
		return nil, err
	}
	var limited []string
	for _, id := range ids {
		if cached[id].MaxSites > 0 {
			limited = append(limited, id)
		}
	}
	errs := make([]error, len(items))
	if len(limited) == 0 {
		return errs, nil // the hot path: no tenant of the batch is limited
	}
	if err := s.lockTenants(ctx, tx, limited); err != nil {
		return nil, err
	}
	// Under the lock, the limits as they are now, not as cached.
	limits, err := s.limitsOf(ctx, tx, limited)
	if err != nil {
		return nil, err
	}
	used, err := liveSites(ctx, tx, limited)
	if err != nil {
		return nil, err
	}
	for i, it := range items {
		max := limits[it.p.TenantID].MaxSites // 0 also for unlimited tenants, absent here
		if max == 0 {
			continue
		}
		if used[it.p.TenantID] >= max {
			errs[i] = fmt.Errorf("create site %s: %w", it.p.Domain, &QuotaError{Quota: QuotaSites, Limit: max, Used: used[it.p.TenantID]})
			continue
		}
		used[it.p.TenantID]++
	}
	return errs, nil
}

// backupUsage counts a tenant's backups (pending, running, completed) and the
// bytes of its completed ones.
func backupUsage(ctx context.Context, db bun.IDB, tenantID string) (count, bytes int64, err error) {
	var row struct {
		N     int64 `bun:"n"`
		Bytes int64 `bun:"bytes"`
	}
	err = db.NewSelect().Table("site_backups").
		ColumnExpr("COUNT(*) AS n").
		ColumnExpr("COALESCE(SUM(CASE WHEN status = ? THEN size_bytes ELSE 0 END), 0) AS bytes", BackupStatusCompleted).
		Where("tenant_id = ? AND status IN (?)", tenantID, bun.In([]string{BackupStatusPending, BackupStatusRunning, BackupStatusCompleted})).
		Scan(ctx, &row)
	if err != nil {
		return 0, 0, fmt.Errorf("count backups of tenant %s: %w", tenantID, err)
	}
	return row.N, row.Bytes, nil
}

// admitBackup checks, inside tx and under the tenant's lock, that one more
// backup fits the tenant's backup quotas: the count, and the bytes of its
// completed backups (a backup is refused once they reach the limit; the one
// that crosses it completes, since its size is unknown until then).
func (s *Store) admitBackup(ctx context.Context, tx bun.Tx, tenantID string) error {
	limits, err := s.limitsOf(ctx, tx, []string{tenantID})
	if err != nil {
		return err
	}
	l := limits[tenantID]
	if l.MaxBackups == 0 && l.MaxBackupBytes == 0 {
		return nil
	}
	if err := s.lockTenants(ctx, tx, []string{tenantID}); err != nil {
		return err
	}
	n, bytes, err := backupUsage(ctx, tx, tenantID)
	if err != nil {
		return err
	}
	if l.MaxBackups > 0 && n >= l.MaxBackups {
		return &QuotaError{Quota: QuotaBackups, Limit: l.MaxBackups, Used: n}
	}
	if l.MaxBackupBytes > 0 && bytes >= l.MaxBackupBytes {
		return &QuotaError{Quota: QuotaBackupBytes, Limit: l.MaxBackupBytes, Used: bytes}
	}
	return nil
}

// SetQuota replaces a tenant's overrides (a nil field: the default) and
// returns its quota. An unknown tenant is ErrNotFound.
func (s *Store) SetQuota(ctx context.Context, q TenantQuota) (*Quota, error) {
	if _, err := s.GetTenant(ctx, q.TenantID); err != nil {
		return nil, err
	}
	q.UpdatedAt = s.nowUTC()
	defer s.forgetLimits(q.TenantID)
	if _, err := s.db.NewInsert().Model(&q).
		On("CONFLICT (tenant_id) DO UPDATE").
		Set("max_sites = EXCLUDED.max_sites").
		Set("max_backups = EXCLUDED.max_backups").
		Set("max_backup_bytes = EXCLUDED.max_backup_bytes").
		Set("updated_at = EXCLUDED.updated_at").
		Exec(ctx); err != nil {
		return nil, fmt.Errorf("set quota of tenant %s: %w", q.TenantID, err)
	}
	return s.GetQuota(ctx, q.TenantID)
}

// GetQuota returns a tenant's effective limits, overrides and usage. An
// unknown tenant is ErrNotFound.
func (s *Store) GetQuota(ctx context.Context, tenantID string) (*Quota, error) {
	if _, err := s.GetTenant(ctx, tenantID); err != nil {
		return nil, err
	}
	out := &Quota{TenantID: tenantID, Overrides: TenantQuota{TenantID: tenantID}}
	err := s.db.NewSelect().Model(&out.Overrides).Where("tenant_id = ?", tenantID).Scan(ctx)
	switch {
	case err == nil:
		out.Limits = s.effective(&out.Overrides)
	case errors.Is(notFound(err, "quota", tenantID), ErrNotFound):
		out.Limits = s.effective(nil)
	default:
		return nil, fmt.Errorf("read quota of tenant %s: %w", tenantID, err)
	}
	sites, err := liveSites(ctx, s.db, []string{tenantID})
	if err != nil {
		return nil, err
	}
	out.Usage.Sites = sites[tenantID]
	if out.Usage.Backups, out.Usage.BackupBytes, err = backupUsage(ctx, s.db, tenantID); err != nil {
		return nil, err
	}
	return out, nil
}
