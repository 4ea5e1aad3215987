package models_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

func TestCreateSite(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		ten := tenant(t, s, "acme")

		acc, err := s.CreateSite(ctx, models.CreateSiteParams{
			Accept: models.Accept{TenantID: ten, Actor: "tok_1", RequestID: "req_1"},
			Domain: "blog.example", SiteType: "wordpress", PHPVersion: "8.3",
		})
		if err != nil {
			t.Fatalf("CreateSite: %v", err)
		}
		if acc.Replayed {
			t.Error("first CreateSite reports Replayed")
		}
		if diff := cmp.Diff(rowCounts{Sites: 1, Operations: 1, Audit: 1}, counts(t, db)); diff != "" {
			t.Fatalf("rows after CreateSite (-want +got):\n%s", diff)
		}

		op := opRow(t, s, acc.Operation.ID)
		if diff := cmp.Diff(acc.Operation, op); diff != "" {
			t.Errorf("returned operation differs from the stored one (-returned +stored):\n%s", diff)
		}
		if !strings.HasPrefix(op.ID, models.PrefixOperation) || op.TenantID != ten ||
			op.Type != models.OpTypeSiteProvision || op.Status != models.OpPending ||
			op.TargetType != models.TargetSite || op.RequestID != "req_1" || op.Attempts != 0 ||
			op.Progress != 0 || !op.CreatedAt.Equal(epoch) || op.StartedAt != nil || op.FinishedAt != nil {
			t.Errorf("operation = %+v", op)
		}
		payload := decodeJSON[models.SitePayload](t, op.Payload)
		want := models.SitePayload{SiteID: op.TargetID, Domain: "blog.example", SiteType: "wordpress", PHPVersion: "8.3"}
		if diff := cmp.Diff(want, payload); diff != "" {
			t.Errorf("payload (-want +got):\n%s", diff)
		}

		site := siteRow(t, s, op.TargetID)
		wantSite := &models.Site{
			ID: op.TargetID, TenantID: ten, Domain: "blog.example", Aliases: models.Aliases{}, SiteType: "wordpress", PHPVersion: "8.3",
			Status: models.SiteStatusPending, OperationID: &op.ID, HTTPS: models.HTTPSAuto, CreatedAt: epoch, UpdatedAt: epoch,
		}
		if diff := cmp.Diff(wantSite, site); diff != "" {
			t.Errorf("site (-want +got):\n%s", diff)
		}

		var audit []models.AuditLog
		if err := db.NewSelect().Model(&audit).Scan(ctx); err != nil {
			t.Fatal(err)
		}
		wantAudit := []models.AuditLog{{
			ID: audit[0].ID, TenantID: ten, Actor: "tok_1", Action: "site.create", TargetType: models.TargetSite,
			TargetID: site.ID, OperationID: &op.ID, RequestID: "req_1", CreatedAt: epoch,
		}}
		if diff := cmp.Diff(wantAudit, audit); diff != "" {
			t.Errorf("audit log (-want +got):\n%s", diff)
		}
	})
}

