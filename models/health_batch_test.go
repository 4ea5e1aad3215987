package models_test

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// Concurrent checks through a HealthWriter keep RecordHealthCheck's
// semantics check by check: 40 servers checked at once, plus a second delivery
// of 8 of those checks, a check of an unknown server and one whose decide
// fails. Ledger: one check per (server, key), one event per status change,
// each server's state and first pinned key written, the unknown server
// ErrNotFound and the failing decide its own error, nothing else failed; a
// second period with the same results writes no event.
func TestHealthWriter(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		w, err := models.NewHealthWriter(models.HealthWriterConfig{Store: s, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		const n = 40
		var vpsIDs []string
		for i := range n {
			vpsIDs = append(vpsIDs, registerVPS(t, s, fmt.Sprintf("web%02d.example", i), 5).ID)
		}
		boom := errors.New("boom")
		// record sends one check of server id for period p to status, with a
		// transition event when the status changes, pinning a key on even
		// servers; fail makes decide fail.
		type result struct {
			id   string
			rec  *models.HealthRecorded
			err  error
			fail bool
		}
		record := func(id string, i int, p time.Time, status string, fail bool) result {
			key := p.Format(time.RFC3339)
			c := &models.VPSHealthCheck{VPSID: id, CheckKey: key, Source: models.HealthSourceSweep, PeriodStart: &p,
				Result: status, Reason: "r-" + key, Reachable: true}
			rec, err := w.RecordHealthCheck(ctx, c, func(v *models.VPSServer) (models.HealthDecision, error) {
				if fail {
					return models.HealthDecision{}, boom
				}
				d := models.HealthDecision{Next: models.HealthState{Status: status}}
				if i%2 == 0 {
					d.PinHostKey = fmt.Sprintf("ssh-ed25519 AAAA%d-%s", i, key)
				}
				if v.HealthStatus != status {
					d.Events = append(d.Events, event(id, id, "evt-"+id+"-"+key))
				}
				return d, nil
			})
			return result{id, rec, err, fail}
		}
		for round, p := range []time.Time{epoch.Truncate(time.Minute), epoch.Truncate(time.Minute).Add(time.Minute)} {
			var wg sync.WaitGroup
			results := make(chan result, 2*n+2)
			for i, id := range vpsIDs {
				wg.Go(func() { results <- record(id, i, p, models.HealthHealthy, false) })
				if i%5 == 0 {
					wg.Go(func() { results <- record(id, i, p, models.HealthHealthy, false) }) // delivered twice
				}
			}
			wg.Go(func() { results <- record("vps_missing", 1, p, models.HealthHealthy, false) })
			wg.Go(func() { results <- record(vpsIDs[3], 3, p.Add(time.Second), models.HealthDegraded, true) })
			wg.Wait()
			close(results)
			written := map[string]int{}
			for r := range results {
				switch {
				case r.id == "vps_missing":
					if !errors.Is(r.err, models.ErrNotFound) {
						t.Errorf("round %d: unknown server: %v, want ErrNotFound", round, r.err)
					}
				case r.fail:
					if !errors.Is(r.err, boom) {
						t.Errorf("round %d: failing decide: %v, want its error", round, r.err)
					}
				case r.err != nil:
					t.Errorf("round %d: %s: %v", round, r.id, r.err)
				case !r.rec.Duplicate:
					written[r.id]++
					if r.rec.Check.ID == 0 || r.rec.Check.StatusAfter != models.HealthHealthy {
						t.Errorf("round %d: %s: recorded check %+v", round, r.id, r.rec.Check)
					}
				}
			}
			for _, id := range vpsIDs {
				if written[id] != 1 {
					t.Errorf("round %d: %s written %d times, want once (the other delivery a duplicate)", round, id, written[id])
				}
			}
			if got := count(t, db, "vps_health_checks", "check_key = ?", p.Format(time.RFC3339)); got != n {
				t.Errorf("round %d: %d checks recorded, want %d", round, got, n)
			}
			wantEvents := n
			if round == 1 {
				wantEvents = 0 // healthy again: no change
			}
			if got := count(t, db, "outbox_events", "event_id LIKE ?", "evt-%-"+p.Format(time.RFC3339)); got != wantEvents {
				t.Errorf("round %d: %d events, want %d (one per status change)", round, got, wantEvents)
			}
		}
		if got := count(t, db, "vps_health_checks", "result = ?", models.HealthDegraded); got != 0 {
			t.Errorf("the failing decide's check was written (%d rows)", got)
		}
		for i, id := range vpsIDs {
			v, err := s.GetVPS(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			p := epoch.Truncate(time.Minute).Add(time.Minute)
			wantKey := ""
			if i%2 == 0 {
				wantKey = fmt.Sprintf("ssh-ed25519 AAAA%d-%s", i, epoch.Truncate(time.Minute).Format(time.RFC3339)) // the first pin stays
			}
			if v.HealthStatus != models.HealthHealthy || v.HealthReason != "r-"+p.Format(time.RFC3339) ||
				v.HealthCheckedAt == nil || v.HostKey != wantKey {
				t.Errorf("%s after two periods: status %q reason %q checked %v key %q, want healthy, the second period's, key %q",
					id, v.HealthStatus, v.HealthReason, v.HealthCheckedAt, v.HostKey, wantKey)
			}
		}
		b, c := w.Stats()
		t.Logf("%d checks written in %d batch transactions", c, b)
	})
}
