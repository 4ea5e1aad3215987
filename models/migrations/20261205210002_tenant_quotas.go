package migrations

import (
	"context"

	"github.com/uptrace/bun"
)

// tenant_quotas: an administrator's per-tenant limits. A NULL column takes
// the platform default (CHOM_QUOTA_*); 0 means unlimited. A tenant without a
// row has the defaults.
var tenantQuotasUp = []string{
	`CREATE TABLE tenant_quotas (
		tenant_id TEXT PRIMARY KEY REFERENCES tenants (id),
		max_sites {bigint},
		max_backups {bigint},
		max_backup_bytes {bigint},
		updated_at {ts} NOT NULL,
		CHECK (max_sites >= 0 AND max_backups >= 0 AND max_backup_bytes >= 0)
	)`,
}

var tenantQuotasDown = []string{
	`DROP TABLE tenant_quotas`,
}

func init() {
	Migrations.MustRegister(
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, tenantQuotasUp) },
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, tenantQuotasDown) },
	)
}
