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

// recordCheck records a sweep check of period p with result, moving the server
// to status, with an optional event and host key pin.
func recordCheck(t *testing.T, s *models.Store, vpsID string, p time.Time, result, status string,
	pin string, evs ...models.OutboxEvent) *models.HealthRecorded {
	t.Helper()
	c := &models.VPSHealthCheck{VPSID: vpsID, CheckKey: p.Format(time.RFC3339), Source: models.HealthSourceSweep,
		PeriodStart: &p, CheckedAt: p.Add(2 * time.Second), Result: result, Reason: "because", Reachable: true,
		Load1: 0.5, CPUs: 2, MemTotalBytes: 1 << 33, MemAvailableBytes: 1 << 32, DiskTotalBytes: 1 << 40, DiskFreeBytes: 1 << 39,
		HTTPStatus: 200, HTTPMS: 1.5, ConnectMS: 0.25}
	rec, err := s.RecordHealthCheck(t.Context(), c, func(v *models.VPSServer) (models.HealthDecision, error) {
		return models.HealthDecision{Next: models.HealthState{Status: status}, Events: evs, PinHostKey: pin}, nil
	})
	if err != nil {
		t.Fatalf("RecordHealthCheck: %v", err)
	}
	return rec
}

func TestRecordHealthCheck(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		v := registerVPS(t, s, "web1.example", 5)
		p := epoch.Truncate(time.Minute)

		ev := event(v.ID, v.ID, "evt-health-1")
		rec := recordCheck(t, s, v.ID, p, models.HealthUnhealthy, models.HealthUnhealthy, "ssh-ed25519 AAAAfirst", ev)
		if rec.Duplicate || rec.Before.HealthStatus != models.HealthUnknown || rec.Check.StatusAfter != models.HealthUnhealthy {
			t.Fatalf("first record = %+v", rec)
		}
		got, err := s.GetVPS(ctx, v.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.HealthStatus != models.HealthUnhealthy || got.HostKey != "ssh-ed25519 AAAAfirst" ||
			got.HealthReason != "because" || got.HealthCheckedAt == nil || !got.HealthCheckedAt.Equal(p.Add(2*time.Second)) {
			t.Fatalf("server after the check: %+v", got)
		}
		if n := count(t, db, "outbox_events", "event_id = ?", "evt-health-1"); n != 1 {
			t.Fatalf("%d events, want 1 written with the check", n)
		}
		// The same key again: nothing written, decide not called.
		_, err = s.RecordHealthCheck(ctx, &models.VPSHealthCheck{VPSID: v.ID, CheckKey: p.Format(time.RFC3339),
			Source: models.HealthSourceSweep, Result: models.HealthHealthy},
			func(*models.VPSServer) (models.HealthDecision, error) {
				t.Error("decide called for a duplicate check")
				return models.HealthDecision{}, nil
			})
		if err != nil {
			t.Fatal(err)
		}
		if n := count(t, db, "vps_health_checks", ""); n != 1 {
			t.Fatalf("%d checks, want 1", n)
		}
		// A pinned key is never replaced; a failing decide rolls everything back.
		recordCheck(t, s, v.ID, p.Add(time.Minute), models.HealthHealthy, models.HealthHealthy, "ssh-ed25519 AAAAsecond")
		boom := errors.New("boom")
		_, err = s.RecordHealthCheck(ctx, &models.VPSHealthCheck{VPSID: v.ID, CheckKey: "k3", Source: models.HealthSourceManual,
			Result: models.HealthDegraded}, func(*models.VPSServer) (models.HealthDecision, error) { return models.HealthDecision{}, boom })
		if !errors.Is(err, boom) {
			t.Fatalf("failing decide: %v", err)
		}
		got, _ = s.GetVPS(ctx, v.ID)
		if got.HostKey != "ssh-ed25519 AAAAfirst" || got.HealthStatus != models.HealthHealthy {
			t.Fatalf("server: key %q status %q", got.HostKey, got.HealthStatus)
		}
		latest, err := s.LatestHealthChecks(ctx, v.ID, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(latest) != 2 || latest[0].Result != models.HealthHealthy || latest[1].Result != models.HealthUnhealthy {
			t.Fatalf("latest checks = %+v", latest)
		}
		want := models.VPSHealthCheck{ID: latest[1].ID, VPSID: v.ID, CheckKey: p.Format(time.RFC3339), Source: "sweep",
			PeriodStart: &p, CheckedAt: p.Add(2 * time.Second), Result: "unhealthy", StatusAfter: "unhealthy", Reason: "because",
			Reachable: true, ConnectMS: 0.25, Load1: 0.5, CPUs: 2, MemTotalBytes: 1 << 33, MemAvailableBytes: 1 << 32,
			DiskTotalBytes: 1 << 40, DiskFreeBytes: 1 << 39, HTTPStatus: 200, HTTPMS: 1.5}
		if diff := cmp.Diff(want, latest[1], cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
			t.Errorf("stored measurements (-want +got):\n%s", diff)
		}
		if _, err := s.RecordHealthCheck(ctx, &models.VPSHealthCheck{VPSID: "vps_gone", CheckKey: "k"},
			func(*models.VPSServer) (models.HealthDecision, error) { return models.HealthDecision{}, nil }); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("unknown server: %v, want ErrNotFound", err)
		}
	})
}

