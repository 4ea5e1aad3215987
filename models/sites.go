package models

import (
	"context"
	"fmt"
)

// GetSite returns the tenant's site with id. Another tenant's site is ErrNotFound.
func (s *Store) GetSite(ctx context.Context, tenantID, id string) (*Site, error) {
	site := new(Site)
	err := s.db.NewSelect().Model(site).Where("id = ? AND tenant_id = ?", id, tenantID).Scan(ctx)
	if err != nil {
		return nil, notFound(err, "site", id)
	}
	return site, nil
}

// SiteByID returns a site whatever its tenant: for workers, which act on IDs taken
// from the database, never from a request.
func (s *Store) SiteByID(ctx context.Context, id string) (*Site, error) {
	site := new(Site)
	if err := s.db.NewSelect().Model(site).Where("id = ?", id).Scan(ctx); err != nil {
		return nil, notFound(err, "site", id)
	}
	return site, nil
}

// SiteFilter narrows a site listing. The zero value lists live (not deleted) sites.
type SiteFilter struct {
	Status string // one status, or "" for every status but deleted
	Cursor string // list sites with IDs below this one (the previous page's last ID)
	Limit  int
}

// ListSites returns a page of the tenant's sites, newest first.
func (s *Store) ListSites(ctx context.Context, tenantID string, f SiteFilter) ([]Site, error) {
	var out []Site
	q := s.db.NewSelect().Model(&out).Where("tenant_id = ?", tenantID).OrderExpr("id DESC").Limit(int64(f.Limit))
	if f.Status != "" {
		q = q.Where("status = ?", f.Status)
	} else {
		q = q.Where("status <> ?", SiteStatusDeleted)
	}
	if f.Cursor != "" {
		q = q.Where("id < ?", f.Cursor)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("list sites of tenant %s: %w", tenantID, err)
	}
	return out, nil
}

// CountSitesOnVPS returns how many live sites are bound to a server.
func (s *Store) CountSitesOnVPS(ctx context.Context, vpsID string) (int, error) {
	n, err := s.db.NewSelect().Model((*Site)(nil)).
		Where("vps_id = ? AND deleted_at IS NULL", vpsID).Count(ctx)
	if err != nil {
		return 0, fmt.Errorf("count sites on vps %s: %w", vpsID, err)
	}
	return int(n), nil
}

// ActiveSiteIDs returns up to limit IDs of active sites on a server, in ID
// order, after the ID after ("" for the first page): the pages a fleet-wide
// sweep walks.
func (s *Store) ActiveSiteIDs(ctx context.Context, after string, limit int) ([]string, error) {
	var ids []string
	q := s.db.NewSelect().Model((*Site)(nil)).Column("id").
		Where("status = ?", SiteStatusActive).Where("vps_id IS NOT NULL")
	if after != "" {
		q = q.Where("id > ?", after)
	}
	if err := q.OrderExpr("id").Limit(int64(limit)).Scan(ctx, &ids); err != nil {
		return nil, fmt.Errorf("active sites after %q: %w", after, err)
	}
	return ids, nil
}
