package models_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// placedSite creates a site on domain and places it on v.
func placedSite(t *testing.T, s *models.Store, tenantID, domain string, v *models.VPSServer) (string, *models.Operation) {
	t.Helper()
	siteID, op := createSite(t, s, tenantID, domain)
	got, err := s.AssignVPS(t.Context(), siteID)
	if err != nil || got.ID != v.ID {
		t.Fatalf("AssignVPS(%s) = %+v, %v; want %s", domain, got, err, v.ID)
	}
	return siteID, op
}

// outboxIDs returns the event IDs in the outbox, in insertion order.
func outboxIDs(t *testing.T, db bun.IDB) []string {
	t.Helper()
	var ids []string
	if err := db.NewSelect().Table("outbox_events").Column("event_id").OrderExpr("id ASC").Scan(t.Context(), &ids); err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	return ids
}

func TestStartOperation(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, c := setupClock(t, db)
		siteID, op := createSite(t, s, tenant(t, s, "acme"), "start.example")

		c.Advance(time.Minute)
		got, err := s.StartOperation(ctx, op.ID)
		if err != nil {
			t.Fatalf("StartOperation: %v", err)
		}
		started := epoch.Add(time.Minute)
		if got.Status != models.OpRunning || got.Attempts != 1 || got.StartedAt == nil || !got.StartedAt.Equal(started) {
			t.Fatalf("after first start: status %s attempts %d started %v", got.Status, got.Attempts, got.StartedAt)
		}

		c.Advance(time.Minute) // a retry: attempts count, started_at stays
		got, err = s.StartOperation(ctx, op.ID)
		if err != nil {
			t.Fatalf("second StartOperation: %v", err)
		}
		if got.Status != models.OpRunning || got.Attempts != 2 || !got.StartedAt.Equal(started) || !got.UpdatedAt.Equal(started.Add(time.Minute)) {
			t.Fatalf("after retry: status %s attempts %d started %v updated %v", got.Status, got.Attempts, got.StartedAt, got.UpdatedAt)
		}

		if ok, err := s.CompleteProvision(ctx, op.ID, siteID, models.ProvisionedSite{}, nil, nil); err != nil || !ok {
			t.Fatalf("CompleteProvision = %v, %v", ok, err)
		}
		done := opRow(t, s, op.ID)
		c.Advance(time.Minute)
		got, err = s.StartOperation(ctx, op.ID)
		if err != nil {
			t.Fatalf("StartOperation of a finished operation: %v", err)
		}
		if diff := cmp.Diff(done, got); diff != "" {
			t.Fatalf("StartOperation changed a finished operation (-before +after):\n%s", diff)
		}

		if _, err := s.StartOperation(ctx, "op_unknown"); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("StartOperation(unknown) = %v, want ErrNotFound", err)
		}
	})
}

func TestSetProgress(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		siteID, op := createSite(t, s, tenant(t, s, "acme"), "progress.example")
		progress := func() int { t.Helper(); return opRow(t, s, op.ID).Progress }

		if err := s.SetProgress(ctx, op.ID, 10); err != nil {
			t.Fatal(err)
		}
		if p := progress(); p != 0 {
			t.Fatalf("progress of a pending operation = %d, want 0 (only running operations move)", p)
		}
		if _, err := s.StartOperation(ctx, op.ID); err != nil {
			t.Fatal(err)
		}
		for _, step := range []struct{ set, want int }{{30, 30}, {20, 30}, {30, 30}, {0, 30}, {60, 60}, {99, 99}} {
			if err := s.SetProgress(ctx, op.ID, step.set); err != nil {
				t.Fatalf("SetProgress(%d): %v", step.set, err)
			}
			if p := progress(); p != step.want {
				t.Fatalf("after SetProgress(%d): progress %d, want %d", step.set, p, step.want)
			}
		}
		if ok, err := s.CompleteProvision(ctx, op.ID, siteID, models.ProvisionedSite{}, nil, nil); err != nil || !ok {
			t.Fatalf("CompleteProvision = %v, %v", ok, err)
		}
		if err := s.SetProgress(ctx, op.ID, 50); err != nil {
			t.Fatal(err)
		}
		if p := progress(); p != 100 {
			t.Fatalf("progress of a finished operation = %d, want 100", p)
		}
	})
}

