package models_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/chomhq/chom/models"
)

// Accepting a mutation records the site and its operation in one transaction; an
// identical retry with the same Idempotency-Key replays the same operation.
func ExampleStore_CreateSite() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "chom-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	db, err := models.OpenSQLite(ctx, filepath.Join(dir, "chom.db"))
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if _, err := models.MigrateUp(ctx, db); err != nil {
		panic(err)
	}
	store, err := models.New(models.Config{DB: db})
	if err != nil {
		panic(err)
	}
	tenant, err := store.EnsureTenant(ctx, "acme")
	if err != nil {
		panic(err)
	}

	params := models.CreateSiteParams{
		Accept: models.Accept{
			TenantID: tenant.ID, Actor: "tok_example", RequestID: "req_1",
			IdempotencyKey: "create-blog", RequestHash: "sha256-of-the-request",
		},
		Domain: "blog.example.com", SiteType: "wordpress", PHPVersion: "8.3",
	}
	first, err := store.CreateSite(ctx, params)
	if err != nil {
		panic(err)
	}
	site, err := store.GetSite(ctx, tenant.ID, first.Operation.TargetID)
	if err != nil {
		panic(err)
	}
	fmt.Println(first.Operation.Type, first.Operation.Status, site.Domain, site.Status)

	retry, err := store.CreateSite(ctx, params)
	if err != nil {
		panic(err)
	}
	fmt.Println("replayed:", retry.Replayed, "same operation:", retry.Operation.ID == first.Operation.ID)
	// Output:
	// site.provision pending blog.example.com pending
	// replayed: true same operation: true
}