func TestCreateSiteIdempotency(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, c := setupClock(t, db)
		acme, other := tenant(t, s, "acme"), tenant(t, s, "other")

		first, err := s.CreateSite(ctx, siteParams(accept(acme, "key-1", "hash-a"), "a.example"))
		if err != nil || first.Replayed {
			t.Fatalf("first CreateSite = %+v, %v", first, err)
		}
		want := rowCounts{Sites: 1, Operations: 1, Audit: 1, Keys: 1}
		if diff := cmp.Diff(want, counts(t, db)); diff != "" {
			t.Fatalf("rows after first request (-want +got):\n%s", diff)
		}

		// Same key, same request: the same operation, nothing new.
		c.Advance(time.Hour)
		again, err := s.CreateSite(ctx, siteParams(accept(acme, "key-1", "hash-a"), "a.example"))
		if err != nil {
			t.Fatalf("replayed CreateSite: %v", err)
		}
		if !again.Replayed || again.Operation.ID != first.Operation.ID {
			t.Fatalf("replay = op %s replayed %v; want op %s replayed", again.Operation.ID, again.Replayed, first.Operation.ID)
		}
		if diff := cmp.Diff(first.Operation, again.Operation); diff != "" {
			t.Errorf("replayed operation differs (-first +replay):\n%s", diff)
		}
		if diff := cmp.Diff(want, counts(t, db)); diff != "" {
			t.Fatalf("rows after replay (-want +got):\n%s", diff)
		}

		// Same key, different request: a mismatch, nothing new (not even with a new domain).
		for _, domain := range []string{"a.example", "b.example"} {
			acc, err := s.CreateSite(ctx, siteParams(accept(acme, "key-1", "hash-b"), domain))
			if !errors.Is(err, models.ErrIdempotencyMismatch) {
				t.Fatalf("CreateSite with a reused key and another body = %+v, %v; want ErrIdempotencyMismatch", acc, err)
			}
		}
		if diff := cmp.Diff(want, counts(t, db)); diff != "" {
			t.Fatalf("rows after mismatch (-want +got):\n%s", diff)
		}

		// The same key from another tenant is another key.
		theirs, err := s.CreateSite(ctx, siteParams(accept(other, "key-1", "hash-a"), "c.example"))
		if err != nil || theirs.Replayed || theirs.Operation.ID == first.Operation.ID || theirs.Operation.TenantID != other {
			t.Fatalf("other tenant's CreateSite = %+v, %v; want a new operation of its own", theirs, err)
		}
		want = rowCounts{Sites: 2, Operations: 2, Audit: 2, Keys: 2}
		if diff := cmp.Diff(want, counts(t, db)); diff != "" {
			t.Fatalf("rows after other tenant (-want +got):\n%s", diff)
		}

		// Past the TTL the key is forgotten: a new request takes it over.
		c.Advance(24 * time.Hour)
		fresh, err := s.CreateSite(ctx, siteParams(accept(acme, "key-1", "hash-b"), "d.example"))
		if err != nil || fresh.Replayed || fresh.Operation.ID == first.Operation.ID {
			t.Fatalf("CreateSite with an expired key = %+v, %v; want a new operation", fresh, err)
		}
		want = rowCounts{Sites: 3, Operations: 3, Audit: 3, Keys: 2}
		if diff := cmp.Diff(want, counts(t, db)); diff != "" {
			t.Fatalf("rows after take-over (-want +got):\n%s", diff)
		}
		var key models.IdempotencyKey
		if err := db.NewSelect().Model(&key).Where("tenant_id = ? AND idem_key = ?", acme, "key-1").Scan(ctx); err != nil {
			t.Fatal(err)
		}
		now := epoch.Add(25 * time.Hour)
		wantKey := models.IdempotencyKey{TenantID: acme, Key: "key-1", RequestHash: "hash-b",
			OperationID: fresh.Operation.ID, CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour)}
		if diff := cmp.Diff(wantKey, key, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".BaseModel" }, cmp.Ignore())); diff != "" {
			t.Errorf("key after take-over (-want +got):\n%s", diff)
		}
		// And now replays the new operation.
		replay, err := s.CreateSite(ctx, siteParams(accept(acme, "key-1", "hash-b"), "d.example"))
		if err != nil || !replay.Replayed || replay.Operation.ID != fresh.Operation.ID {
			t.Fatalf("replay after take-over = %+v, %v; want op %s replayed", replay, err, fresh.Operation.ID)
		}
	})
}

