package models_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// renewalSite is an active site on domain whose HTTPS mode is off: no
// automatic issuance after its provision, so the only certificate operations
// are the test's. (The sweep renews whatever the mode: a certificate the
// tenant asked for is renewed too.)
func renewalSite(t *testing.T, s *models.Store, tenantID, domain string) string {
	t.Helper()
	p := siteParams(accept(tenantID, "", ""), domain)
	p.HTTPS = models.HTTPSOff
	p.Aliases = []string{"www." + domain}
	acc, err := s.CreateSite(t.Context(), p)
	if err != nil {
		t.Fatalf("CreateSite(%s): %v", domain, err)
	}
	op := acc.Operation
	if _, err := s.StartOperation(t.Context(), op.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AssignVPS(t.Context(), op.TargetID); err != nil {
		t.Fatalf("AssignVPS: %v", err)
	}
	if ok, err := s.CompleteProvision(t.Context(), op.ID, op.TargetID, models.ProvisionedSite{}, nil, nil); err != nil || !ok {
		t.Fatalf("CompleteProvision = %v, %v", ok, err)
	}
	return op.TargetID
}

// putDue stores an issued ACME certificate of siteID expiring at notAfter,
// due at renewAfter.
func putDue(t *testing.T, cs *models.CertificateStore, siteID string, notAfter, renewAfter time.Time) {
	t.Helper()
	rec := issuedCert(siteID, notAfter)
	rec.RenewAfter = &renewAfter
	if err := cs.PutCertificate(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
}

// renewAfter reads a site's renew_after (nil when cleared).
func renewAfter(t *testing.T, db bun.IDB, siteID string) *time.Time {
	t.Helper()
	var row struct {
		RenewAfter *time.Time `bun:"renew_after"`
	}
	if err := db.NewSelect().Table("site_certificates").Column("renew_after").Where("site_id = ?", siteID).Scan(t.Context(), &row); err != nil {
		t.Fatalf("renew_after of %s: %v", siteID, err)
	}
	return row.RenewAfter
}

func issueOps(t *testing.T, db bun.IDB, siteID string) int {
	t.Helper()
	return count(t, db, "operations", "target_id = ? AND op_type = ?", siteID, models.OpTypeCertificateIssue)
}

// TestStartRenewal: a due certificate gets one renewal operation; every site
// with nothing to start gets nil, and a due one that cannot start now is
// moved out of the way (or, deleted, off the schedule).
func TestStartRenewal(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, clk := setupClock(t, db)
		cs := certStore(t, s, keyRing(t, keySpec(t, "k1")), models.BudgetLimits{})
		ten := tenant(t, s, "alpha")
		registerVPS(t, s, "web1", 20)
		site := func(name string) string { return renewalSite(t, s, ten, name+".example") }
		now := epoch
		past, future := now.Add(-time.Minute), now.Add(time.Hour)

		t.Run("due", func(t *testing.T) {
			id := site("due")
			putDue(t, cs, id, now.Add(30*24*time.Hour), past)
			op, err := s.StartRenewal(ctx, id)
			if err != nil || op == nil {
				t.Fatalf("StartRenewal = %v, %v; want an operation", op, err)
			}
			p := decodeJSON[models.CertificatePayload](t, op.Payload)
			if op.Type != models.OpTypeCertificateIssue || op.Status != models.OpPending || op.TenantID != ten || op.TargetID != id ||
				p.Reason != models.IssueRenewal || len(p.Domains) != 2 || p.Domains[0] != "due.example" || p.Domains[1] != "www.due.example" {
				t.Errorf("operation %+v, payload %+v", op, p)
			}
			stored := opRow(t, s, op.ID)
			if stored.Status != models.OpPending || stored.Payload != op.Payload {
				t.Errorf("stored operation %+v", stored)
			}
			if n := count(t, db, "audit_logs", "operation_id = ? AND actor = ? AND action = ?", op.ID, models.RenewalActor, "certificate.issue"); n != 1 {
				t.Errorf("%d audit rows by %s; want 1", n, models.RenewalActor)
			}
			if at := renewAfter(t, db, id); at == nil || !at.Equal(now.Add(models.RenewalRecheck)) {
				t.Errorf("renew_after after the start = %v; want now + %v", at, models.RenewalRecheck)
			}
			// Not due any more, then due again while the renewal runs: busy.
			if op, err := s.StartRenewal(ctx, id); op != nil || err != nil {
				t.Errorf("second StartRenewal = %v, %v; want nil, nil", op, err)
			}
			clk.Advance(2 * time.Hour)
			t.Cleanup(func() { clk.Advance(-2 * time.Hour) })
			if op, err := s.StartRenewal(ctx, id); op != nil || err != nil {
				t.Errorf("StartRenewal while the renewal runs = %v, %v; want nil, nil", op, err)
			}
			if at := renewAfter(t, db, id); at == nil || !at.Equal(now.Add(2*time.Hour+models.RenewalRecheck)) {
				t.Errorf("renew_after of a busy site = %v; want moved %v on", at, models.RenewalRecheck)
			}
			if n := issueOps(t, db, id); n != 1 {
				t.Errorf("%d certificate.issue operations; want 1", n)
			}
			// The database refuses a second unfinished issuance whatever the code checks.
			dup := *stored
			dup.ID = models.NewID(models.PrefixOperation)
			if _, err := db.NewInsert().Model(&dup).Exec(ctx); err == nil {
				t.Error("a second unfinished certificate.issue of the site was inserted")
			}
		})
		t.Run("expired", func(t *testing.T) {
			id := site("expired")
			putDue(t, cs, id, now.Add(-24*time.Hour), now.Add(-31*24*time.Hour))
			due, err := cs.DueForRenewal(ctx, now, 100)
			if err != nil {
				t.Fatal(err)
			}
			listed := false
			for _, r := range due {
				listed = listed || r.SiteID == id
			}
			if !listed {
				t.Fatalf("an expired certificate is not due: %+v", due)
			}
			if op, err := s.StartRenewal(ctx, id); op == nil || err != nil {
				t.Fatalf("StartRenewal of an expired certificate = %v, %v", op, err)
			}
		})
		t.Run("first issuance failed", func(t *testing.T) {
			id := site("failed")
			if err := cs.RecordCertificateError(ctx, id, "ca_unreachable", "the CA did not answer", past); err != nil {
				t.Fatal(err)
			}
			if op, err := s.StartRenewal(ctx, id); op == nil || err != nil {
				t.Fatalf("StartRenewal after a failed first issuance = %v, %v; want the retry started", op, err)
			}
		})
		for _, tc := range []struct {
			name  string
			setup func(id string)
			// renew is what renew_after must be after the call.
			renew *time.Time
		}{
			{"not due", func(id string) { putDue(t, cs, id, now.Add(40*24*time.Hour), future) }, &future},
			{"no record", func(string) {}, nil},
			{"upload", func(id string) {
				rec := issuedCert(id, now.Add(10*24*time.Hour))
				rec.Source, rec.RenewAfter = models.SourceUpload, &past
				if err := cs.PutCertificate(ctx, rec); err != nil {
					t.Fatal(err)
				}
			}, &past},
			{"deleted", func(id string) {
				putDue(t, cs, id, now.Add(20*24*time.Hour), past)
				if _, err := db.NewUpdate().Table("sites").Set("status = ?", models.SiteStatusDeleted).Set("deleted_at = ?", now).
					Where("id = ?", id).Exec(ctx); err != nil {
					t.Fatal(err)
				}
			}, nil},
			{"not active", func(id string) {
				putDue(t, cs, id, now.Add(20*24*time.Hour), past)
				if _, err := db.NewUpdate().Table("sites").Set("status = ?", models.SiteStatusPendingVerification).
					Where("id = ?", id).Exec(ctx); err != nil {
					t.Fatal(err)
				}
			}, ptr(now.Add(models.RenewalRecheck))},
			{"busy", func(id string) {
				putDue(t, cs, id, now.Add(20*24*time.Hour), past)
				if _, err := s.StartCertificateIssue(ctx, accept(ten, "", ""), id, models.IssueRequest{}); err != nil {
					t.Fatal(err)
				}
			}, ptr(now.Add(models.RenewalRecheck))},
		} {
			t.Run(tc.name, func(t *testing.T) {
				id := site(strings.ReplaceAll(tc.name, " ", "-"))
				tc.setup(id)
				before := issueOps(t, db, id)
				op, err := s.StartRenewal(ctx, id)
				if op != nil || err != nil {
					t.Fatalf("StartRenewal = %v, %v; want nil, nil", op, err)
				}
				if n := issueOps(t, db, id); n != before {
					t.Errorf("%d certificate.issue operations, %d before; want none added", n, before)
				}
				if tc.name == "no record" {
					return
				}
				at := renewAfter(t, db, id)
				if (at == nil) != (tc.renew == nil) || (at != nil && !at.Equal(*tc.renew)) {
					t.Errorf("renew_after = %v; want %v", at, tc.renew)
				}
			})
		}
	})
}

