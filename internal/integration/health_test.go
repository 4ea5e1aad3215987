package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/models"
)

// flipProbe answers for each server what the test last set: a healthy report,
// or unreachable for the servers marked down.
type flipProbe struct {
	mu   sync.Mutex
	down map[string]bool
}

func (p *flipProbe) set(id string, down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down[id] = down
}

func (p *flipProbe) Probe(_ context.Context, t drivers.HealthTarget) (drivers.HealthReport, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down[t.Server.ID] {
		return drivers.HealthReport{ConnectLatency: 5 * time.Millisecond}, fmt.Errorf("dial %s: %w", t.Server.IPAddress, drivers.ErrUnreachable)
	}
	return drivers.HealthReport{Reachable: true, ConnectLatency: time.Millisecond, Load1: 0.2, CPUs: 2,
		MemTotalBytes: 4 << 30, MemAvailableBytes: 3 << 30, DiskTotalBytes: 100 << 30, DiskFreeBytes: 80 << 30,
		HTTPStatus: 200, HTTPLatency: time.Millisecond}, nil
}

// A server that stops answering goes unhealthy after the configured number of
// checks (3), not before; gets no new sites while a healthy one does; a
// provision with every server unhealthy fails with no_capacity as placement
// does; and both come back after 3 good checks. Each transition writes exactly
// one event. The checks run as the sweep makes them: through Redis and a worker.
func TestHealthChecksDriveStatusAndPlacement(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		probe := &flipProbe{down: map[string]bool{}}
		s := newStack(t, db, stackOpts{vpsCapacity: []int{100, 100}, healthProbe: probe})
		ctx := t.Context()
		ids, err := s.store.ActiveVPSIDs(ctx, "", 10)
		if err != nil || len(ids) != 2 {
			t.Fatalf("servers %v, %v", ids, err)
		}
		a := s.vpsID
		b := ids[0]
		if b == a {
			b = ids[1]
		}
		base := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
		period := 0
		sweep := func() {
			t.Helper()
			p := base.Add(time.Duration(period) * time.Minute)
			period++
			if _, err := s.healthSweep.Sweep(ctx, p); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(15 * time.Second)
			for _, id := range []string{a, b} {
				for {
					if _, err := s.store.HealthCheckByKey(ctx, id, p.Format(time.RFC3339)); err == nil {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("check of %s for %s not recorded in 15s", id, p.Format(time.RFC3339))
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			// A check's row commits before its handler counts the result
			// (the health writer answers the handler after the commit):
			// wait for the handler too, so Stats below is complete.
			for {
				st := s.healthCheck.Stats()
				if st.Healthy+st.Degraded+st.Unhealthy+st.Unreachable == uint64(2*period) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%+v counted after sweep %d of 2 servers, want %d results", st, period, 2*period)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		status := func(id string) string {
			t.Helper()
			v, err := s.store.GetVPS(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			return v.HealthStatus
		}
		wantStatus := func(when string, sa, sb string) {
			t.Helper()
			if ga, gb := status(a), status(b); ga != sa || gb != sb {
				t.Fatalf("%s: a=%s b=%s, want a=%s b=%s", when, ga, gb, sa, sb)
			}
		}

		sweep()
		wantStatus("after the first check", models.HealthHealthy, models.HealthHealthy)

		probe.set(a, true)
		sweep()
		sweep()
		wantStatus("after 2 failed checks of a", models.HealthHealthy, models.HealthHealthy)
		sweep()
		wantStatus("after 3 failed checks of a", models.HealthUnhealthy, models.HealthHealthy)

		for i := range 3 {
			op := s.createSite(s.tokenA, fmt.Sprintf("h%d.example", i), "html")
			if got := s.waitOp(s.tokenA, op.ID); got.Status != models.OpSucceeded {
				t.Fatalf("provision %d: %+v", i, got)
			}
			site, err := s.store.SiteByID(ctx, op.TargetID)
			if err != nil {
				t.Fatal(err)
			}
			if site.VPSID == nil || *site.VPSID != b {
				t.Fatalf("site %d placed on %v, want the healthy server %s", i, site.VPSID, b)
			}
		}

		probe.set(b, true)
		sweep()
		sweep()
		sweep()
		wantStatus("after 3 failed checks of b", models.HealthUnhealthy, models.HealthUnhealthy)
		op := s.createSite(s.tokenA, "nowhere.example", "html")
		got := s.waitOp(s.tokenA, op.ID)
		if got.Status != models.OpFailed || got.Error == nil || got.Error.Code != "no_capacity" {
			t.Fatalf("provision with every server unhealthy: %+v, want failed with no_capacity", got)
		}

		probe.set(a, false)
		probe.set(b, false)
		sweep()
		sweep()
		wantStatus("after 2 good checks", models.HealthUnhealthy, models.HealthUnhealthy)
		sweep()
		wantStatus("after 3 good checks", models.HealthHealthy, models.HealthHealthy)

		var rows []models.OutboxEvent
		if err := db.NewSelect().Model(&rows).Where("event_type = ?", "vps.health_changed.v1").OrderExpr("id").Scan(ctx); err != nil {
			t.Fatal(err)
		}
		transitions := map[string]int{}
		for _, r := range rows {
			var e struct{ VPSID, From, To string }
			if err := json.Unmarshal([]byte(r.Data), &e); err != nil {
				t.Fatal(err)
			}
			transitions[fmt.Sprintf("%s %s→%s", map[string]string{a: "a", b: "b"}[r.Subject], e.From, e.To)]++
		}
		want := map[string]int{
			"a unknown→healthy": 1, "a healthy→unhealthy": 1, "a unhealthy→healthy": 1,
			"b unknown→healthy": 1, "b healthy→unhealthy": 1, "b unhealthy→healthy": 1,
		}
		if len(rows) != 6 || fmt.Sprint(transitions) != fmt.Sprint(want) {
			t.Fatalf("events %v (%d rows), want each transition once: %v", transitions, len(rows), want)
		}
		counts, err := s.store.CountVPSByHealth(ctx)
		if err != nil || counts[models.HealthHealthy] != 2 {
			t.Fatalf("CountVPSByHealth = %v, %v", counts, err)
		}
		if st, ok, err := s.store.LastCompleteSweep(ctx); err != nil || !ok || st.Servers != 2 {
			t.Fatalf("LastCompleteSweep = %+v, %v, %v", st, ok, err)
		}
		// 10 sweeps of 2 servers: a was down in 6 of them, b in 3.
		if st := s.healthCheck.Stats(); st.Healthy != 11 || st.Unreachable != 9 {
			t.Errorf("Stats = %+v, want 11 healthy and 9 unreachable results", st)
		}
	})
}

// POST /api/v1/vps/{id}/health-check: admin only, 202 with an operation that
// succeeds with the check's result; an unknown server is a 404.
func TestHealthCheckOnDemand(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		probe := &flipProbe{down: map[string]bool{}}
		s := newStack(t, db, stackOpts{healthProbe: probe})
		path := "/api/v1/vps/" + s.vpsID + "/health-check"

		if r := s.do("POST", path, s.tokenA, nil); r.status != http.StatusForbidden {
			t.Fatalf("write token: %d %s, want 403", r.status, r.body)
		}
		if r := s.do("POST", "/api/v1/vps/"+models.NewID(models.PrefixVPS)+"/health-check", s.admin, nil); r.status != http.StatusNotFound {
			t.Fatalf("unknown server: %d %s, want 404", r.status, r.body)
		}
		probe.set(s.vpsID, true)
		r := s.do("POST", path, s.admin, nil, "Idempotency-Key", "check-1")
		if r.status != http.StatusAccepted || r.header.Get("Location") == "" || r.header.Get("Retry-After") == "" {
			t.Fatalf("POST health-check: %d %v %s", r.status, r.header, r.body)
		}
		var op struct {
			ID       string `json:"id"`
			Type     string `json:"type"`
			TargetID string `json:"target_id"`
		}
		r.json(t, &op)
		if op.Type != models.OpTypeVPSHealthCheck || op.TargetID != s.vpsID {
			t.Fatalf("operation %+v", op)
		}
		if again := s.do("POST", path, s.admin, nil, "Idempotency-Key", "check-1"); !json.Valid(again.body) ||
			again.status != http.StatusAccepted {
			t.Fatalf("replay: %d %s", again.status, again.body)
		} else {
			var op2 struct{ ID string }
			again.json(t, &op2)
			if op2.ID != op.ID {
				t.Fatalf("replay gave operation %s, want %s", op2.ID, op.ID)
			}
		}
		done := s.waitOp(s.admin, op.ID)
		if done.Status != models.OpSucceeded {
			t.Fatalf("operation %+v", done)
		}
		var res struct {
			VPSID  string `json:"vps_id"`
			Result string `json:"result"`
			Status string `json:"status"`
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal(done.Result, &res); err != nil {
			t.Fatal(err)
		}
		// An unknown server takes its first result at once: unreachable → unhealthy.
		if res.VPSID != s.vpsID || res.Result != models.HealthUnhealthy || res.Status != models.HealthUnhealthy || res.Reason != "unreachable" {
			t.Fatalf("result %s", done.Result)
		}
		v, err := s.store.GetVPS(t.Context(), s.vpsID)
		if err != nil || v.HealthStatus != models.HealthUnhealthy {
			t.Fatalf("server after the check: %+v, %v", v, err)
		}
		if n := s.count("vps_health_checks", "check_key = ?", op.ID); n != 1 {
			t.Fatalf("%d checks recorded for the operation, want 1", n)
		}
		g := s.do("GET", "/api/v1/vps/"+s.vpsID, s.admin, nil)
		var view map[string]any
		g.json(t, &view)
		if view["health_reason"] != "unreachable" || view["health_checked_at"] == nil {
			t.Fatalf("GET vps: %s", g.body)
		}
	})
}
