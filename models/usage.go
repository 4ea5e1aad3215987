package models

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// UsageWrite is one usage record to write and the outbox row of its event.
type UsageWrite struct {
	Record UsageRecord
	Event  OutboxEvent
}

// RecordUsage writes the usage records of one metering run in one transaction,
// each with its event. A period already recorded is final: a record whose
// (tenant, metric, site, period start) exists is left as it is (INSERT … ON
// CONFLICT DO NOTHING: same row, same created_at and updated_at) and its event
// is not written again; only a record actually inserted gets its outbox row, in
// the same transaction. It returns the records it inserted. Nothing is written
// when it fails.
func (s *Store) RecordUsage(ctx context.Context, writes []UsageWrite) ([]UsageRecord, error) {
	for i, w := range writes {
		r := w.Record
		if r.TenantID == "" || r.Metric == "" || r.Unit == "" || r.Quantity < 0 || !r.PeriodEnd.After(r.PeriodStart) {
			return nil, fmt.Errorf("record usage: record %d (%s %s): tenant, metric, unit, a non-negative quantity and a non-empty period are required",
				i, r.TenantID, r.Metric)
		}
	}
	now := s.nowUTC()
	var inserted []UsageRecord
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		inserted = nil
		var evs []OutboxEvent
		for _, w := range writes {
			r := w.Record
			r.ID = NewID(PrefixUsage)
			r.PeriodStart, r.PeriodEnd = r.PeriodStart.UTC(), r.PeriodEnd.UTC()
			r.CreatedAt, r.UpdatedAt = now, now
			res, err := tx.NewInsert().Model(&r).
				On("CONFLICT (tenant_id, metric, site_id, period_start) DO NOTHING").Exec(ctx)
			if err != nil {
				return fmt.Errorf("insert usage %s %s %s: %w", r.TenantID, r.Metric, r.SiteID, err)
			}
			if affected(res) == 0 {
				continue // recorded by an earlier run: final
			}
			inserted = append(inserted, r)
			evs = append(evs, w.Event)
		}
		return s.insertEvents(ctx, tx, evs, now)
	})
	if err != nil {
		return nil, fmt.Errorf("record %d usage records: %w", len(writes), err)
	}
	return inserted, nil
}

// UsagePeriodRecorded reports whether the tenant already has records for the
// period starting at start, so a re-run can skip measuring altogether.
func (s *Store) UsagePeriodRecorded(ctx context.Context, tenantID string, start time.Time) (bool, error) {
	ok, err := s.db.NewSelect().Model((*UsageRecord)(nil)).
		Where("tenant_id = ? AND period_start = ?", tenantID, start.UTC()).Exists(ctx)
	if err != nil {
		return false, fmt.Errorf("usage of tenant %s at %s: %w", tenantID, start.UTC().Format(time.RFC3339), err)
	}
	return ok, nil
}

// MeteringTenants returns, in ID order, the tenants that had a site at some time
// in [start, end): created before end and not deleted before start.
func (s *Store) MeteringTenants(ctx context.Context, start, end time.Time) ([]string, error) {
	var ids []string
	err := s.db.NewSelect().Model((*Site)(nil)).ColumnExpr("DISTINCT tenant_id").
		Where("created_at < ?", end.UTC()).
		Where("deleted_at IS NULL OR deleted_at >= ?", start.UTC()).
		OrderExpr("tenant_id").Scan(ctx, &ids)
	if err != nil {
		return nil, fmt.Errorf("tenants to meter for %s: %w", start.UTC().Format(time.RFC3339), err)
	}
	return ids, nil
}

// ActiveSite is a site that was active at an instant, with the server it lives
// on (Server is nil once the site has none, e.g. deprovisioned since).
type ActiveSite struct {
	Site   Site
	Server *VPSServer
}

