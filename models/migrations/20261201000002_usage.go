package migrations

import (
	"context"

	"github.com/uptrace/bun"
)

// Usage metering: a usage record is either a tenant's total of a metric for a
// period (site_id ”) or one site's share of it (site_id set), so site_id joins
// the unique key. ” rather than NULL keeps the key a plain unique index that
// ON CONFLICT can name on both PostgreSQL and SQLite.
var usageUp = []string{
	`ALTER TABLE usage_records ADD COLUMN site_id TEXT NOT NULL DEFAULT ''`,
	`DROP INDEX usage_records_period_key`,
	`CREATE UNIQUE INDEX usage_records_period_key ON usage_records (tenant_id, metric, site_id, period_start)`,
	// GET /usage pages newest first by ID within a tenant.
	`CREATE INDEX usage_records_tenant_id_idx ON usage_records (tenant_id, id)`,
}

var usageDown = []string{
	`DROP INDEX usage_records_tenant_id_idx`,
	`DROP INDEX usage_records_period_key`,
	`DELETE FROM usage_records WHERE site_id <> ''`,
	`CREATE UNIQUE INDEX usage_records_period_key ON usage_records (tenant_id, metric, period_start)`,
	`ALTER TABLE usage_records DROP COLUMN site_id`,
}

func init() {
	Migrations.MustRegister(
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, usageUp) },
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, usageDown) },
	)
}
