package migrations

import (
	"context"

	"github.com/uptrace/bun"
)

// operation_retention: the indexes the operation prune (models.PruneOperations)
// walks, so finding what to delete never scans history.
//
//   - operations_finished_idx: finished operations by finished_at, the order
//     the prune deletes them in (unfinished ones, finished_at NULL, are not
//     in it).
//   - sites_operation_idx, site_backups_operation_idx,
//     idempotency_keys_operation_idx: the prune keeps an operation a live row
//     still names; each check is one probe of these. The first two are
//     partial: a site or backup names an operation only while one acts on it.
//   - audit_logs_created_idx: the audit prune, oldest first.
//
// The builds run in the migration's transaction, like every migration: on
// PostgreSQL a plain CREATE INDEX blocks writes to its table while it builds
// (seconds per ten million rows; see docs/operations.md, Retention). A
// deployment with a long history builds them beforehand with CREATE INDEX
// CONCURRENTLY under the same names and definitions; IF NOT EXISTS then keeps
// them. (The migration cannot build concurrently itself: such a build waits
// for every transaction older than it, including those of replicas waiting
// for the migration lock, which wait for it.)
var operationRetentionUp = []string{
	`CREATE INDEX IF NOT EXISTS operations_finished_idx ON operations (finished_at) WHERE finished_at IS NOT NULL`,
	`CREATE INDEX IF NOT EXISTS sites_operation_idx ON sites (operation_id) WHERE operation_id IS NOT NULL`,
	`CREATE INDEX IF NOT EXISTS site_backups_operation_idx ON site_backups (operation_id) WHERE operation_id IS NOT NULL`,
	`CREATE INDEX IF NOT EXISTS idempotency_keys_operation_idx ON idempotency_keys (operation_id)`,
	`CREATE INDEX IF NOT EXISTS audit_logs_created_idx ON audit_logs (created_at)`,
}

var operationRetentionDown = []string{
	`DROP INDEX audit_logs_created_idx`,
	`DROP INDEX idempotency_keys_operation_idx`,
	`DROP INDEX site_backups_operation_idx`,
	`DROP INDEX sites_operation_idx`,
	`DROP INDEX operations_finished_idx`,
}

func init() {
	Migrations.MustRegister(
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, operationRetentionUp) },
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, operationRetentionDown) },
	)
}