// ActiveSitesAt returns the tenant's sites that were active at the instant at,
// in ID order: created before at, not deleted by at, and whose site.provision
// operation had succeeded before at. The first is read from the operation's
// finished_at, because a site's status says only what it is now.
func (s *Store) ActiveSitesAt(ctx context.Context, tenantID string, at time.Time) ([]ActiveSite, error) {
	at = at.UTC()
	var sites []Site
	err := s.db.NewSelect().Model(&sites).
		Where("tenant_id = ?", tenantID).
		Where("created_at < ?", at).
		Where("deleted_at IS NULL OR deleted_at >= ?", at).
		Where("EXISTS (SELECT 1 FROM operations AS o WHERE o.tenant_id = site.tenant_id AND o.target_type = 'site'"+
			" AND o.target_id = site.id AND o.op_type = ? AND o.status = ? AND o.finished_at < ?)",
			OpTypeSiteProvision, OpSucceeded, at).
		OrderExpr("id").Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("active sites of tenant %s at %s: %w", tenantID, at.Format(time.RFC3339), err)
	}
	var vpsIDs []string
	for _, st := range sites {
		if st.VPSID != nil {
			vpsIDs = append(vpsIDs, *st.VPSID)
		}
	}
	servers := map[string]*VPSServer{}
	if len(vpsIDs) > 0 {
		var vs []VPSServer
		if err := s.db.NewSelect().Model(&vs).Where("id IN (?)", bun.In(vpsIDs)).Scan(ctx); err != nil {
			return nil, fmt.Errorf("servers of tenant %s's sites: %w", tenantID, err)
		}
		for i := range vs {
			servers[vs[i].ID] = &vs[i]
		}
	}
	out := make([]ActiveSite, len(sites))
	for i, st := range sites {
		out[i].Site = st
		if st.VPSID != nil {
			out[i].Server = servers[*st.VPSID]
		}
	}
	return out, nil
}

// BackupBytesAt returns the total size of the tenant's backups that existed at
// the instant at: completed before at, not failed or deleted, and not expired by
// at. It is 0 for a tenant with no backups.
func (s *Store) BackupBytesAt(ctx context.Context, tenantID string, at time.Time) (int64, error) {
	at = at.UTC()
	var total int64
	err := s.db.NewSelect().Model((*SiteBackup)(nil)).ColumnExpr("COALESCE(SUM(size_bytes), 0)").
		Where("tenant_id = ?", tenantID).
		Where("completed_at IS NOT NULL AND completed_at < ?", at).
		Where("status NOT IN (?)", bun.In([]string{"failed", "deleted"})).
		Where("expires_at IS NULL OR expires_at > ?", at).
		Scan(ctx, &total)
	if err != nil {
		return 0, fmt.Errorf("backup bytes of tenant %s at %s: %w", tenantID, at.Format(time.RFC3339), err)
	}
	return total, nil
}

// UsageFilter narrows a usage listing. The zero value lists every record.
type UsageFilter struct {
	Metric string    // one metric, or "" for all
	From   time.Time // records whose period starts at or after From (zero: no bound)
	To     time.Time // records whose period ends at or before To (zero: no bound)
	Cursor string    // records with IDs below this one (the previous page's last ID)
	Limit  int       // page size; 0 means 100
}

// ListUsage returns a page of the tenant's usage records, newest first.
func (s *Store) ListUsage(ctx context.Context, tenantID string, f UsageFilter) ([]UsageRecord, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	var out []UsageRecord
	q := s.db.NewSelect().Model(&out).Where("tenant_id = ?", tenantID).OrderExpr("id DESC").Limit(int64(f.Limit))
	if f.Metric != "" {
		q = q.Where("metric = ?", f.Metric)
	}
	if !f.From.IsZero() {
		q = q.Where("period_start >= ?", f.From.UTC())
	}
	if !f.To.IsZero() {
		q = q.Where("period_end <= ?", f.To.UTC())
	}
	if f.Cursor != "" {
		q = q.Where("id < ?", f.Cursor)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("list usage of tenant %s: %w", tenantID, err)
	}
	return out, nil
}
