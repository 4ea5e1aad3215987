package models

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
)

// These tests drive SiteAcceptor from inside the package so that a batch can be
// formed deterministically: oneBatch hands every request, in order, to the
// acceptor's commit, as its committer would hand one batch (internal/groupcommit
// is tested on its own).

func batchSetup(t *testing.T, db *bun.DB) (*Store, string, string) {
	t.Helper()
	if _, err := MigrateUp(t.Context(), db); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	s, err := New(Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, name := range []string{"acme", "other"} {
		ten, err := s.EnsureTenant(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ten.ID)
	}
	return s, ids[0], ids[1]
}

type batchResult struct {
	acc *Accepted
	err error
}

// oneBatch commits every request, in order, as one batch.
func oneBatch(t *testing.T, s *Store, reqs []CreateSiteParams) []batchResult {
	t.Helper()
	a, err := NewSiteAcceptor(SiteAcceptorConfig{Store: s, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	batch := make([]*pendingSite, len(reqs))
	for i, p := range reqs {
		batch[i] = &pendingSite{ctx: t.Context(), p: p}
	}
	res, err := a.commit(t.Context(), batch)
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	out := make([]batchResult, len(reqs))
	for i, r := range res {
		out[i] = batchResult{r.Value, r.Err}
	}
	return out
}

func req(tenantID, key, hash, domain string) CreateSiteParams {
	return CreateSiteParams{Accept: Accept{TenantID: tenantID, Actor: "tok_b", RequestID: "req", IdempotencyKey: key, RequestHash: hash},
		Domain: domain, SiteType: "static"}
}

type tableCounts struct{ Sites, Operations, Audit, Keys int }

func tableRows(t *testing.T, db bun.IDB) tableCounts {
	t.Helper()
	n := func(table string) int {
		c, err := db.NewSelect().Table(table).Count(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return int(c)
	}
	return tableCounts{n("sites"), n("operations"), n("audit_logs"), n("idempotency_keys")}
}

// outcome summarises a result as "new", "replay", "conflict", "mismatch" or the error.
func outcome(r batchResult) string {
	var ce *ConflictError
	switch {
	case r.err == nil && r.acc.Replayed:
		return "replay"
	case r.err == nil && r.acc.Held:
		return "held"
	case r.err == nil:
		return "new"
	case errors.As(r.err, &ce):
		return "conflict"
	case errors.Is(r.err, ErrIdempotencyMismatch):
		return "mismatch"
	default:
		return r.err.Error()
	}
}

func outcomes(rs []batchResult) []string {
	var out []string
	for _, r := range rs {
		out = append(out, outcome(r))
	}
	return out
}

func TestSiteAcceptorBatchSemantics(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, acme, other := batchSetup(t, db)
		// Already in the database before the batch.
		if _, err := s.CreateSite(ctx, req(acme, "old-key", "h-old", "old.example")); err != nil {
			t.Fatal(err)
		}
		before := tableRows(t, db)

		res := oneBatch(t, s, []CreateSiteParams{
			req(acme, "k1", "h1", "one.example"),         // 0 new
			req(acme, "k1", "h1", "one.example"),         // 1 same key, same body: replays 0
			req(acme, "k1", "h-other", "x.example"),      // 2 same key, other body: mismatch
			req(other, "k1", "h1", "two.example"),        // 3 another tenant's k1: new
			req(acme, "old-key", "h-old", "old.example"), // 4 replay of a committed request
			req(acme, "old-key", "h-new", "y.example"),   // 5 mismatch with a committed key
			req(acme, "k2", "h2", "old.example"),         // 6 domain live in the database
			req(acme, "", "", "three.example"),           // 7 new, no key
		})
		want := []string{"new", "replay", "mismatch", "new", "replay", "mismatch", "conflict", "new"}
		if diff := cmp.Diff(want, outcomes(res)); diff != "" {
			t.Fatalf("outcomes (-want +got):\n%s", diff)
		}
		if res[1].acc.Operation.ID != res[0].acc.Operation.ID {
			t.Errorf("replay in the batch returned %s, want %s", res[1].acc.Operation.ID, res[0].acc.Operation.ID)
		}
		wantRows := tableCounts{Sites: before.Sites + 3, Operations: before.Operations + 3, Audit: before.Audit + 3, Keys: before.Keys + 2}
		if diff := cmp.Diff(wantRows, tableRows(t, db)); diff != "" {
			t.Fatalf("rows (-want +got):\n%s", diff)
		}
	})
}

// TestSiteAcceptorSameDomainInOneBatch: a request refused for its domain writes
// nothing, not even its idempotency key, even when it lost to a request of the
// same batch; retried alone it is refused the same way.
func TestSiteAcceptorSameDomainInOneBatch(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, acme, other := batchSetup(t, db)
		var reqs []CreateSiteParams
		for i := range 5 {
			ten := acme
			if i%2 == 1 {
				ten = other
			}
			reqs = append(reqs, req(ten, fmt.Sprintf("k%d", i), "h", "same.example"))
		}
		res := oneBatch(t, s, reqs)
		// Each tenant gets the domain once; the second tenant's claim waits for proof.
		want := []string{"new", "held", "conflict", "conflict", "conflict"}
		if diff := cmp.Diff(want, outcomes(res)); diff != "" {
			t.Fatalf("outcomes (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(tableCounts{2, 2, 2, 2}, tableRows(t, db)); diff != "" {
			t.Errorf("rows (-want +got):\n%s", diff)
		}
		// The losers retry: still a conflict (not "not found"), and still nothing written.
		for _, p := range reqs[2:] {
			_, err := s.CreateSite(ctx, p)
			var ce *ConflictError
			if !errors.As(err, &ce) {
				t.Errorf("retry of %s/%s = %v, want a ConflictError", p.TenantID, p.IdempotencyKey, err)
			}
		}
		if diff := cmp.Diff(tableCounts{2, 2, 2, 2}, tableRows(t, db)); diff != "" {
			t.Errorf("rows after retries (-want +got):\n%s", diff)
		}
	})
}

// TestSiteAcceptorRepeatedKeyRefused: the same request twice in one batch, for a
// domain already live: both are refused as CreateSite would refuse them.
func TestSiteAcceptorRepeatedKeyRefused(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, acme, _ := batchSetup(t, db)
		if _, err := s.CreateSite(ctx, req(acme, "", "", "taken.example")); err != nil {
			t.Fatal(err)
		}
		res := oneBatch(t, s, []CreateSiteParams{
			req(acme, "k", "h", "taken.example"),
			req(acme, "k", "h", "taken.example"),
		})
		if diff := cmp.Diff([]string{"conflict", "conflict"}, outcomes(res)); diff != "" {
			t.Fatalf("outcomes (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(tableCounts{1, 1, 1, 0}, tableRows(t, db)); diff != "" {
			t.Errorf("rows (-want +got):\n%s", diff)
		}
	})
}

