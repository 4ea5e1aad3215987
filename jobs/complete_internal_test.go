package jobs

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// TestCompleterConcurrentSuccesses completes many provisions at once
// through one completer, one of them with a result that cannot be encoded:
// that one fails alone (its batch is then completed item by item), every
// other one succeeds with exactly one event.
func TestCompleterConcurrentSuccesses(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		if _, err := models.MigrateUp(ctx, db); err != nil {
			t.Fatal(err)
		}
		store, err := models.New(models.Config{DB: db})
		if err != nil {
			t.Fatal(err)
		}
		ten, err := store.EnsureTenant(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := store.RegisterVPS(ctx, models.Accept{}, models.RegisterVPSParams{Hostname: "web1.example", IPAddress: "192.0.2.1",
			SSHPort: 22, Allocation: models.AllocationShared, SiteCapacity: 100}); err != nil {
			t.Fatal(err)
		}
		const n, bad = 24, 7
		items := make([]models.ProvisionSuccess, n)
		for i := range items {
			acc, err := store.CreateSite(ctx, models.CreateSiteParams{Accept: models.Accept{TenantID: ten.ID, Actor: "tok_test"},
				Domain: fmt.Sprintf("s%d.example", i), SiteType: "html"})
			if err != nil {
				t.Fatal(err)
			}
			if st, err := store.StartProvision(ctx, acc.Operation.ID, placementProgress); err != nil || st == nil {
				t.Fatalf("StartProvision = %+v, %v", st, err)
			}
			var result any = map[string]string{"site_id": acc.Operation.TargetID}
			if i == bad {
				result = func() {} // json cannot encode it
			}
			items[i] = models.ProvisionSuccess{OpID: acc.Operation.ID, SiteID: acc.Operation.TargetID, Result: result,
				Events: []models.OutboxEvent{{EventID: "evt-" + acc.Operation.ID, TenantID: ten.ID, Topic: "sites.v1",
					Type: "site.provisioned.v1", Source: "/chom/sites", Subject: acc.Operation.TargetID, Data: "{}"}}}
		}
		c, err := newCompleter(store, false)
		if err != nil {
			t.Fatal(err)
		}
		outs := make([]models.ProvisionOutcome, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range items {
			wg.Go(func() { outs[i], errs[i] = c.complete(ctx, items[i]) })
		}
		wg.Wait()
		for i := range items {
			switch {
			case i == bad && (errs[i] == nil || outs[i].Done):
				t.Errorf("success %d with an unencodable result: %+v, %v; want an error", i, outs[i], errs[i])
			case i != bad && (errs[i] != nil || !outs[i].Done):
				t.Errorf("success %d: %+v, %v; want done", i, outs[i], errs[i])
			}
		}
		ok, err := db.NewSelect().Model((*models.Operation)(nil)).Where("status = ?", models.OpSucceeded).Count(ctx)
		if err != nil || ok != n-1 {
			t.Errorf("%d operations succeeded (%v), want %d", ok, err, n-1)
		}
		rows, err := db.NewSelect().Model((*models.OutboxEvent)(nil)).Count(ctx)
		if err != nil || rows != n-1 {
			t.Errorf("%d outbox rows (%v), want %d", rows, err, n-1)
		}
		// A committer ends once it finds nothing waiting, just after its
		// last answer: a generous deadline for "eventually".
		deadline := time.Now().Add(10 * time.Second)
		for {
			waiting, committers := c.batch.Pending()
			if waiting == 0 && committers == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("completer left %d committers running with %d waiting", committers, waiting)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