func TestHealthFleetQueries(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, clk := setupClock(t, db)
		a := registerVPS(t, s, "a.example", 5)
		b := registerVPS(t, s, "b.example", 5)
		c := registerVPS(t, s, "c.example", 5)
		if _, err := db.NewUpdate().Model((*models.VPSServer)(nil)).Set("status = ?", models.VPSStatusDecommissioned).
			Where("id = ?", c.ID).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		ids, err := s.ActiveVPSIDs(ctx, "", 1)
		if err != nil {
			t.Fatal(err)
		}
		next, err := s.ActiveVPSIDs(ctx, ids[0], 10)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{a.ID, b.ID}, append(ids, next...)); diff != "" {
			t.Fatalf("active ids paged (-want +got):\n%s", diff)
		}

		if _, ok, err := s.LastCompleteSweep(ctx); err != nil || ok {
			t.Fatalf("LastCompleteSweep with no checks = %v, %v", ok, err)
		}
		p1 := epoch.Add(time.Hour)
		clk.Advance(2 * time.Hour)
		recordCheck(t, s, a.ID, p1, models.HealthHealthy, models.HealthHealthy, "")
		recordCheck(t, s, b.ID, p1, models.HealthUnhealthy, models.HealthUnhealthy, "")
		p2 := p1.Add(time.Minute) // only one of two servers checked yet: incomplete
		recordCheck(t, s, a.ID, p2, models.HealthHealthy, models.HealthHealthy, "")

		counts, err := s.CountVPSByHealth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wantCounts := map[string]int{"healthy": 1, "unhealthy": 1, "degraded": 0, "unknown": 0}
		if diff := cmp.Diff(wantCounts, counts); diff != "" {
			t.Errorf("CountVPSByHealth (-want +got):\n%s", diff)
		}
		st, ok, err := s.LastCompleteSweep(ctx)
		if err != nil || !ok {
			t.Fatalf("LastCompleteSweep = %v, %v", ok, err)
		}
		if !st.PeriodStart.Equal(p1) || st.Servers != 2 || st.Duration != 2*time.Second {
			t.Errorf("LastCompleteSweep = %+v, want period %s, 2 servers, 2s", st, p1)
		}

		n, err := s.PruneHealthChecks(ctx, p2, 1)
		if err != nil || n != 2 {
			t.Fatalf("PruneHealthChecks = %d, %v; want the 2 older checks", n, err)
		}
		if left := count(t, db, "vps_health_checks", ""); left != 1 {
			t.Fatalf("%d checks left, want 1", left)
		}
	})
}

func TestRequestHealthCheck(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		admin := tenant(t, s, "platform")
		v := registerVPS(t, s, "web1.example", 5)
		acc, err := s.RequestHealthCheck(ctx, accept(admin, "k1", "h1"), v.ID)
		if err != nil {
			t.Fatal(err)
		}
		op := acc.Operation
		if op.Type != models.OpTypeVPSHealthCheck || op.TargetType != models.TargetVPS || op.TargetID != v.ID ||
			op.Status != models.OpPending || op.TenantID != admin {
			t.Fatalf("operation = %+v", op)
		}
		again, err := s.RequestHealthCheck(ctx, accept(admin, "k1", "h1"), v.ID)
		if err != nil || !again.Replayed || again.Operation.ID != op.ID {
			t.Fatalf("replay = %+v, %v; want the same operation", again, err)
		}
		before := counts(t, db)
		if _, err := s.RequestHealthCheck(ctx, accept(admin, "", ""), "vps_0000"); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("unknown server: %v, want ErrNotFound", err)
		}
		if diff := cmp.Diff(before, counts(t, db)); diff != "" {
			t.Errorf("a refused request wrote rows (-before +after):\n%s", diff)
		}
		if n := count(t, db, "audit_logs", "action = ?", "vps.health_check"); n != 1 {
			t.Errorf("%d audit rows, want 1", n)
		}
	})
}

func TestVPSForCheck(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		v := registerVPS(t, s, "web1.example", 5)
		p := epoch.Truncate(time.Minute)
		got, recorded, err := s.VPSForCheck(ctx, v.ID, p.Format(time.RFC3339))
		if err != nil || recorded || got.ID != v.ID || got.Hostname != "web1.example" || got.SSHPort != 22 {
			t.Fatalf("before the check: %+v, recorded %v, %v", got, recorded, err)
		}
		recordCheck(t, s, v.ID, p, models.HealthHealthy, models.HealthHealthy, "ssh-ed25519 AAAAk")
		got, recorded, err = s.VPSForCheck(ctx, v.ID, p.Format(time.RFC3339))
		if err != nil || !recorded || got.HostKey != "ssh-ed25519 AAAAk" || got.HealthStatus != models.HealthHealthy {
			t.Fatalf("after the check: %+v, recorded %v, %v", got, recorded, err)
		}
		if _, recorded, err = s.VPSForCheck(ctx, v.ID, "another key"); err != nil || recorded {
			t.Fatalf("another key: recorded %v, %v", recorded, err)
		}
		if _, _, err := s.VPSForCheck(ctx, "vps_missing", "k"); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("unknown server: %v, want ErrNotFound", err)
		}
	})
}