func TestCreateSiteDomainConflict(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		acme, other := tenant(t, s, "acme"), tenant(t, s, "other")
		siteID, prov := createSite(t, s, acme, "taken.example")
		want := rowCounts{Sites: 1, Operations: 1, Audit: 1}

		// The same tenant again: a conflict, as always.
		for _, a := range []models.Accept{
			accept(acme, "", ""),
			accept(acme, "key-a", "h"),
		} {
			acc, err := s.CreateSite(ctx, siteParams(a, "taken.example"))
			if err != nil {
				wantConflict(t, err)
			} else {
				t.Fatalf("CreateSite of a live domain by %s = %+v; want ConflictError", a.TenantID, acc)
			}
			if diff := cmp.Diff(want, counts(t, db)); diff != "" {
				t.Fatalf("rows after conflict (-want +got):\n%s", diff)
			}
		}
		// Another tenant: accepted, held for verification (domains_test.go
		// covers the claims).
		held, err := s.CreateSite(ctx, siteParams(accept(other, "key-o", "h"), "taken.example"))
		if err != nil || !held.Held {
			t.Fatalf("CreateSite of another tenant's domain = %+v, %v; want a held site", held, err)
		}
		if got := siteRow(t, s, held.Operation.TargetID).Status; got != models.SiteStatusPendingVerification {
			t.Fatalf("held site status = %s, want %s", got, models.SiteStatusPendingVerification)
		}
		if _, err := s.CreateSite(ctx, siteParams(accept(other, "", ""), "taken.example")); err == nil {
			t.Fatal("a tenant claimed the same domain twice")
		}

		// Delete the site: the domain is free again, for any tenant.
		ok, err := s.CompleteProvision(ctx, prov.ID, siteID, models.ProvisionedSite{}, nil, nil)
		if err != nil || !ok {
			t.Fatalf("CompleteProvision = %v, %v", ok, err)
		}
		del, err := s.DeleteSite(ctx, accept(acme, "", ""), siteID)
		if err != nil {
			t.Fatalf("DeleteSite: %v", err)
		}
		// Still live while deprovisioning.
		if _, err := s.CreateSite(ctx, siteParams(accept(acme, "", ""), "taken.example")); err == nil {
			t.Fatal("domain of a deprovisioning site was reused")
		}
		if ok, err := s.CompleteDeprovision(ctx, del.Operation.ID, siteID, nil); err != nil || !ok {
			t.Fatalf("CompleteDeprovision = %v, %v", ok, err)
		}
		acc, err := s.CreateSite(ctx, siteParams(accept(acme, "key-a2", "h"), "taken.example"))
		if err != nil || acc.Replayed {
			t.Fatalf("CreateSite after delete = %+v, %v; want a new site", acc, err)
		}
		if n := count(t, db, "sites", "domain = ? AND tenant_id = ?", "taken.example", acme); n != 2 {
			t.Fatalf("%d sites of acme with the domain, want 2 (one deleted, one new)", n)
		}
		if n := count(t, db, "sites", "domain = ? AND deleted_at IS NULL AND tenant_id = ?", "taken.example", acme); n != 1 {
			t.Fatalf("%d live sites of acme with the domain, want 1", n)
		}
		if n := count(t, db, "domain_claims", "domain = ?", "taken.example"); n != 2 {
			t.Fatalf("%d claims on the domain, want 2 (acme's new site and other's held one)", n)
		}
	})
}