func TestCompleteProvision(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, c := setupClock(t, db)
		acme := tenant(t, s, "acme")
		v := registerVPS(t, s, "web.example", 10)
		siteID, op := placedSite(t, s, acme, "done.example", v)
		if _, err := s.StartOperation(ctx, op.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.BeginProvision(ctx, siteID); err != nil {
			t.Fatal(err)
		}
		if st := siteRow(t, s, siteID).Status; st != models.SiteStatusProvisioning {
			t.Fatalf("site status after BeginProvision = %s", st)
		}

		c.Advance(time.Minute)
		now := epoch.Add(time.Minute)
		result := map[string]any{"site_id": siteID, "url": "https://done.example"}
		ps := models.ProvisionedSite{DocumentRoot: "/srv/done/public", SystemUser: "site_done"}
		events := []models.OutboxEvent{event(acme, siteID, "evt-1"), event(acme, siteID, "evt-2")}
		ok, err := s.CompleteProvision(ctx, op.ID, siteID, ps, result, events)
		if err != nil || !ok {
			t.Fatalf("CompleteProvision = %v, %v; want true", ok, err)
		}

		site := siteRow(t, s, siteID)
		if site.Status != models.SiteStatusActive || site.OperationID != nil || site.DocumentRoot != ps.DocumentRoot ||
			site.SystemUser != ps.SystemUser || site.VPSID == nil || *site.VPSID != v.ID || site.DeletedAt != nil {
			t.Errorf("site = %+v", site)
		}
		got := opRow(t, s, op.ID)
		if got.Status != models.OpSucceeded || got.Progress != 100 || got.FinishedAt == nil || !got.FinishedAt.Equal(now) || got.ErrorCode != nil {
			t.Errorf("operation = %+v", got)
		}
		if got.Result == nil {
			t.Fatal("operation result not stored")
		}
		if diff := cmp.Diff(result, decodeJSON[map[string]any](t, *got.Result)); diff != "" {
			t.Errorf("result (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"evt-1", "evt-2"}, outboxIDs(t, db)); diff != "" {
			t.Fatalf("outbox (-want +got):\n%s", diff)
		}
		var ev models.OutboxEvent
		if err := db.NewSelect().Model(&ev).Where("event_id = ?", "evt-1").Scan(ctx); err != nil {
			t.Fatal(err)
		}
		if ev.TenantID != acme || ev.Subject != siteID || ev.Topic != "sites.v1" || ev.PublishedAt != nil ||
			!ev.CreatedAt.Equal(now) || !ev.OccurredAt.Equal(now) {
			t.Errorf("outbox row = %+v", ev)
		}

		// A second completion (a retried task) changes nothing and writes no event.
		c.Advance(time.Minute)
		again := []models.OutboxEvent{event(acme, siteID, "evt-1"), event(acme, siteID, "evt-3")}
		ok, err = s.CompleteProvision(ctx, op.ID, siteID, models.ProvisionedSite{DocumentRoot: "/other"}, "x", again)
		if err != nil || ok {
			t.Fatalf("second CompleteProvision = %v, %v; want false, nil", ok, err)
		}
		if diff := cmp.Diff(got, opRow(t, s, op.ID)); diff != "" {
			t.Errorf("second completion changed the operation (-before +after):\n%s", diff)
		}
		if diff := cmp.Diff(site, siteRow(t, s, siteID)); diff != "" {
			t.Errorf("second completion changed the site (-before +after):\n%s", diff)
		}
		if n := count(t, db, "outbox_events", ""); n != 2 {
			t.Fatalf("%d outbox rows after a second completion, want 2", n)
		}
		if n := siteCount(t, db, v.ID); n != 1 {
			t.Errorf("site_count = %d, want 1 (an active site keeps its slot)", n)
		}
	})
}

