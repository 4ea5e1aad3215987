package migrations

import (
	"context"

	"github.com/uptrace/bun"
)

// Backups: the columns backup jobs record on site_backups, and per-site backup
// schedules.
//
// site_backups.operation_id is the operation acting on the backup right now
// (its creation, a restore from it, its deletion), NULL when none: a delete
// during a restore is refused with that operation's ID. schedule_id names the
// schedule that made a backup, so keep-N counts that schedule's backups only.
var backupsUp = []string{
	`ALTER TABLE site_backups ADD COLUMN format TEXT NOT NULL DEFAULT 'tar+gzip'`,
	`ALTER TABLE site_backups ADD COLUMN operation_id TEXT`,
	`ALTER TABLE site_backups ADD COLUMN schedule_id TEXT`,
	`ALTER TABLE site_backups ADD COLUMN error TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE site_backups ADD COLUMN restored_at {ts}`,
	`ALTER TABLE site_backups ADD COLUMN deleted_at {ts}`,
	`CREATE INDEX site_backups_schedule_idx ON site_backups (schedule_id, id)`,

	// One schedule per site. next_run_at is when the next backup is due; the
	// scheduler books it and moves next_run_at on in one transaction that only
	// succeeds if next_run_at still holds the due time it read.
	`CREATE TABLE backup_schedules (
		id TEXT PRIMARY KEY,
		tenant_id TEXT NOT NULL REFERENCES tenants (id),
		site_id TEXT NOT NULL REFERENCES sites (id),
		frequency TEXT NOT NULL,
		keep_n INTEGER NOT NULL,
		backup_type TEXT NOT NULL,
		next_run_at {ts} NOT NULL,
		created_at {ts} NOT NULL,
		updated_at {ts} NOT NULL,
		CHECK (frequency IN ('daily', 'weekly')),
		CHECK (keep_n >= 1 AND keep_n <= 90)
	)`,
	`CREATE UNIQUE INDEX backup_schedules_site_key ON backup_schedules (site_id)`,
	`CREATE INDEX backup_schedules_due_idx ON backup_schedules (next_run_at)`,
}

var backupsDown = []string{
	`DROP TABLE backup_schedules`,
	`DROP INDEX site_backups_schedule_idx`,
	`ALTER TABLE site_backups DROP COLUMN deleted_at`,
	`ALTER TABLE site_backups DROP COLUMN restored_at`,
	`ALTER TABLE site_backups DROP COLUMN error`,
	`ALTER TABLE site_backups DROP COLUMN schedule_id`,
	`ALTER TABLE site_backups DROP COLUMN operation_id`,
	`ALTER TABLE site_backups DROP COLUMN format`,
}

func init() {
	Migrations.MustRegister(
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, backupsUp) },
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, backupsDown) },
	)
}
