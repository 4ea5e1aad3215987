package models_test

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// The status counts are platform-wide (both tenants' rows), report every site
// status (zeros included) and only the backup statuses present.
func TestCountByStatus(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		a, b := tenant(t, s, "count-a"), tenant(t, s, "count-b")
		sites := []struct{ tenant, status string }{
			{a, models.SiteStatusActive}, {a, models.SiteStatusActive}, {b, models.SiteStatusActive},
			{b, models.SiteStatusFailed}, {a, models.SiteStatusPending},
		}
		for i, st := range sites {
			row := models.Site{ID: fmt.Sprintf("site_count_%d", i), TenantID: st.tenant, Domain: fmt.Sprintf("c%d.example", i),
				SiteType: "html", Status: st.status, CreatedAt: epoch, UpdatedAt: epoch}
			if _, err := db.NewInsert().Model(&row).Exec(ctx); err != nil {
				t.Fatal(err)
			}
		}
		for i, st := range []string{"completed", "completed", "failed"} {
			row := models.SiteBackup{ID: fmt.Sprintf("bak_count_%d", i), TenantID: b, SiteID: "site_count_3", BackupType: "full",
				Status: st, RetentionDays: 7, CreatedAt: epoch}
			if _, err := db.NewInsert().Model(&row).Exec(ctx); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.CountSitesByStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]int{models.SiteStatusActive: 3, models.SiteStatusFailed: 1, models.SiteStatusPending: 1,
			models.SiteStatusProvisioning: 0, models.SiteStatusDeprovisioning: 0, models.SiteStatusDeleted: 0}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("CountSitesByStatus (-want +got):\n%s", diff)
		}
		gotB, err := s.CountBackupsByStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wantB := map[string]int{models.BackupStatusCompleted: 2, models.BackupStatusFailed: 1, models.BackupStatusPending: 0,
			models.BackupStatusRunning: 0, models.BackupStatusDeleting: 0, models.BackupStatusDeleted: 0}
		if diff := cmp.Diff(wantB, gotB); diff != "" {
			t.Errorf("CountBackupsByStatus (-want +got):\n%s", diff)
		}
	})
}
