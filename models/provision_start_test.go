package models_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// TestStartProvision checks the one-transaction start of a provision: what it
// records on a first and a repeated delivery, the same server AssignVPS
// would choose, and that every case it leaves to the step-by-step path
// writes nothing.
func TestStartProvision(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, c := setupClock(t, db)
		acme := tenant(t, s, "acme")
		busy := registerVPS(t, s, "busy.example", 10)
		idle := registerVPS(t, s, "idle.example", 10)
		if _, err := db.NewUpdate().Table("vps_servers").Set("site_count = 5").Where("id = ?", busy.ID).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		siteID, op := createSite(t, s, acme, "fast.example")

		c.Advance(time.Minute)
		first := epoch.Add(time.Minute)
		st, err := s.StartProvision(ctx, op.ID, 10)
		if err != nil || st == nil {
			t.Fatalf("StartProvision = %+v, %v; want a start", st, err)
		}
		if st.VPS.ID != idle.ID || st.Site.VPSID == nil || *st.Site.VPSID != idle.ID || st.TouchedBefore {
			t.Errorf("start placed on %s (site on %v), touched before %v; want %s, false", st.VPS.Hostname, st.Site.VPSID, st.TouchedBefore, idle.ID)
		}
		got := opRow(t, s, op.ID)
		if got.Status != models.OpRunning || got.Attempts != 1 || got.Progress != 10 || got.StartedAt == nil || !got.StartedAt.Equal(first) ||
			got.ServerTouchedAt == nil || !got.ServerTouchedAt.Equal(first) {
			t.Errorf("operation after the start = %+v", got)
		}
		if diff := cmp.Diff(got, st.Operation); diff != "" {
			t.Errorf("returned operation differs from the row (-row +returned):\n%s", diff)
		}
		site := siteRow(t, s, siteID)
		if site.Status != models.SiteStatusProvisioning || site.VPSID == nil || *site.VPSID != idle.ID {
			t.Errorf("site after the start = %+v", site)
		}
		if n := siteCount(t, db, idle.ID); n != 1 {
			t.Errorf("site_count of the chosen server = %d, want 1", n)
		}

		// A redelivery (worker killed during the driver call) finds its site
		// placed: the step-by-step path keeps its server, slot and first
		// touch; the start writes nothing.
		c.Advance(time.Minute)
		unchanged(t, s, db, op.ID, siteID, func() {
			if again, err := s.StartProvision(ctx, op.ID, 10); err != nil || again != nil {
				t.Fatalf("StartProvision of a placed site = %+v, %v; want nil, nil", again, err)
			}
		})

		// A finished operation: the step-by-step path says so; nothing moves.
		if ok, err := s.CompleteProvision(ctx, op.ID, siteID, models.ProvisionedSite{}, nil, nil); err != nil || !ok {
			t.Fatalf("CompleteProvision = %v, %v", ok, err)
		}
		unchanged(t, s, db, op.ID, siteID, func() {
			if st, err := s.StartProvision(ctx, op.ID, 10); err != nil || st != nil {
				t.Fatalf("StartProvision of a finished operation = %+v, %v; want nil, nil", st, err)
			}
		})
		if st, err := s.StartProvision(ctx, "op_unknown", 10); err != nil || st != nil {
			t.Fatalf("StartProvision of an unknown operation = %+v, %v; want nil, nil", st, err)
		}
	})
}

