package models

import (
	"context"
	"fmt"
)

// siteStatuses are every status a site can have, so counts report zeros too.
var siteStatuses = []string{SiteStatusPending, SiteStatusProvisioning, SiteStatusActive, SiteStatusFailed,
	SiteStatusDeprovisioning, SiteStatusDeleted}

// backupStatuses are every status a backup can have, so counts report zeros too.
var backupStatuses = []string{BackupStatusPending, BackupStatusRunning, BackupStatusCompleted, BackupStatusFailed,
	BackupStatusDeleting, BackupStatusDeleted}

// CountSitesByStatus counts sites by status across every tenant, for the
// platform's operational metrics (chom_sites). It is deliberately not
// tenant-scoped: it is never served to an API caller, and the figures carry no
// tenant. Every known status is in the map, zero when no site has it. One
// GROUP BY over sites; callers cache it (the metrics collector keeps it 15s).
func (s *Store) CountSitesByStatus(ctx context.Context) (map[string]int, error) {
	return s.countByStatus(ctx, "sites", siteStatuses)
}

// CountBackupsByStatus counts site backups by status across every tenant, for
// the platform's operational metrics (chom_backups); like
// CountSitesByStatus it is not tenant-scoped and never served to a tenant.
// Every known status is in the map, zero when no backup has it, so the gauge
// has its documented series from the first scrape.
func (s *Store) CountBackupsByStatus(ctx context.Context) (map[string]int, error) {
	return s.countByStatus(ctx, "site_backups", backupStatuses)
}

// countByStatus counts the rows of table by status; every status of known is
// in the map, zero when no row has it.
func (s *Store) countByStatus(ctx context.Context, table string, known []string) (map[string]int, error) {
	var rows []struct {
		Status string `bun:"status"`
		N      int    `bun:"n"`
	}
	err := s.db.NewSelect().Table(table).ColumnExpr("status").ColumnExpr("count(*) AS n").
		Group("status").Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("count %s by status: %w", table, err)
	}
	out := make(map[string]int, len(known))
	for _, st := range known {
		out[st] = 0
	}
	for _, r := range rows {
		out[r.Status] = r.N
	}
	return out, nil
}