// TestSiteAcceptorConcurrent runs the acceptor as production does (several
// committers) under concurrent load.
func TestSiteAcceptorConcurrent(t *testing.T) {
	t.Parallel()
	const n = 40
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		s, acme, _ := batchSetup(t, db)
		a, err := NewSiteAcceptor(SiteAcceptorConfig{Store: s, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		res := make([]batchResult, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				var p CreateSiteParams
				switch i % 4 {
				case 0: // the same request, over and over
					p = req(acme, "same", "h", "same.example")
				case 1: // one contested domain under many keys
					p = req(acme, fmt.Sprintf("dom-%d", i), "h", "contested.example")
				default: // distinct sites
					p = req(acme, fmt.Sprintf("own-%d", i), "h", fmt.Sprintf("site%d.example", i))
				}
				res[i].acc, res[i].err = a.CreateSite(t.Context(), p)
			})
		}
		wg.Wait()
		sameOps := map[string]bool{}
		contestedWon := 0
		for i, r := range res {
			o := outcome(r)
			switch i % 4 {
			case 0:
				if r.err != nil {
					t.Errorf("request %d: %v", i, r.err)
					continue
				}
				sameOps[r.acc.Operation.ID] = true
			case 1:
				if o == "new" {
					contestedWon++
				} else if o != "conflict" {
					t.Errorf("request %d: %s", i, o)
				}
			default:
				if o != "new" {
					t.Errorf("request %d: %s", i, o)
				}
			}
		}
		if len(sameOps) != 1 || contestedWon != 1 {
			t.Fatalf("%d operations for the repeated request, %d winners of the contested domain; want 1 and 1", len(sameOps), contestedWon)
		}
		// 1 repeated + 1 contested + n/2 distinct sites; keys likewise.
		want := tableCounts{2 + n/2, 2 + n/2, 2 + n/2, 2 + n/2}
		if diff := cmp.Diff(want, tableRows(t, db)); diff != "" {
			t.Fatalf("rows (-want +got):\n%s", diff)
		}
	})
}

func TestNewSiteAcceptorValidates(t *testing.T) {
	t.Parallel()
	if _, err := NewSiteAcceptor(SiteAcceptorConfig{}); err == nil {
		t.Fatal("NewSiteAcceptor with no Store and no Logger: no error")
	}
}

// A request whose caller left before its batch committed writes nothing, and
// does not hold up its batch.
func TestSiteAcceptorCallerGone(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		s, tenant, _ := batchSetup(t, db)
		a, err := NewSiteAcceptor(SiteAcceptorConfig{Store: s, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		gone, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := a.CreateSite(gone, req(tenant, "", "", "early.example")); !errors.Is(err, context.Canceled) {
			t.Fatalf("CreateSite with an ended context: %v, want context.Canceled", err)
		}
		res, err := a.commit(t.Context(), []*pendingSite{
			{ctx: gone, p: req(tenant, "k-gone", "h", "gone.example")},
			{ctx: t.Context(), p: req(tenant, "k-here", "h", "here.example")},
		})
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(res[0].Err, context.Canceled) || res[1].Err != nil || res[1].Value == nil {
			t.Fatalf("outcomes %+v, %+v; want the gone request refused, the other accepted", res[0], res[1])
		}
		var domains []string
		if err := db.NewSelect().Table("sites").Column("domain").Scan(t.Context(), &domains); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(domains, []string{"here.example"}) {
			t.Fatalf("sites %v, want only here.example", domains)
		}
		if n, err := db.NewSelect().Table("idempotency_keys").Where("idem_key = 'k-gone'").Count(t.Context()); err != nil || n != 0 {
			t.Fatalf("the gone request's key: %d rows (%v)", n, err)
		}
	})
}