// TestStartProvisionLeavesTheRareCases checks each case StartProvision hands
// to the step-by-step path: nothing is written, so the path starts afresh.
func TestStartProvisionLeavesTheRareCases(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		servers int // registered servers with room (none: the fleet is full)
		prepare func(t *testing.T, s *models.Store, db *bun.DB, opID, siteID string)
	}{
		{"no server has room", 0, nil},
		{"cancel asked while running", 1, func(t *testing.T, s *models.Store, db *bun.DB, opID, _ string) {
			if _, err := s.StartOperation(t.Context(), opID); err != nil {
				t.Fatal(err)
			}
			if _, err := db.NewUpdate().Table("operations").Set("cancel_requested_at = ?", epoch).Where("id = ?", opID).Exec(t.Context()); err != nil {
				t.Fatal(err)
			}
		}},
		{"held for domain verification", 1, func(t *testing.T, _ *models.Store, db *bun.DB, _, siteID string) {
			if _, err := db.NewUpdate().Table("sites").Set("status = ?", models.SiteStatusPendingVerification).Where("id = ?", siteID).Exec(t.Context()); err != nil {
				t.Fatal(err)
			}
		}},
		{"site gone", 1, func(t *testing.T, _ *models.Store, db *bun.DB, _, siteID string) {
			if _, err := db.NewUpdate().Table("sites").Set("status = ?", models.SiteStatusDeleted).Set("deleted_at = ?", epoch).
				Where("id = ?", siteID).Exec(t.Context()); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testenv.Backends(t, func(t *testing.T, db *bun.DB) {
				s := setup(t, db)
				for i := range tc.servers {
					registerVPS(t, s, "web"+string(rune('a'+i))+".example", 10)
				}
				siteID, op := createSite(t, s, tenant(t, s, "acme"), "rare.example")
				if tc.prepare != nil {
					tc.prepare(t, s, db, op.ID, siteID)
				}
				unchanged(t, s, db, op.ID, siteID, func() {
					if st, err := s.StartProvision(t.Context(), op.ID, 10); err != nil || st != nil {
						t.Fatalf("StartProvision = %+v, %v; want nil, nil", st, err)
					}
				})
			})
		})
	}
}

// unchanged fails when do changes the operation, the site or a server's
// site count.
func unchanged(t *testing.T, s *models.Store, db *bun.DB, opID, siteID string, do func()) {
	t.Helper()
	slots := func() int { return count(t, db, "vps_servers", "site_count > 0") }
	op, site, n := opRow(t, s, opID), siteRow(t, s, siteID), slots()
	do()
	if diff := cmp.Diff(op, opRow(t, s, opID)); diff != "" {
		t.Errorf("operation changed (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(site, siteRow(t, s, siteID)); diff != "" {
		t.Errorf("site changed (-before +after):\n%s", diff)
	}
	if got := slots(); got != n {
		t.Errorf("%d servers hold sites, before %d", got, n)
	}
}

// TestCompleteProvisionRefusesACancel checks that a cancel asked while a
// provision runs, after the job's last look, stops its success: nothing is
// written, ErrCancelRequested says why, and the cancel then finishes it.
func TestCompleteProvisionRefusesACancel(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		acme := tenant(t, s, "acme")
		registerVPS(t, s, "web.example", 10)
		siteID, op := createSite(t, s, acme, "late-cancel.example")
		if st, err := s.StartProvision(ctx, op.ID, 10); err != nil || st == nil {
			t.Fatalf("StartProvision = %+v, %v", st, err)
		}
		res, err := s.CancelOperation(ctx, acme, op.ID)
		if err != nil || res.Immediate {
			t.Fatalf("CancelOperation = %+v, %v; want a flagged running operation", res, err)
		}
		unchanged(t, s, db, op.ID, siteID, func() {
			ok, err := s.CompleteProvision(ctx, op.ID, siteID, models.ProvisionedSite{DocumentRoot: "/srv/x"}, nil,
				[]models.OutboxEvent{event(acme, siteID, "evt-late")})
			if ok || !errors.Is(err, models.ErrCancelRequested) {
				t.Fatalf("CompleteProvision after a cancel = %v, %v; want false, ErrCancelRequested", ok, err)
			}
		})
		if n := count(t, db, "outbox_events", ""); n != 0 {
			t.Fatalf("%d outbox rows after a refused success, want 0", n)
		}
		cancelled := models.Outcome{Status: models.OpCancelled, ErrorCode: "cancelled", ErrorMessage: "cancelled"}
		if ok, err := s.AbandonProvision(ctx, op.ID, siteID, cancelled, nil); err != nil || !ok {
			t.Fatalf("AbandonProvision = %v, %v", ok, err)
		}
		if got := opRow(t, s, op.ID); got.Status != models.OpCancelled {
			t.Errorf("operation %s, want cancelled", got.Status)
		}
		if got := siteRow(t, s, siteID); got.Status != models.SiteStatusDeleted || got.VPSID != nil {
			t.Errorf("site %s on %v, want deleted and unplaced", got.Status, got.VPSID)
		}
	})
}