func TestDeleteSite(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		acme, other := tenant(t, s, "acme"), tenant(t, s, "other")
		siteID := activeSite(t, s, acme, "gone.example")
		before := counts(t, db)

		// Not found for another tenant or an unknown ID, and nothing written.
		for _, tc := range []struct{ tenant, site string }{{other, siteID}, {acme, "site_unknown"}} {
			if _, err := s.DeleteSite(ctx, accept(tc.tenant, "k-nf", "h"), tc.site); !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("DeleteSite(%s) by %s = %v, want ErrNotFound", tc.site, tc.tenant, err)
			}
		}
		if diff := cmp.Diff(before, counts(t, db)); diff != "" {
			t.Fatalf("rows after not-found deletes (-before +after):\n%s", diff)
		}

		acc, err := s.DeleteSite(ctx, models.Accept{TenantID: acme, Actor: "tok_2", RequestID: "req_del",
			IdempotencyKey: "del-1", RequestHash: "h-del"}, siteID)
		if err != nil || acc.Replayed {
			t.Fatalf("DeleteSite = %+v, %v", acc, err)
		}
		op := opRow(t, s, acc.Operation.ID)
		if op.Type != models.OpTypeSiteDeprovision || op.Status != models.OpPending || op.TargetID != siteID || op.TenantID != acme {
			t.Errorf("deprovision operation = %+v", op)
		}
		wantPayload := models.SitePayload{SiteID: siteID, Domain: "gone.example", PreviousStatus: models.SiteStatusActive}
		if diff := cmp.Diff(wantPayload, decodeJSON[models.SitePayload](t, op.Payload)); diff != "" {
			t.Errorf("payload (-want +got):\n%s", diff)
		}
		site := siteRow(t, s, siteID)
		if site.Status != models.SiteStatusDeprovisioning || site.OperationID == nil || *site.OperationID != op.ID {
			t.Errorf("site status %s operation %s; want deprovisioning, %s", site.Status, deref(site.OperationID), op.ID)
		}
		want := before
		want.Operations, want.Audit, want.Keys = before.Operations+1, before.Audit+1, before.Keys+1
		if diff := cmp.Diff(want, counts(t, db)); diff != "" {
			t.Fatalf("rows after DeleteSite (-want +got):\n%s", diff)
		}
		if n := count(t, db, "audit_logs", "action = ? AND operation_id = ? AND actor = ?", "site.delete", op.ID, "tok_2"); n != 1 {
			t.Errorf("%d site.delete audit rows for the operation, want 1", n)
		}

		// A second delete while the first runs names the running operation.
		_, err = s.DeleteSite(ctx, accept(acme, "del-2", "h-del2"), siteID)
		if ce := wantConflict(t, err); ce.OperationID != op.ID {
			t.Errorf("ConflictError.OperationID = %q, want %q", ce.OperationID, op.ID)
		}
		if diff := cmp.Diff(want, counts(t, db)); diff != "" {
			t.Fatalf("rows after conflicting delete (-want +got):\n%s", diff)
		}

		if ok, err := s.CompleteDeprovision(ctx, op.ID, siteID, nil); err != nil || !ok {
			t.Fatalf("CompleteDeprovision = %v, %v", ok, err)
		}
		// A retried DELETE replays, even though the site is gone.
		replay, err := s.DeleteSite(ctx, accept(acme, "del-1", "h-del"), siteID)
		if err != nil || !replay.Replayed || replay.Operation.ID != op.ID {
			t.Fatalf("replayed DeleteSite = %+v, %v; want op %s replayed", replay, err, op.ID)
		}
		if replay.Operation.Status != models.OpSucceeded {
			t.Errorf("replayed operation status = %s, want succeeded", replay.Operation.Status)
		}
		// A new DELETE of the deleted site is not found.
		if _, err := s.DeleteSite(ctx, accept(acme, "del-3", "h"), siteID); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("DeleteSite of a deleted site = %v, want ErrNotFound", err)
		}
		if diff := cmp.Diff(want, counts(t, db)); diff != "" {
			t.Fatalf("rows after replays (-want +got):\n%s", diff)
		}
	})
}

func TestDeleteSiteWithProvisionInFlight(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		s := setup(t, db)
		acme := tenant(t, s, "acme")
		siteID, prov := createSite(t, s, acme, "busy.example")
		before := counts(t, db)
		for _, running := range []bool{false, true} {
			if running {
				if _, err := s.StartOperation(t.Context(), prov.ID); err != nil {
					t.Fatal(err)
				}
			}
			_, err := s.DeleteSite(t.Context(), accept(acme, "del", "h"), siteID)
			if ce := wantConflict(t, err); ce.OperationID != prov.ID {
				t.Errorf("running=%v: ConflictError.OperationID = %q, want the provision %q", running, ce.OperationID, prov.ID)
			}
		}
		if diff := cmp.Diff(before, counts(t, db)); diff != "" {
			t.Fatalf("rows after conflicting deletes (-before +after):\n%s", diff)
		}
		if got := siteRow(t, s, siteID); got.Status != models.SiteStatusPending || deref(got.OperationID) != deref(&prov.ID) {
			t.Errorf("site status %s operation %s; want it untouched", got.Status, deref(got.OperationID))
		}
	})
}

