package models_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// usageWrite is a record of tenantID for the hour at start, with its event.
func usageWrite(tenantID, metric, siteID string, qty int64, start time.Time) models.UsageWrite {
	id := "evt-" + tenantID + "-" + metric + "-" + siteID + "-" + start.Format(time.RFC3339)
	return models.UsageWrite{
		Record: models.UsageRecord{TenantID: tenantID, Metric: metric, SiteID: siteID, Quantity: qty, Unit: "byte",
			PeriodStart: start, PeriodEnd: start.Add(time.Hour)},
		Event: models.OutboxEvent{EventID: id, TenantID: tenantID, Topic: "usage.v1", Type: "usage.recorded.v1",
			Source: "/chom/usage", Subject: metric, Data: "{}"},
	}
}

// servedSite creates a site on domain, places it on v and completes its
// provision at the store's current time.
func servedSite(t *testing.T, s *models.Store, tenantID, domain string, v *models.VPSServer) string {
	t.Helper()
	siteID, op := placedSite(t, s, tenantID, domain, v)
	if _, err := s.StartOperation(t.Context(), op.ID); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.CompleteProvision(t.Context(), op.ID, siteID, models.ProvisionedSite{}, nil, nil); err != nil || !ok {
		t.Fatalf("CompleteProvision = %v, %v", ok, err)
	}
	return siteID
}

func allUsage(t *testing.T, db bun.IDB) []models.UsageRecord {
	t.Helper()
	var out []models.UsageRecord
	if err := db.NewSelect().Model(&out).OrderExpr("id").Scan(t.Context()); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRecordUsageIsFinal(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		s, clk := setupClock(t, db)
		ten := tenant(t, s, "metered")
		siteA, siteB := models.NewID(models.PrefixSite), models.NewID(models.PrefixSite)
		hour := epoch.Add(-time.Hour)
		writes := func(disk int64) []models.UsageWrite {
			return []models.UsageWrite{
				usageWrite(ten, "disk_bytes", siteA, disk, hour),
				usageWrite(ten, "disk_bytes", siteB, 20, hour),
				usageWrite(ten, "disk_bytes", "", disk+20, hour),
			}
		}
		got, err := s.RecordUsage(t.Context(), writes(10))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 {
			t.Fatalf("first RecordUsage inserted %d records, want 3 (a total and two sites share metric and period)", len(got))
		}
		before := allUsage(t, db)
		outbox := count(t, db, "outbox_events", "")
		if outbox != 3 {
			t.Fatalf("outbox rows = %d, want 3", outbox)
		}

		// Run again, later, with different measurements: the period is final.
		clk.Advance(time.Minute)
		got, err = s.RecordUsage(t.Context(), writes(99))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 0 {
			t.Errorf("second RecordUsage inserted %+v, want nothing", got)
		}
		if diff := cmp.Diff(before, allUsage(t, db)); diff != "" {
			t.Errorf("records changed on re-run (-before +after):\n%s", diff)
		}
		if n := count(t, db, "outbox_events", ""); n != outbox {
			t.Errorf("outbox rows after re-run = %d, want %d", n, outbox)
		}
		recorded, err := s.UsagePeriodRecorded(t.Context(), ten, hour)
		if err != nil || !recorded {
			t.Errorf("UsagePeriodRecorded(recorded hour) = %v, %v; want true", recorded, err)
		}
		recorded, err = s.UsagePeriodRecorded(t.Context(), ten, epoch)
		if err != nil || recorded {
			t.Errorf("UsagePeriodRecorded(next hour) = %v, %v; want false", recorded, err)
		}

		// A batch where one record is new writes that one and its event only.
		got, err = s.RecordUsage(t.Context(), append(writes(5), usageWrite(ten, "bandwidth_bytes", "", 7, hour)))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Metric != "bandwidth_bytes" || got[0].Quantity != 7 {
			t.Errorf("RecordUsage with one new record inserted %+v", got)
		}
		if n := count(t, db, "outbox_events", ""); n != outbox+1 {
			t.Errorf("outbox rows = %d, want %d", n, outbox+1)
		}

		// A bad record writes nothing at all.
		bad := usageWrite(ten, "disk_bytes", "", -1, epoch)
		if _, err := s.RecordUsage(t.Context(), []models.UsageWrite{usageWrite(ten, "x", "", 1, epoch), bad}); err == nil {
			t.Error("RecordUsage with a negative quantity succeeded")
		}
		if n := count(t, db, "usage_records", "period_start = ?", epoch); n != 0 {
			t.Errorf("%d records written by a failed RecordUsage", n)
		}
	})
}