// TestStartProvisionSkipsAServerBeingPlacedOn checks that on PostgreSQL a
// placement does not queue behind another one on the least-loaded server:
// it takes the next server instead, and AssignVPS's choice when none is free.
func TestStartProvisionSkipsAServerBeingPlacedOn(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := t.Context()
	s := setup(t, db)
	acme := tenant(t, s, "acme")
	idle := registerVPS(t, s, "idle.example", 10)
	next := registerVPS(t, s, "next.example", 10)
	if _, err := db.NewUpdate().Table("vps_servers").Set("site_count = 3").Where("id = ?", next.ID).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	// Another placement holds the least-loaded server until it commits.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, "SELECT id FROM vps_servers WHERE id = ? FOR UPDATE", idle.ID); err != nil {
		t.Fatal(err)
	}
	_, op := createSite(t, s, acme, "skip.example")
	// A start that waited for the held server would wait for this test.
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := s.StartProvision(sctx, op.ID, 10)
	if err != nil || st == nil {
		t.Fatalf("StartProvision = %+v, %v", st, err)
	}
	if st.VPS.ID != next.ID {
		t.Errorf("placed on %s while %s was held, want %s", st.VPS.Hostname, idle.Hostname, next.Hostname)
	}
	// Both held: nothing to skip to; the step-by-step path (AssignVPS) waits.
	if _, err := tx.ExecContext(ctx, "SELECT id FROM vps_servers WHERE id = ? FOR UPDATE", next.ID); err != nil {
		t.Fatal(err)
	}
	_, op2 := createSite(t, s, acme, "wait.example")
	if st, err := s.StartProvision(sctx, op2.ID, 10); err != nil || st != nil {
		t.Fatalf("StartProvision with every server held = %+v, %v; want nil, nil", st, err)
	}
}

// TestCompleteProvisionsMixedBatch checks a batch whose successes meet
// different fates in one transaction: one completes, one had already
// finished, one had a cancel asked; only the first writes anything.
func TestCompleteProvisionsMixedBatch(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		acme := tenant(t, s, "acme")
		registerVPS(t, s, "web.example", 10)
		var sites, ops []string
		for _, d := range []string{"ok.example", "finished.example", "cancelled.example"} {
			siteID, op := createSite(t, s, acme, d)
			if st, err := s.StartProvision(ctx, op.ID, 10); err != nil || st == nil {
				t.Fatalf("StartProvision(%s) = %+v, %v", d, st, err)
			}
			sites, ops = append(sites, siteID), append(ops, op.ID)
		}
		if ok, err := s.CompleteProvision(ctx, ops[1], sites[1], models.ProvisionedSite{}, nil, nil); err != nil || !ok {
			t.Fatalf("CompleteProvision = %v, %v", ok, err)
		}
		if _, err := s.CancelOperation(ctx, acme, ops[2]); err != nil {
			t.Fatal(err)
		}
		items := make([]models.ProvisionSuccess, 3)
		for i := range items {
			items[i] = models.ProvisionSuccess{OpID: ops[i], SiteID: sites[i], Site: models.ProvisionedSite{DocumentRoot: "/srv/" + sites[i]},
				Result: map[string]string{"site_id": sites[i]}, Events: []models.OutboxEvent{event(acme, sites[i], "evt-"+sites[i])}}
		}
		out, err := s.CompleteProvisions(ctx, items, false)
		if err != nil {
			t.Fatalf("CompleteProvisions: %v", err)
		}
		if !out[0].Done || out[0].Err != nil || out[1].Done || out[1].Err != nil || out[2].Done || !errors.Is(out[2].Err, models.ErrCancelRequested) {
			t.Fatalf("outcomes = %+v; want done, already finished, cancel requested", out)
		}
		if diff := cmp.Diff([]string{"evt-" + sites[0]}, outboxIDs(t, db)); diff != "" {
			t.Errorf("outbox (-want +got):\n%s", diff)
		}
		if st := siteRow(t, s, sites[0]); st.Status != models.SiteStatusActive || st.DocumentRoot != "/srv/"+sites[0] {
			t.Errorf("completed site = %+v", st)
		}
		if st := siteRow(t, s, sites[2]); st.Status != models.SiteStatusProvisioning {
			t.Errorf("site whose cancel was asked is %s, want still provisioning", st.Status)
		}
		if op := opRow(t, s, ops[2]); op.Status != models.OpRunning {
			t.Errorf("operation whose cancel was asked is %s, want still running", op.Status)
		}
	})
}

