package models_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// historicalOps inserts n finished operations of tenantID that finished at
// finished (status cycling through the three final ones), with one audit row
// each written at the same instant, and returns their IDs.
func historicalOps(t *testing.T, db bun.IDB, tenantID string, n int, finished time.Time) []string {
	t.Helper()
	final := []string{models.OpSucceeded, models.OpFailed, models.OpCancelled}
	var ids []string
	for start := 0; start < n; start += 500 {
		var ops []models.Operation
		var audit []models.AuditLog
		for i := start; i < min(n, start+500); i++ {
			f := finished
			op := models.Operation{ID: models.NewID(models.PrefixOperation), TenantID: tenantID, Type: models.OpTypeSiteProvision,
				Status: final[i%len(final)], TargetType: "site", TargetID: models.NewID(models.PrefixSite), Payload: "{}",
				CreatedAt: finished.Add(-time.Minute), UpdatedAt: finished, FinishedAt: &f}
			ops = append(ops, op)
			audit = append(audit, models.AuditLog{TenantID: tenantID, Actor: "tok_test", Action: "site.create",
				TargetType: "site", TargetID: op.TargetID, OperationID: &op.ID, CreatedAt: finished.Add(-time.Minute)})
			ids = append(ids, op.ID)
		}
		if _, err := db.NewInsert().Model(&ops).Exec(t.Context()); err != nil {
			t.Fatalf("insert historical operations: %v", err)
		}
		if _, err := db.NewInsert().Model(&audit).Exec(t.Context()); err != nil {
			t.Fatalf("insert historical audit rows: %v", err)
		}
	}
	return ids
}

// operationIDs returns every operation ID in the table, sorted.
func operationIDs(t *testing.T, db bun.IDB) []string {
	t.Helper()
	var ids []string
	if err := db.NewSelect().Table("operations").Column("id").Scan(t.Context(), &ids); err != nil {
		t.Fatalf("list operation IDs: %v", err)
	}
	slices.Sort(ids)
	return ids
}

// pruneAll repeats prune until it deletes fewer than batch rows and returns
// the rows deleted and the statements run.
func pruneAll(t *testing.T, prune func(context.Context, time.Time, int) (int64, error), cutoff time.Time, batch int) (int64, int) {
	t.Helper()
	var total int64
	for statements := 1; ; statements++ {
		n, err := prune(t.Context(), cutoff, batch)
		if err != nil {
			t.Fatalf("prune (statement %d): %v", statements, err)
		}
		if n > int64(batch) {
			t.Fatalf("statement %d deleted %d rows; want at most the batch, %d", statements, n, batch)
		}
		total += n
		if n < int64(batch) {
			return total, statements
		}
	}
}