// TestFinishOperationDedupesEvents checks that an event ID already in the outbox
// (a job that crashed after committing, then ran again) is kept once.
func TestFinishOperationDedupesEvents(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		acme := tenant(t, s, "acme")
		_, op1 := createSite(t, s, acme, "one.example")
		_, op2 := createSite(t, s, acme, "two.example")
		ok, err := s.FinishOperation(ctx, op1.ID, models.Outcome{Status: models.OpSucceeded},
			[]models.OutboxEvent{event(acme, "s1", "evt-a"), event(acme, "s1", "evt-b")})
		if err != nil || !ok {
			t.Fatalf("FinishOperation = %v, %v", ok, err)
		}
		ok, err = s.FinishOperation(ctx, op2.ID, models.Outcome{Status: models.OpFailed, ErrorCode: "boom", ErrorMessage: "it broke"},
			[]models.OutboxEvent{event(acme, "s1", "evt-b"), event(acme, "s2", "evt-c")})
		if err != nil || !ok {
			t.Fatalf("FinishOperation with a duplicate event = %v, %v", ok, err)
		}
		if diff := cmp.Diff([]string{"evt-a", "evt-b", "evt-c"}, outboxIDs(t, db)); diff != "" {
			t.Fatalf("outbox (-want +got):\n%s", diff)
		}
		got := opRow(t, s, op2.ID)
		if got.Status != models.OpFailed || deref(got.ErrorCode) != `"boom"` || deref(got.ErrorMessage) != `"it broke"` || got.Progress != 0 {
			t.Errorf("failed operation = status %s code %s message %s progress %d", got.Status, deref(got.ErrorCode), deref(got.ErrorMessage), got.Progress)
		}
	})
}

func TestAbandonProvision(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		out        models.Outcome
		wantStatus string
		wantGone   bool
	}{
		{"failed", models.Outcome{Status: models.OpFailed, ErrorCode: "driver", ErrorMessage: "nginx did not reload"}, models.SiteStatusFailed, false},
		{"cancelled", models.Outcome{Status: models.OpCancelled, ErrorCode: "cancelled", ErrorMessage: "cancelled"}, models.SiteStatusDeleted, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testenv.Backends(t, func(t *testing.T, db *bun.DB) {
				ctx := t.Context()
				s, c := setupClock(t, db)
				acme := tenant(t, s, "acme")
				v := registerVPS(t, s, "web.example", 10)
				placedSite(t, s, acme, "neighbour.example", v)
				siteID, op := placedSite(t, s, acme, "doomed.example", v)
				if _, err := s.StartOperation(ctx, op.ID); err != nil {
					t.Fatal(err)
				}
				c.Advance(time.Minute)
				now := epoch.Add(time.Minute)

				for i := range 2 {
					ok, err := s.AbandonProvision(ctx, op.ID, siteID, tc.out, []models.OutboxEvent{event(acme, siteID, "evt-abandon")})
					if err != nil || ok != (i == 0) {
						t.Fatalf("AbandonProvision #%d = %v, %v; want %v", i+1, ok, err, i == 0)
					}
					if n := siteCount(t, db, v.ID); n != 1 {
						t.Fatalf("after AbandonProvision #%d: site_count = %d, want 1 (the neighbour)", i+1, n)
					}
				}
				site := siteRow(t, s, siteID)
				if site.Status != tc.wantStatus || site.VPSID != nil || site.OperationID != nil {
					t.Errorf("site status %s vps %s operation %s; want %s, unbound, no operation",
						site.Status, deref(site.VPSID), deref(site.OperationID), tc.wantStatus)
				}
				if tc.wantGone != (site.DeletedAt != nil) || (tc.wantGone && !site.DeletedAt.Equal(now)) {
					t.Errorf("site deleted_at = %v, want deleted=%v at %v", site.DeletedAt, tc.wantGone, now)
				}
				got := opRow(t, s, op.ID)
				if got.Status != tc.out.Status || deref(got.ErrorCode) != deref(&tc.out.ErrorCode) || got.FinishedAt == nil {
					t.Errorf("operation = %+v", got)
				}
				if n := count(t, db, "outbox_events", ""); n != 1 {
					t.Errorf("%d outbox rows, want 1", n)
				}
				if n := count(t, db, "sites", "vps_id = ?", v.ID); n != 1 {
					t.Errorf("%d sites bound to the server, want 1", n)
				}
				// A cancelled site frees its domain; a failed one keeps it.
				_, err := s.CreateSite(ctx, siteParams(accept(acme, "", ""), "doomed.example"))
				if tc.wantGone && err != nil {
					t.Errorf("domain of a cancelled site not freed: %v", err)
				}
				if !tc.wantGone {
					wantConflict(t, err)
				}
			})
		})
	}
}