// TestStartRenewalConcurrent: two schedulers' sweeps (two stores over one
// PostgreSQL database) starting the renewals of the same due sites at the
// same time start exactly one per site.
func TestStartRenewalConcurrent(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := t.Context()
	a, clk := setupClock(t, db)
	b, err := models.New(models.Config{DB: db, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	cs := certStore(t, a, keyRing(t, keySpec(t, "k1")), models.BudgetLimits{})
	ten := tenant(t, a, "alpha")
	registerVPS(t, a, "web1", 50)
	const sites, callers = 30, 8
	ids := make([]string, sites)
	for i := range ids {
		ids[i] = renewalSite(t, a, ten, fmt.Sprintf("c%02d.example", i))
		putDue(t, cs, ids[i], epoch.Add(10*24*time.Hour), epoch.Add(-time.Duration(i)*time.Minute))
	}
	var mu sync.Mutex
	started := map[string][]string{}
	var failures []error
	var wg sync.WaitGroup
	begin := time.Now()
	for c := range callers {
		store := []*models.Store{a, b}[c%2]
		order := rand.Perm(sites)
		wg.Go(func() {
			for _, i := range order {
				op, err := store.StartRenewal(ctx, ids[i])
				mu.Lock()
				if err != nil {
					failures = append(failures, err)
				} else if op != nil {
					started[ids[i]] = append(started[ids[i]], op.ID)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("%d callers × %d due sites: %d renewals started in %v", callers, sites, len(started), time.Since(begin))
	if len(failures) > 0 {
		t.Fatalf("%d calls failed, first: %v", len(failures), failures[0])
	}
	for _, id := range ids {
		if len(started[id]) != 1 {
			t.Errorf("site %s: %d renewals started (%v); want 1", id, len(started[id]), started[id])
		}
		if n := issueOps(t, db, id); n != 1 {
			t.Errorf("site %s: %d certificate.issue operations stored; want 1", id, n)
		}
	}
}

// TestRenewalInfoRecords: the certificates to ask the CA about, and what an
// answer changes: renew_after only earlier, never for a record whose last
// attempt failed or whose certificate was replaced meanwhile.
func TestRenewalInfoRecords(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		cs := certStore(t, s, keyRing(t, keySpec(t, "k1")), models.BudgetLimits{})
		ten := tenant(t, s, "alpha")
		registerVPS(t, s, "web1", 20)
		now := epoch
		renew := now.Add(50 * 24 * time.Hour)
		a, b, c, d := renewalSite(t, s, ten, "a.example"), renewalSite(t, s, ten, "b.example"), renewalSite(t, s, ten, "c.example"), renewalSite(t, s, ten, "d.example")
		for _, id := range []string{a, b, c} {
			putDue(t, cs, id, now.Add(80*24*time.Hour), renew)
		}
		if err := cs.RecordCertificateError(ctx, d, "ca_unreachable", "down", now.Add(time.Hour)); err != nil {
			t.Fatal(err) // no certificate: never asked about
		}
		list := func(at time.Time) []string {
			t.Helper()
			got, err := s.RenewalInfoDue(ctx, at, 10)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, g := range got {
				if g.ChainPEM == "" || g.Serial == "" || g.NotAfter.IsZero() {
					t.Errorf("check %+v lacks the certificate", g)
				}
				ids = append(ids, g.SiteID)
			}
			return ids
		}
		if got := list(now); len(got) != 3 {
			t.Fatalf("never asked: %v; want a, b, c", got)
		}
		// a: the CA's time is later: renew_after stays; asked again in 6 h.
		later := renew.Add(24 * time.Hour)
		if moved, err := s.RecordRenewalInfo(ctx, a, "0a1b", &later, now.Add(6*time.Hour)); err != nil || moved {
			t.Errorf("a later window: moved %v, %v; want not moved", moved, err)
		}
		if at := renewAfter(t, db, a); !at.Equal(renew) {
			t.Errorf("renew_after of a = %v; want %v", at, renew)
		}
		// b: the CA's time is earlier: it moves.
		if moved, err := s.RecordRenewalInfo(ctx, b, "0a1b", &now, now.Add(6*time.Hour)); err != nil || !moved {
			t.Errorf("an earlier window: moved %v, %v; want moved", moved, err)
		}
		if at := renewAfter(t, db, b); !at.Equal(now) {
			t.Errorf("renew_after of b = %v; want %v", at, now)
		}
		// c: asked about another serial (replaced meanwhile): nothing changes.
		if moved, err := s.RecordRenewalInfo(ctx, c, "ffff", &now, now.Add(6*time.Hour)); err != nil || moved {
			t.Errorf("another serial: moved %v, %v; want not moved", moved, err)
		}
		if got := list(now.Add(time.Hour)); len(got) != 1 || got[0] != c {
			t.Errorf("an hour on: %v; want only c (a and b asked, c's answer was about another certificate)", got)
		}
		if got := list(now.Add(6 * time.Hour)); len(got) != 3 || got[0] != c {
			t.Errorf("6 h on: %v; want c (never asked) first, then a and b", got)
		}
		// A failed renewal's retry time stands.
		if err := cs.RecordCertificateError(ctx, a, "ca_unreachable", "down", now.Add(2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if moved, err := s.RecordRenewalInfo(ctx, a, "0a1b", &now, now.Add(6*time.Hour)); err != nil || moved {
			t.Errorf("after a failed attempt: moved %v, %v; want the retry time kept", moved, err)
		}
		// A deleted site is not asked about.
		if _, err := db.NewUpdate().Table("sites").Set("status = ?", models.SiteStatusDeleted).Set("deleted_at = ?", now).
			Where("id = ?", c).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		for _, id := range list(now.Add(7 * time.Hour)) {
			if id == c {
				t.Error("a deleted site's certificate is asked about")
			}
		}
		if _, err := s.RecordRenewalInfo(ctx, "site_missing", "00", nil, now); err != nil && !errors.Is(err, models.ErrNotFound) {
			t.Errorf("an unknown site: %v", err)
		}
	})
}

// TestIssueRacesRenewal: tenants asking for a certificate while the sweep
// starts the renewal of the same sites, on PostgreSQL, at once: each site
// gets exactly one certificate operation, and every loser is told so with a
// conflict (a 409), never a database error (a 500).
func TestIssueRacesRenewal(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	ctx := t.Context()
	s, clk := setupClock(t, db)
	cs := certStore(t, s, keyRing(t, keySpec(t, "k1")), models.BudgetLimits{})
	ten := tenant(t, s, "alpha")
	registerVPS(t, s, "web1", 50)
	const sites = 20
	ids := make([]string, sites)
	for i := range ids {
		ids[i] = renewalSite(t, s, ten, fmt.Sprintf("r%02d.example", i))
		putDue(t, cs, ids[i], epoch.Add(10*24*time.Hour), epoch.Add(-time.Minute))
	}
	_ = clk
	var mu sync.Mutex
	won := map[string]int{}
	var unexpected []error
	var wg sync.WaitGroup
	for i, id := range ids {
		for c := range 4 {
			wg.Go(func() {
				var err error
				var op *models.Operation
				if c%2 == 0 {
					op, err = s.StartRenewal(ctx, id)
				} else {
					var acc *models.Accepted
					acc, err = s.StartCertificateIssue(ctx, accept(ten, "", fmt.Sprintf("req-%d-%d", i, c)), id, models.IssueRequest{})
					if acc != nil {
						op = acc.Operation
					}
				}
				var conflict *models.ConflictError
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil && op != nil:
					won[id]++
				case err == nil, errors.As(err, &conflict):
				default:
					unexpected = append(unexpected, err)
				}
			})
		}
	}
	wg.Wait()
	for _, err := range unexpected {
		t.Errorf("a racing request failed with %v; want a conflict", err)
	}
	for _, id := range ids {
		if won[id] != 1 || issueOps(t, db, id) != 1 {
			t.Errorf("site %s: %d started, %d stored; want 1 and 1", id, won[id], issueOps(t, db, id))
		}
	}
}