func TestUsageInputs(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		s, clk := setupClock(t, db)
		vps := registerVPS(t, s, "usage-vps.example", 10)
		a, b, c := tenant(t, s, "a"), tenant(t, s, "b"), tenant(t, s, "c")
		// At epoch: a has one active site; b's site is created but never provisioned.
		siteA1 := servedSite(t, s, a, "a1.example", vps)
		createSite(t, s, b, "b1.example")
		clk.Advance(30 * time.Minute)
		siteA2 := servedSite(t, s, a, "a2.example", vps) // active from epoch+30m
		clk.Advance(time.Hour)
		_ = c // c has no site at all

		at := func(d time.Duration) time.Time { return epoch.Add(d) }
		ids := func(sites []models.ActiveSite) []string {
			var out []string
			for _, st := range sites {
				out = append(out, st.Site.ID)
				if st.Server == nil || st.Site.VPSID == nil || st.Server.ID != *st.Site.VPSID {
					t.Errorf("site %s: server %+v, want its VPS", st.Site.ID, st.Server)
				}
			}
			return out
		}
		for _, tc := range []struct {
			at   time.Duration
			want []string
		}{
			{0, nil}, // created and provisioned at epoch: not before it
			{time.Minute, []string{siteA1}},
			{31 * time.Minute, []string{siteA1, siteA2}},
		} {
			got, err := s.ActiveSitesAt(t.Context(), a, at(tc.at))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, ids(got)); diff != "" {
				t.Errorf("ActiveSitesAt(epoch+%s) (-want +got):\n%s", tc.at, diff)
			}
		}
		if got, err := s.ActiveSitesAt(t.Context(), b, at(time.Hour)); err != nil || len(got) != 0 {
			t.Errorf("ActiveSitesAt of a tenant with only a pending site = %v, %v; want none", got, err)
		}

		tenants, err := s.MeteringTenants(t.Context(), at(time.Minute), at(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		want := []string{a, b}
		if a > b {
			want = []string{b, a}
		}
		if diff := cmp.Diff(want, tenants); diff != "" {
			t.Errorf("MeteringTenants (-want +got):\n%s", diff)
		}

		// Backups: completed before the instant, not failed, not expired.
		done := at(10 * time.Minute)
		later := at(2 * time.Hour)
		expired := at(20 * time.Minute)
		for i, bk := range []models.SiteBackup{
			{Status: "completed", SizeBytes: 1000, CompletedAt: &done},
			{Status: "completed", SizeBytes: 20, CompletedAt: &done, ExpiresAt: &later},
			{Status: "completed", SizeBytes: 300, CompletedAt: &later},                       // after the instant
			{Status: "failed", SizeBytes: 4000, CompletedAt: &done},                          // failed
			{Status: "completed", SizeBytes: 50000, CompletedAt: &done, ExpiresAt: &expired}, // expired
			{Status: "running", SizeBytes: 600000},                                           // not complete
		} {
			bk.ID, bk.TenantID, bk.SiteID, bk.BackupType, bk.RetentionDays = models.NewID(models.PrefixBackup), a, siteA1, "full", 7
			bk.CreatedAt = at(time.Duration(i) * time.Second)
			if _, err := db.NewInsert().Model(&bk).Exec(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := s.BackupBytesAt(t.Context(), a, at(time.Hour)); err != nil || n != 1020 {
			t.Errorf("BackupBytesAt = %d, %v; want 1020", n, err)
		}
		if n, err := s.BackupBytesAt(t.Context(), b, at(time.Hour)); err != nil || n != 0 {
			t.Errorf("BackupBytesAt of a tenant with no backups = %d, %v; want 0", n, err)
		}
	})
}

func TestListUsage(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		s := setup(t, db)
		a, b := tenant(t, s, "a"), tenant(t, s, "b")
		h0, h1, h2 := epoch, epoch.Add(time.Hour), epoch.Add(2*time.Hour)
		site := models.NewID(models.PrefixSite)
		var all []models.UsageWrite
		for _, h := range []time.Time{h0, h1, h2} {
			all = append(all, usageWrite(a, "disk_bytes", "", 1, h), usageWrite(a, "disk_bytes", site, 1, h),
				usageWrite(a, "bandwidth_bytes", "", 2, h), usageWrite(b, "disk_bytes", "", 3, h))
		}
		if _, err := s.RecordUsage(t.Context(), all); err != nil {
			t.Fatal(err)
		}
		list := func(f models.UsageFilter) []models.UsageRecord {
			t.Helper()
			got, err := s.ListUsage(t.Context(), a, f)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range got {
				if r.TenantID != a {
					t.Fatalf("ListUsage of tenant a returned %+v", r)
				}
			}
			return got
		}
		if n := len(list(models.UsageFilter{})); n != 9 {
			t.Errorf("all records of a = %d, want 9", n)
		}
		if n := len(list(models.UsageFilter{Metric: "disk_bytes"})); n != 6 {
			t.Errorf("disk_bytes records = %d, want 6", n)
		}
		if got := list(models.UsageFilter{From: h1, To: h2}); len(got) != 3 || !got[0].PeriodStart.Equal(h1) {
			t.Errorf("records of [h1, h2] = %+v, want the 3 of h1", got)
		}
		if n := len(list(models.UsageFilter{From: h1})); n != 6 {
			t.Errorf("records from h1 = %d, want 6", n)
		}
		// Pages: newest first, no record twice, none missed.
		seen := map[string]bool{}
		cursor := ""
		for range 10 {
			page := list(models.UsageFilter{Cursor: cursor, Limit: 4})
			for i, r := range page {
				if seen[r.ID] {
					t.Fatalf("record %s on two pages", r.ID)
				}
				seen[r.ID] = true
				if i > 0 && page[i-1].ID < r.ID {
					t.Fatalf("page not newest first: %s before %s", page[i-1].ID, r.ID)
				}
			}
			if len(page) < 4 {
				break
			}
			cursor = page[len(page)-1].ID
		}
		if len(seen) != 9 {
			t.Errorf("paging saw %d records, want 9", len(seen))
		}
	})
}