func TestCompleteDeprovision(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, c := setupClock(t, db)
		acme := tenant(t, s, "acme")
		v := registerVPS(t, s, "web.example", 10)
		placedSite(t, s, acme, "neighbour.example", v)
		siteID, prov := placedSite(t, s, acme, "bye.example", v)
		if ok, err := s.CompleteProvision(ctx, prov.ID, siteID, models.ProvisionedSite{}, nil, nil); err != nil || !ok {
			t.Fatal(ok, err)
		}
		del, err := s.DeleteSite(ctx, accept(acme, "", ""), siteID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.StartOperation(ctx, del.Operation.ID); err != nil {
			t.Fatal(err)
		}
		c.Advance(time.Minute)
		now := epoch.Add(time.Minute)

		for i := range 2 {
			ok, err := s.CompleteDeprovision(ctx, del.Operation.ID, siteID, []models.OutboxEvent{event(acme, siteID, "evt-deleted")})
			if err != nil || ok != (i == 0) {
				t.Fatalf("CompleteDeprovision #%d = %v, %v; want %v", i+1, ok, err, i == 0)
			}
			if n := siteCount(t, db, v.ID); n != 1 {
				t.Fatalf("after CompleteDeprovision #%d: site_count = %d, want 1", i+1, n)
			}
		}
		site := siteRow(t, s, siteID)
		if site.Status != models.SiteStatusDeleted || site.DeletedAt == nil || !site.DeletedAt.Equal(now) ||
			site.VPSID != nil || site.OperationID != nil {
			t.Errorf("site = %+v", site)
		}
		op := opRow(t, s, del.Operation.ID)
		if op.Status != models.OpSucceeded || op.Progress != 100 || op.Result == nil {
			t.Fatalf("operation = %+v", op)
		}
		if diff := cmp.Diff(map[string]string{"site_id": siteID}, decodeJSON[map[string]string](t, *op.Result)); diff != "" {
			t.Errorf("result (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"evt-deleted"}, outboxIDs(t, db)); diff != "" {
			t.Errorf("outbox (-want +got):\n%s", diff)
		}
		live, err := s.ListSites(ctx, acme, models.SiteFilter{})
		if err != nil || len(live) != 1 || live[0].Domain != "neighbour.example" {
			t.Errorf("ListSites = %+v, %v; want only the neighbour", live, err)
		}
	})
}

func TestAbandonDeprovision(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		status     string
		wantStatus string
	}{
		{"cancelled restores the previous status", models.OpCancelled, models.SiteStatusActive},
		{"failed leaves the site failed", models.OpFailed, models.SiteStatusFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testenv.Backends(t, func(t *testing.T, db *bun.DB) {
				ctx := t.Context()
				s := setup(t, db)
				acme := tenant(t, s, "acme")
				siteID := activeSite(t, s, acme, "keep.example")
				del, err := s.DeleteSite(ctx, accept(acme, "", ""), siteID)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := s.StartOperation(ctx, del.Operation.ID); err != nil {
					t.Fatal(err)
				}
				for i := range 2 {
					ok, err := s.AbandonDeprovision(ctx, del.Operation.ID, siteID, models.SiteStatusActive, models.Outcome{Status: tc.status}, nil)
					if err != nil || ok != (i == 0) {
						t.Fatalf("AbandonDeprovision #%d = %v, %v", i+1, ok, err)
					}
				}
				site := siteRow(t, s, siteID)
				if site.Status != tc.wantStatus || site.OperationID != nil || site.DeletedAt != nil {
					t.Errorf("site status %s operation %s deleted %v; want %s, none, live", site.Status, deref(site.OperationID), site.DeletedAt, tc.wantStatus)
				}
				if st := opRow(t, s, del.Operation.ID).Status; st != tc.status {
					t.Errorf("operation status %s, want %s", st, tc.status)
				}
			})
		})
	}
}