// TestCompleteProvisionsSameOperationTwice checks a batch holding two
// successes of one operation (two deliveries of its task finishing
// together): the first completes it, the second finds it finished, and
// one event is written.
func TestCompleteProvisionsSameOperationTwice(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		acme := tenant(t, s, "acme")
		registerVPS(t, s, "web.example", 10)
		siteA, opA := createSite(t, s, acme, "a.example")
		siteB, opB := createSite(t, s, acme, "b.example")
		for _, id := range []string{opA.ID, opB.ID} {
			if st, err := s.StartProvision(ctx, id, 10); err != nil || st == nil {
				t.Fatalf("StartProvision(%s) = %+v, %v", id, st, err)
			}
		}
		item := func(op, site string) models.ProvisionSuccess {
			return models.ProvisionSuccess{OpID: op, SiteID: site, Site: models.ProvisionedSite{DocumentRoot: "/srv/" + site},
				Events: []models.OutboxEvent{event(acme, site, "evt-"+op)}}
		}
		out, err := s.CompleteProvisions(ctx, []models.ProvisionSuccess{item(opA.ID, siteA), item(opB.ID, siteB), item(opA.ID, siteA)}, false)
		if err != nil {
			t.Fatalf("CompleteProvisions: %v", err)
		}
		if !out[0].Done || out[0].Err != nil || !out[1].Done || out[1].Err != nil || out[2].Done || out[2].Err != nil {
			t.Fatalf("outcomes = %+v; want done, done, already finished", out)
		}
		if diff := cmp.Diff([]string{"evt-" + opA.ID, "evt-" + opB.ID}, outboxIDs(t, db)); diff != "" {
			t.Errorf("outbox (-want +got):\n%s", diff)
		}
		if op := opRow(t, s, opA.ID); op.Status != models.OpSucceeded || op.Result != nil {
			t.Errorf("operation = %s with result %v, want succeeded without one (none given)", op.Status, op.Result)
		}
	})
}

// TestCompleteProvisionsBatchWakesRelay checks that a batch of successes
// (on PostgreSQL one statement, events included) notifies the relay's
// listener, as every other outbox write does.
func TestCompleteProvisionsBatchWakesRelay(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		if !models.IsPostgres(db) {
			return // no LISTEN/NOTIFY on SQLite (TestOutboxWritesNotify)
		}
		ctx := t.Context()
		s := setup(t, db)
		acme := tenant(t, s, "acme")
		registerVPS(t, s, "web.example", 10)
		var items []models.ProvisionSuccess
		for _, d := range []string{"a.example", "b.example"} {
			siteID, op := createSite(t, s, acme, d)
			if st, err := s.StartProvision(ctx, op.ID, 10); err != nil || st == nil {
				t.Fatalf("StartProvision(%s) = %+v, %v", d, st, err)
			}
			items = append(items, models.ProvisionSuccess{OpID: op.ID, SiteID: siteID,
				Events: []models.OutboxEvent{event(acme, siteID, "evt-"+op.ID)}})
		}
		l, err := s.ListenOutbox(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close(context.WithoutCancel(ctx))
		if out, err := s.CompleteProvisions(ctx, items, false); err != nil || !out[0].Done || !out[1].Done {
			t.Fatalf("CompleteProvisions = %+v, %v", out, err)
		}
		// A generous deadline for "eventually": the notification is sent at the commit.
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := l.Wait(wctx); err != nil {
			t.Fatalf("no notification after a batch of successes wrote the outbox: %v", err)
		}
		if got := len(outboxIDs(t, db)); got != 2 {
			t.Errorf("%d outbox rows, want 2", got)
		}
	})
}

