package models_test

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// schemaTables are the tables of every migration, sorted.
var schemaTables = []string{
	"acme_accounts", "acme_budget", "api_tokens", "audit_logs", "backup_schedules", "certificate_uploads", "domain_claims", "idempotency_keys", "invoice_lines", "invoices",
	"operations", "outbox_events", "processed_events", "site_backups", "site_certificates", "sites", "tenant_quotas", "tenants", "usage_records", "users",
	"vps_health_checks", "vps_servers",
}

// migrationNames are the versions of every migration, in order.
var migrationNames = []string{"20261125000001", "20261125000002", "20261201000001", "20261201000002", "20261201000003", "20261204000001", "20261205210001", "20261205210002", "20261205230001", "20261205230101", "20261206070001", "20261206070101", "20261206070201", "20261206090001"}

// keyIndexes are indexes the queries of this package rely on.
var keyIndexes = []string{
	"api_tokens_hash_key", "operations_tenant_idx", "outbox_events_unpublished_idx",
	"sites_tenant_domain_live_key", "domain_claims_tenant_key", "domain_claims_serving_key", "sites_tenant_status_idx", "vps_servers_placement_idx",
	"invoices_tenant_period_key", "invoice_lines_event_key", "outbox_events_published_idx",
	"vps_health_checks_key", "vps_health_checks_vps_idx",
	"usage_records_period_key", "usage_records_tenant_id_idx",
	"backup_schedules_site_key", "backup_schedules_due_idx", "site_backups_schedule_idx",
	"acme_accounts_directory_email_key", "site_certificates_renew_idx", "acme_budget_bucket_idx", "acme_budget_reservation_idx",
	"site_certificates_ari_idx", "operations_certificate_issue_open_key",
	"certificate_uploads_site_idx",
	"operations_finished_idx", "sites_operation_idx", "site_backups_operation_idx", "idempotency_keys_operation_idx", "audit_logs_created_idx",
}

// tables lists the schema's tables of ours (bun's migration tables left out), sorted.
func tables(t *testing.T, db *bun.DB) []string {
	t.Helper()
	var names []string
	var err error
	if models.IsPostgres(db) {
		err = db.NewSelect().Table("information_schema.tables").Column("table_name").
			Where("table_schema = current_schema()").Where("table_type = 'BASE TABLE'").
			Scan(t.Context(), &names)
	} else {
		err = db.NewSelect().Table("sqlite_master").Column("name").
			Where("type = 'table'").Where("name NOT LIKE 'sqlite_%'").
			Scan(t.Context(), &names)
	}
	if err != nil {
		t.Fatalf("list tables: %v", err)
	}
	names = slices.DeleteFunc(names, func(n string) bool { return n == "bun_migrations" || n == "bun_migration_locks" })
	slices.Sort(names)
	return names
}

// indexes lists the schema's index names.
func indexes(t *testing.T, db *bun.DB) []string {
	t.Helper()
	var names []string
	var err error
	if models.IsPostgres(db) {
		err = db.NewSelect().Table("pg_indexes").Column("indexname").
			Where("schemaname = current_schema()").Scan(t.Context(), &names)
	} else {
		err = db.NewSelect().Table("sqlite_master").Column("name").
			Where("type = 'index'").Scan(t.Context(), &names)
	}
	if err != nil {
		t.Fatalf("list indexes: %v", err)
	}
	return names
}