func TestCancelOperation(t *testing.T) {
	t.Parallel()
	t.Run("pending provision", func(t *testing.T) {
		t.Parallel()
		testenv.Backends(t, func(t *testing.T, db *bun.DB) {
			ctx := t.Context()
			s, c := setupClock(t, db)
			acme := tenant(t, s, "acme")
			v := registerVPS(t, s, "web.example", 10)
			siteID, op := placedSite(t, s, acme, "never.example", v)
			c.Advance(time.Minute)

			res, err := s.CancelOperation(ctx, acme, op.ID)
			if err != nil {
				t.Fatalf("CancelOperation: %v", err)
			}
			if !res.Immediate || res.Operation.Status != models.OpCancelled || deref(res.Operation.ErrorCode) != `"cancelled"` ||
				res.Operation.FinishedAt == nil || !res.Operation.FinishedAt.Equal(epoch.Add(time.Minute)) {
				t.Fatalf("CancelOperation = immediate %v, operation %+v", res.Immediate, res.Operation)
			}
			site := siteRow(t, s, siteID)
			if site.Status != models.SiteStatusDeleted || site.DeletedAt == nil || site.OperationID != nil || site.VPSID != nil {
				t.Errorf("site = %+v", site)
			}
			if n := siteCount(t, db, v.ID); n != 0 {
				t.Errorf("site_count = %d, want 0", n)
			}
			if ok, err := s.CancelRequested(ctx, op.ID); err != nil || ok {
				t.Errorf("CancelRequested = %v, %v; want false (cancelled at once, not flagged)", ok, err)
			}
			// Cancelled is final.
			_, err = s.CancelOperation(ctx, acme, op.ID)
			if ce := wantConflict(t, err); ce.OperationID != op.ID {
				t.Errorf("ConflictError.OperationID = %q", ce.OperationID)
			}
			if got, _ := s.StartOperation(ctx, op.ID); got.Status != models.OpCancelled || got.Attempts != 0 {
				t.Errorf("StartOperation after cancel: status %s attempts %d", got.Status, got.Attempts)
			}
		})
	})

	t.Run("pending deprovision", func(t *testing.T) {
		t.Parallel()
		testenv.Backends(t, func(t *testing.T, db *bun.DB) {
			ctx := t.Context()
			s := setup(t, db)
			acme := tenant(t, s, "acme")
			for _, prev := range []string{models.SiteStatusActive, models.SiteStatusFailed} {
				siteID, prov := createSite(t, s, acme, prev+".example")
				if prev == models.SiteStatusActive {
					_, err := s.CompleteProvision(ctx, prov.ID, siteID, models.ProvisionedSite{}, nil, nil)
					if err != nil {
						t.Fatal(err)
					}
				} else if _, err := s.AbandonProvision(ctx, prov.ID, siteID, models.Outcome{Status: models.OpFailed}, nil); err != nil {
					t.Fatal(err)
				}
				del, err := s.DeleteSite(ctx, accept(acme, "", ""), siteID)
				if err != nil {
					t.Fatal(err)
				}
				res, err := s.CancelOperation(ctx, acme, del.Operation.ID)
				if err != nil || !res.Immediate || res.Operation.Status != models.OpCancelled {
					t.Fatalf("CancelOperation = %+v, %v", res, err)
				}
				site := siteRow(t, s, siteID)
				if site.Status != prev || site.OperationID != nil || site.DeletedAt != nil {
					t.Errorf("site status %s operation %s; want back to %s, no operation", site.Status, deref(site.OperationID), prev)
				}
			}
		})
	})

	t.Run("running", func(t *testing.T) {
		t.Parallel()
		testenv.Backends(t, func(t *testing.T, db *bun.DB) {
			ctx := t.Context()
			s, c := setupClock(t, db)
			acme := tenant(t, s, "acme")
			siteID, op := createSite(t, s, acme, "running.example")
			if _, err := s.StartOperation(ctx, op.ID); err != nil {
				t.Fatal(err)
			}
			if ok, err := s.CancelRequested(ctx, op.ID); err != nil || ok {
				t.Fatalf("CancelRequested before cancel = %v, %v", ok, err)
			}
			c.Advance(time.Minute)
			asked := epoch.Add(time.Minute)
			for range 2 {
				res, err := s.CancelOperation(ctx, acme, op.ID)
				if err != nil {
					t.Fatalf("CancelOperation: %v", err)
				}
				if res.Immediate || res.Operation.Status != models.OpRunning || res.Operation.CancelRequestedAt == nil ||
					!res.Operation.CancelRequestedAt.Equal(asked) {
					t.Fatalf("CancelOperation = immediate %v, status %s, cancel requested %v; want flagged at %v",
						res.Immediate, res.Operation.Status, res.Operation.CancelRequestedAt, asked)
				}
				c.Advance(time.Minute) // a repeated cancel keeps the first request time
			}
			if ok, err := s.CancelRequested(ctx, op.ID); err != nil || !ok {
				t.Fatalf("CancelRequested = %v, %v; want true", ok, err)
			}
			if site := siteRow(t, s, siteID); site.Status != models.SiteStatusPending || site.DeletedAt != nil {
				t.Errorf("site changed by a cancel request: %+v", site)
			}
		})
	})

	t.Run("finished, other tenant, unknown", func(t *testing.T) {
		t.Parallel()
		testenv.Backends(t, func(t *testing.T, db *bun.DB) {
			ctx := t.Context()
			s := setup(t, db)
			acme, other := tenant(t, s, "acme"), tenant(t, s, "other")
			siteID, op := createSite(t, s, acme, "fin.example")
			_, pending := createSite(t, s, acme, "pend.example")

			if _, err := s.CancelOperation(ctx, other, pending.ID); !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("CancelOperation by another tenant = %v, want ErrNotFound", err)
			}
			if st := opRow(t, s, pending.ID).Status; st != models.OpPending {
				t.Fatalf("another tenant's cancel changed the operation to %s", st)
			}
			if _, err := s.CancelOperation(ctx, acme, "op_unknown"); !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("CancelOperation(unknown) = %v, want ErrNotFound", err)
			}
			if _, err := s.CancelRequested(ctx, "op_unknown"); !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("CancelRequested(unknown) = %v, want ErrNotFound", err)
			}

			if ok, err := s.CompleteProvision(ctx, op.ID, siteID, models.ProvisionedSite{}, nil, nil); err != nil || !ok {
				t.Fatal(ok, err)
			}
			before := counts(t, db)
			_, err := s.CancelOperation(ctx, acme, op.ID)
			if ce := wantConflict(t, err); ce.OperationID != op.ID {
				t.Errorf("ConflictError.OperationID = %q, want %q", ce.OperationID, op.ID)
			}
			if got := opRow(t, s, op.ID); got.Status != models.OpSucceeded || got.CancelRequestedAt != nil {
				t.Errorf("finished operation changed: %+v", got)
			}
			if diff := cmp.Diff(before, counts(t, db)); diff != "" {
				t.Errorf("rows changed (-before +after):\n%s", diff)
			}
		})
	})
}