// TestStartProvisionTouchedBefore checks that a start reports whether an
// earlier delivery had marked the server touched, and keeps that mark's
// time, rather than its own.
func TestStartProvisionTouchedBefore(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		acme := tenant(t, s, "acme")
		registerVPS(t, s, "web.example", 10)
		_, fresh := createSite(t, s, acme, "fresh.example")
		_, again := createSite(t, s, acme, "again.example")
		earlier := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		if _, err := db.NewUpdate().Model((*models.Operation)(nil)).Set("server_touched_at = ?", earlier).
			Where("id = ?", again.ID).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		st, err := s.StartProvision(ctx, fresh.ID, 10)
		if err != nil || st == nil || st.TouchedBefore || st.Operation.ServerTouchedAt == nil {
			t.Fatalf("StartProvision of a fresh provision = %+v, %v; want started, not touched before, touched now", st, err)
		}
		st, err = s.StartProvision(ctx, again.ID, 10)
		if err != nil || st == nil || !st.TouchedBefore || st.Operation.ServerTouchedAt == nil || !st.Operation.ServerTouchedAt.Equal(earlier) {
			t.Fatalf("StartProvision of a provision touched before = %+v, %v; want started, touched before at %v", st, err, earlier)
		}
		if st.Operation.Status != models.OpRunning || st.Operation.Attempts != 1 || st.Operation.Progress != 10 {
			t.Errorf("operation = %s, attempt %d, progress %d; want running, 1, 10", st.Operation.Status, st.Operation.Attempts, st.Operation.Progress)
		}
	})
}

// TestStartProvisionsBatch checks several starts in one call: each common
// case started as alone, the placement of each seeing the slots the ones
// before it took (least loaded first, within the batch too), and the
// deliveries it leaves to the step-by-step path untouched in between.
func TestStartProvisionsBatch(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		acme := tenant(t, s, "acme")
		empty := registerVPS(t, s, "empty.example", 10)
		one := registerVPS(t, s, "one.example", 10)
		if _, err := db.NewUpdate().Table("vps_servers").Set("site_count = 1").Where("id = ?", one.ID).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		var ops, sites []string
		for _, d := range []string{"a.example", "b.example", "c.example"} {
			siteID, op := createSite(t, s, acme, d)
			ops, sites = append(ops, op.ID), append(sites, siteID)
		}
		cancelledSite, cancelled := createSite(t, s, acme, "cancelled.example")
		if _, err := s.StartOperation(ctx, cancelled.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := db.NewUpdate().Table("operations").Set("cancel_requested_at = ?", epoch).Where("id = ?", cancelled.ID).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		opBefore, siteBefore := opRow(t, s, cancelled.ID), siteRow(t, s, cancelledSite)

		outs, err := s.StartProvisions(ctx, []string{ops[0], cancelled.ID, ops[1], "op_unknown", ops[2]}, 10)
		if err != nil || len(outs) != 5 {
			t.Fatalf("StartProvisions = %d outcomes, %v; want 5", len(outs), err)
		}
		for i, o := range outs {
			if o.Err != nil {
				t.Errorf("outcome %d: %v", i, o.Err)
			}
		}
		if outs[1].Start != nil || outs[3].Start != nil {
			t.Errorf("the cancelled and the unknown operation started: %+v, %+v; want nil (step by step)", outs[1].Start, outs[3].Start)
		}
		placed := map[string]int{}
		for j, i := range []int{0, 2, 4} {
			st := outs[i].Start
			if st == nil {
				t.Fatalf("operation %s not started", ops[j])
			}
			site := siteRow(t, s, sites[j])
			if opRow(t, s, ops[j]).Status != models.OpRunning || site.Status != models.SiteStatusProvisioning ||
				site.VPSID == nil || *site.VPSID != st.VPS.ID || st.Site.ID != sites[j] {
				t.Errorf("start %d: operation %s, site %+v, returned server %s", j, opRow(t, s, ops[j]).Status, site, st.VPS.ID)
			}
			placed[st.VPS.ID]++
		}
		// 0 and 1 sites before, three placed one after another, each on the
		// least loaded server as it stood: 2 and 2. Starts that did not see
		// the batch's earlier slots would all have chosen the empty server.
		if got := []int{siteCount(t, db, empty.ID), siteCount(t, db, one.ID)}; got[0] != 2 || got[1] != 2 {
			t.Errorf("site counts after the batch = %v, want [2 2] (placed %v)", got, placed)
		}
		if diff := cmp.Diff(opBefore, opRow(t, s, cancelled.ID)); diff != "" {
			t.Errorf("the cancelled operation changed (-before +after):\n%s", diff)
		}
		if diff := cmp.Diff(siteBefore, siteRow(t, s, cancelledSite)); diff != "" {
			t.Errorf("the cancelled operation's site changed (-before +after):\n%s", diff)
		}
	})
}