func TestMigrateUpDown(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()

		g, err := models.MigrateUp(ctx, db)
		if err != nil {
			t.Fatalf("MigrateUp: %v", err)
		}
		if g.IsZero() || len(g.Migrations) != len(migrationNames) {
			t.Fatalf("first MigrateUp applied %v, want every migration", g)
		}
		if diff := cmp.Diff(schemaTables, tables(t, db)); diff != "" {
			t.Fatalf("tables after up (-want +got):\n%s", diff)
		}
		got := indexes(t, db)
		for _, name := range keyIndexes {
			if !slices.Contains(got, name) {
				t.Errorf("index %s missing; have %v", name, got)
			}
		}

		g, err = models.MigrateUp(ctx, db)
		if err != nil {
			t.Fatalf("second MigrateUp: %v", err)
		}
		if !g.IsZero() {
			t.Fatalf("second MigrateUp applied %v, want nothing", g)
		}

		ms, err := models.MigrationStatus(ctx, db)
		if err != nil {
			t.Fatalf("MigrationStatus: %v", err)
		}
		var names []string
		for _, m := range ms {
			names = append(names, m.Name)
			if !m.IsApplied() {
				t.Errorf("migration %s not applied", m.Name)
			}
		}
		if diff := cmp.Diff(migrationNames, names); diff != "" {
			t.Fatalf("MigrationStatus (-want +got):\n%s", diff)
		}
		if n := len(ms.Unapplied()); n != 0 {
			t.Fatalf("%d unapplied migrations after up", n)
		}

		g, err = models.MigrateDown(ctx, db)
		if err != nil {
			t.Fatalf("MigrateDown: %v", err)
		}
		if len(g.Migrations) != len(migrationNames) {
			t.Fatalf("MigrateDown rolled back %v, want the group of every migration", g)
		}
		if got := tables(t, db); len(got) != 0 {
			t.Fatalf("tables after down: %v, want none", got)
		}
		ms, err = models.MigrationStatus(ctx, db)
		if err != nil {
			t.Fatalf("MigrationStatus after down: %v", err)
		}
		if len(ms) != len(migrationNames) || len(ms.Applied()) != 0 {
			t.Fatalf("MigrationStatus after down = %v, want all unapplied", ms)
		}

		if _, err := models.MigrateUp(ctx, db); err != nil {
			t.Fatalf("MigrateUp after down: %v", err)
		}
		if diff := cmp.Diff(schemaTables, tables(t, db)); diff != "" {
			t.Fatalf("tables after up again (-want +got):\n%s", diff)
		}
		// The schema works after the round trip.
		s, err := models.New(models.Config{DB: db})
		if err != nil {
			t.Fatal(err)
		}
		createSite(t, s, tenant(t, s, "acme"), "after-roundtrip.example")
	})
}

// TestMigrateDomainIndexIsPartial checks the unique domain index ignores deleted
// sites on both backends: a deleted row and a live row may share a domain.
func TestMigrateDomainIndexIsPartial(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		s := setup(t, db)
		ten := tenant(t, s, "acme")
		now := epoch
		row := func(id string, deleted bool) *models.Site {
			site := &models.Site{ID: id, TenantID: ten, Domain: "dup.example", SiteType: "static",
				Status: models.SiteStatusActive, CreatedAt: now, UpdatedAt: now}
			if deleted {
				site.Status, site.DeletedAt = models.SiteStatusDeleted, &now
			}
			return site
		}
		for _, site := range []*models.Site{row("site_a", true), row("site_b", true), row("site_c", false)} {
			if _, err := db.NewInsert().Model(site).Exec(t.Context()); err != nil {
				t.Fatalf("insert %s: %v", site.ID, err)
			}
		}
		if _, err := db.NewInsert().Model(row("site_d", false)).Exec(t.Context()); err == nil {
			t.Fatal("a second live site with the same domain was inserted")
		}
	})
}

// Replicas starting together with CHOM_AUTO_MIGRATE take turns: every concurrent
// MigrateUp succeeds and the schema is applied once.
func TestMigrateUpConcurrently(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	const n = 6
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := models.MigrateUp(t.Context(), db)
			errs <- err
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Errorf("concurrent MigrateUp: %v", err)
		}
	}
	ms, err := models.MigrationStatus(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if !m.IsApplied() {
			t.Errorf("migration %s not applied", m.Name)
		}
	}
	var applied int
	if err := db.NewSelect().Table("bun_migrations").ColumnExpr("count(*)").Scan(t.Context(), &applied); err != nil {
		t.Fatal(err)
	}
	if applied != len(ms) {
		t.Errorf("bun_migrations has %d rows for %d migrations", applied, len(ms))
	}
}