func TestUnfinishedOperations(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, c := setupClock(t, db)
		acme := tenant(t, s, "acme")

		_, oldest := createSite(t, s, acme, "a.example") // t0, pending
		c.Advance(time.Minute)
		doneSite, done := createSite(t, s, acme, "b.example") // t0+1m, succeeded
		c.Advance(time.Minute)
		_, running := createSite(t, s, acme, "c.example") // t0+2m, running
		c.Advance(time.Minute)
		_, fresh := createSite(t, s, acme, "d.example") // t0+3m, pending, too new
		c.Advance(time.Minute)
		_, cancelled := createSite(t, s, acme, "e.example") // t0+4m, cancelled

		if _, err := s.StartOperation(ctx, running.ID); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.CompleteProvision(ctx, done.ID, doneSite, models.ProvisionedSite{}, nil, nil); err != nil || !ok {
			t.Fatal(ok, err)
		}
		if _, err := s.CancelOperation(ctx, acme, cancelled.ID); err != nil {
			t.Fatal(err)
		}

		tests := []struct {
			olderThan time.Time
			limit     int
			want      []string
		}{
			{epoch.Add(150 * time.Second), 10, []string{oldest.ID, running.ID}},
			{epoch.Add(150 * time.Second), 1, []string{oldest.ID}},
			{epoch.Add(2 * time.Minute), 10, []string{oldest.ID}}, // strictly older
			{epoch.Add(time.Hour), 10, []string{oldest.ID, running.ID, fresh.ID}},
			{epoch.Add(time.Hour).In(time.FixedZone("UTC+5", 5*3600)), 10, []string{oldest.ID, running.ID, fresh.ID}},
			{epoch, 10, nil},
		}
		for _, tc := range tests {
			ops, err := s.UnfinishedOperations(ctx, tc.olderThan, tc.limit)
			if err != nil {
				t.Fatalf("UnfinishedOperations: %v", err)
			}
			var got []string
			for _, op := range ops {
				got = append(got, op.ID)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("UnfinishedOperations(%v, %d) (-want +got):\n%s", tc.olderThan, tc.limit, diff)
			}
		}
	})
}