// The prune's ledger: after it, the operations left are exactly those that
// must be kept (unfinished, finished inside the retention, or still named by
// a site, a backup, a live idempotency key or a certificate upload) and every
// other one is gone, deleted in statements of at most the batch. Audit rows
// follow their own, longer, retention.
func TestPruneOperationsLedger(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, clk := setupClock(t, db)
		// A second store on the same database whose idempotency keys live 90
		// days: the only way a live key can name an operation older than the
		// retention, which the prune must then keep.
		longKeys, err := models.New(models.Config{DB: db, Now: clk.Now, IdempotencyTTL: 90 * 24 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		ten := tenant(t, s, "acme")
		const retention = 30 * 24 * time.Hour

		// Old history: finished at epoch, 31 days before the prune.
		old := historicalOps(t, db, ten, 60, epoch)
		// Finished at epoch through the real paths: a provision completed.
		oldSite := activeSite(t, s, ten, "old.example")
		oldProvision := mustOne(t, db, "SELECT id FROM operations WHERE target_id = ?", oldSite)
		old = append(old, oldProvision)
		// Old, but named by live rows: kept.
		namedBySite, namedByBackup, namedByUpload := old[0], old[1], old[2]
		if _, err := db.NewUpdate().Table("sites").Set("operation_id = ?", namedBySite).Where("id = ?", oldSite).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := db.NewRaw(`INSERT INTO site_backups (id, tenant_id, site_id, backup_type, status, retention_days, created_at, operation_id)
			VALUES (?, ?, ?, 'full', 'completed', 30, ?, ?)`, models.NewID(models.PrefixBackup), ten, oldSite, epoch, namedByBackup).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := db.NewRaw(`INSERT INTO certificate_uploads (operation_id, site_id, chain_pem, key_sealed, created_at)
			VALUES (?, ?, 'chain', 'sealed', ?)`, namedByUpload, oldSite, epoch).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		// An old operation behind a 90-day idempotency key (kept), and one
		// behind a 24-hour key long expired (pruned).
		// (Health checks: nothing else names them.)
		vps := registerVPS(t, s, "vps1.example", 10)
		keyed, err := longKeys.RequestHealthCheck(ctx, accept(ten, "k-long", "h1"), vps.ID)
		if err != nil {
			t.Fatal(err)
		}
		expired, err := s.RequestHealthCheck(ctx, accept(ten, "k-short", "h2"), vps.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range []*models.Operation{keyed.Operation, expired.Operation} {
			if ok, err := s.FinishOperation(ctx, op.ID, models.Outcome{Status: models.OpFailed, ErrorCode: "test", ErrorMessage: "test"}, nil); err != nil || !ok {
				t.Fatalf("FinishOperation(%s) = %v, %v", op.ID, ok, err)
			}
		}
		old = append(old, expired.Operation.ID)
		// Unfinished since epoch (a stuck provision): kept, however old.
		_, stuck := createSite(t, s, ten, "stuck.example")

		clk.Advance(retention + 24*time.Hour)
		// Inside the retention: finished a day ago (29 days old at the cutoff).
		recent := historicalOps(t, db, ten, 25, clk.Now().Add(-24*time.Hour))
		// Finished exactly at the cutoff: not before it, so kept.
		atCutoff := historicalOps(t, db, ten, 1, clk.Now().Add(-retention))

		keep := []string{namedBySite, namedByBackup, namedByUpload, keyed.Operation.ID, stuck.ID}
		keep = append(append(keep, recent...), atCutoff...)
		var gone []string
		for _, id := range old {
			if !slices.Contains(keep, id) {
				gone = append(gone, id)
			}
		}
		want := slices.Sorted(slices.Values(keep))
		audit0 := count(t, db, "audit_logs", "")

		const batch = 7
		deleted, statements := pruneAll(t, s.PruneOperations, clk.Now().Add(-retention), batch)
		t.Logf("pruned %d operations in %d statements of at most %d rows; kept %d", deleted, statements, batch, len(want))
		if deleted != int64(len(gone)) {
			t.Errorf("deleted %d operations; want %d", deleted, len(gone))
		}
		if minStatements := len(gone)/batch + 1; statements < minStatements {
			t.Errorf("%d statements; want at least %d (batches of %d)", statements, minStatements, batch)
		}
		if diff := cmp.Diff(want, operationIDs(t, db)); diff != "" {
			t.Errorf("operations left (-want +got):\n%s", diff)
		}
		// A poll of a pruned operation is ErrNotFound (404); of a kept one, found.
		if _, err := s.GetOperation(ctx, ten, gone[0]); !errors.Is(err, models.ErrNotFound) {
			t.Errorf("GetOperation(pruned) = %v; want not found", err)
		}
		if _, err := s.GetOperation(ctx, ten, keyed.Operation.ID); err != nil {
			t.Errorf("GetOperation(kept) = %v", err)
		}
		// A retry under the live key still replays its operation.
		again, err := longKeys.RequestHealthCheck(ctx, accept(ten, "k-long", "h1"), vps.ID)
		if err != nil || again.Operation.ID != keyed.Operation.ID {
			t.Errorf("replay under the live key = %+v, %v; want operation %s", again, err, keyed.Operation.ID)
		}
		// Audit rows stay until their own retention: none is pruned at the
		// operations' cutoff's age... and all older than a shorter one are.
		if n, _ := pruneAll(t, s.PruneAuditLogs, clk.Now().Add(-400*24*time.Hour), batch); n != 0 {
			t.Errorf("audit prune at 400 days deleted %d rows; want 0", n)
		}
		oldAudit := count(t, db, "audit_logs", "created_at < ?", clk.Now().Add(-retention))
		n, _ := pruneAll(t, s.PruneAuditLogs, clk.Now().Add(-retention), batch)
		if n != int64(oldAudit) || count(t, db, "audit_logs", "") != audit0-oldAudit || count(t, db, "audit_logs", "created_at < ?", clk.Now().Add(-retention)) != 0 {
			t.Errorf("audit prune deleted %d of %d old rows (of %d)", n, oldAudit, audit0)
		}
	})
}

// mustOne returns the one string a query selects.
func mustOne(t *testing.T, db bun.IDB, query string, args ...any) string {
	t.Helper()
	var v string
	if err := db.NewRaw(query, args...).Scan(t.Context(), &v); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return v
}

// Accepting and polling go on while a prune deletes history: every accept
// made during the prune succeeds, every poll finds its operation, the prune
// deletes exactly the history and nothing accepted meanwhile.
func TestPruneWhileAccepting(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, clk := setupClock(t, db)
		ten := tenant(t, s, "acme")
		history := historicalOps(t, db, ten, 1000, epoch)
		clk.Advance(31 * 24 * time.Hour)
		cutoff := clk.Now().Add(-30 * 24 * time.Hour)

		var wg sync.WaitGroup
		var deleted int64
		var statements int
		var pruneErr error
		done, started := make(chan struct{}), make(chan struct{})
		wg.Go(func() {
			defer close(done)
			<-started // after the first accept, so the two overlap
			for {
				n, err := s.PruneOperations(ctx, cutoff, 100)
				statements++
				deleted += n
				if err != nil || n < 100 {
					pruneErr = err
					return
				}
			}
		})
		var accepted []string
	loop:
		for i := 0; ; i++ {
			acc, err := s.CreateSite(ctx, siteParams(accept(ten, fmt.Sprintf("k%d", i), "h"), fmt.Sprintf("s%d.example", i)))
			if err != nil {
				t.Fatalf("accept %d during the prune: %v", i, err)
			}
			accepted = append(accepted, acc.Operation.ID)
			if i == 0 {
				close(started)
			}
			for _, id := range accepted {
				if _, err := s.GetOperation(ctx, ten, id); err != nil {
					t.Fatalf("poll %s during the prune: %v", id, err)
				}
			}
			select {
			case <-done:
				break loop
			default:
			}
		}
		wg.Wait()
		if pruneErr != nil {
			t.Fatal(pruneErr)
		}
		t.Logf("%d accepts and their polls ran during a prune of %d rows in %d statements", len(accepted), deleted, statements)
		if deleted != int64(len(history)) {
			t.Errorf("pruned %d; want the %d historical operations", deleted, len(history))
		}
		if diff := cmp.Diff(slices.Sorted(slices.Values(accepted)), operationIDs(t, db)); diff != "" {
			t.Errorf("operations left (-accepted +got):\n%s", diff)
		}
	})
}