// TestCreateSiteConcurrent races many requests in separate transactions. On
// PostgreSQL they really run at once; on SQLite they are serialised by its
// single connection and must give the same answer.
func TestCreateSiteConcurrent(t *testing.T) {
	t.Parallel()
	const n = 20
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		if models.IsPostgres(db) {
			db.SetMaxOpenConns(n + 5)
		}
		acme := tenant(t, s, "acme")

		run := func(params func(i int) models.CreateSiteParams) ([]*models.Accepted, []error) {
			accs, errs := make([]*models.Accepted, n), make([]error, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					accs[i], errs[i] = s.CreateSite(ctx, params(i))
				})
			}
			close(start)
			wg.Wait()
			return accs, errs
		}

		// The same key and body n times: one operation, every caller gets it.
		accs, errs := run(func(int) models.CreateSiteParams {
			return siteParams(accept(acme, "same-key", "same-hash"), "same.example")
		})
		ids, replayed := map[string]bool{}, 0
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("request %d: %v", i, errs[i])
			}
			ids[accs[i].Operation.ID] = true
			if accs[i].Replayed {
				replayed++
			}
		}
		if len(ids) != 1 || replayed != n-1 {
			t.Fatalf("%d distinct operations, %d replays; want 1 and %d", len(ids), replayed, n-1)
		}
		if diff := cmp.Diff(rowCounts{Sites: 1, Operations: 1, Audit: 1, Keys: 1}, counts(t, db)); diff != "" {
			t.Fatalf("rows after %d identical requests (-want +got):\n%s", n, diff)
		}

		// The same domain under n different keys: one wins, the rest conflict.
		_, errs = run(func(i int) models.CreateSiteParams {
			return siteParams(accept(acme, "dom-key-"+string(rune('a'+i)), "h"), "contested.example")
		})
		won := 0
		for i := range n {
			if errs[i] == nil {
				won++
				continue
			}
			var ce *models.ConflictError
			if !errors.As(errs[i], &ce) {
				t.Errorf("request %d: %v, want a ConflictError", i, errs[i])
			}
		}
		if won != 1 {
			t.Fatalf("%d requests created the contested domain, want 1", won)
		}
		if diff := cmp.Diff(rowCounts{Sites: 2, Operations: 2, Audit: 2, Keys: 2}, counts(t, db)); diff != "" {
			t.Fatalf("rows after the domain race (-want +got):\n%s", diff)
		}
	})
}

func TestPruneIdempotencyKeys(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, c := setupClock(t, db)
		acme := tenant(t, s, "acme")
		if _, err := s.CreateSite(ctx, siteParams(accept(acme, "old", "h"), "old.example")); err != nil {
			t.Fatal(err)
		}
		c.Advance(12 * time.Hour)
		if _, err := s.CreateSite(ctx, siteParams(accept(acme, "new", "h"), "new.example")); err != nil {
			t.Fatal(err)
		}
		prune := func() int64 {
			t.Helper()
			n, err := s.PruneIdempotencyKeys(ctx)
			if err != nil {
				t.Fatalf("PruneIdempotencyKeys: %v", err)
			}
			return n
		}
		if n := prune(); n != 0 {
			t.Fatalf("pruned %d live keys", n)
		}
		c.Advance(12 * time.Hour) // "old" expires exactly now
		if n := prune(); n != 1 {
			t.Fatalf("pruned %d keys, want 1", n)
		}
		var left []string
		if err := db.NewSelect().Table("idempotency_keys").Column("idem_key").Scan(ctx, &left); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"new"}, left); diff != "" {
			t.Fatalf("keys left (-want +got):\n%s", diff)
		}
		if n := prune(); n != 0 {
			t.Fatalf("second prune deleted %d", n)
		}
		if diff := cmp.Diff(rowCounts{Sites: 2, Operations: 2, Audit: 2, Keys: 1}, counts(t, db)); diff != "" {
			t.Fatalf("rows after prune (-want +got):\n%s", diff)
		}
	})
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	_, err := models.New(models.Config{IdempotencyTTL: -time.Second})
	if err == nil {
		t.Fatal("New with no DB and a negative TTL: no error")
	}
	for _, want := range []string{"Config.DB", "IdempotencyTTL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}
