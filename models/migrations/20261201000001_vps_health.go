package migrations

import (
	"context"

	"github.com/uptrace/bun"
)

// VPS health checks. Each check's measurements are one row of vps_health_checks;
// the server's status, with the hysteresis state that decides when it changes,
// lives on vps_servers.
//
// check_key makes a check idempotent: a sweep check is keyed by its period
// ("2026-12-01T21:00:00Z"), an on-demand check by its operation ID, so a task
// delivered twice records (and counts towards hysteresis) once.
var vpsHealthUp = []string{
	`CREATE TABLE vps_health_checks (
		id {serial_pk},
		vps_id TEXT NOT NULL REFERENCES vps_servers (id),
		check_key TEXT NOT NULL,
		source TEXT NOT NULL,
		period_start {ts},
		checked_at {ts} NOT NULL,
		result TEXT NOT NULL,
		status_after TEXT NOT NULL,
		reason TEXT NOT NULL DEFAULT '',
		reachable BOOLEAN NOT NULL,
		connect_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
		load1 DOUBLE PRECISION NOT NULL DEFAULT 0,
		load5 DOUBLE PRECISION NOT NULL DEFAULT 0,
		load15 DOUBLE PRECISION NOT NULL DEFAULT 0,
		cpus INTEGER NOT NULL DEFAULT 0,
		mem_total_bytes {bigint} NOT NULL DEFAULT 0,
		mem_available_bytes {bigint} NOT NULL DEFAULT 0,
		disk_total_bytes {bigint} NOT NULL DEFAULT 0,
		disk_free_bytes {bigint} NOT NULL DEFAULT 0,
		http_status INTEGER NOT NULL DEFAULT 0,
		http_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
		http_error TEXT NOT NULL DEFAULT ''
	)`,
	`CREATE UNIQUE INDEX vps_health_checks_key ON vps_health_checks (vps_id, check_key)`,
	// "The latest checks of a server", newest first.
	`CREATE INDEX vps_health_checks_vps_idx ON vps_health_checks (vps_id, checked_at)`,
	// Sweep statistics group by period; pruning deletes by age.
	`CREATE INDEX vps_health_checks_period_idx ON vps_health_checks (period_start) WHERE period_start IS NOT NULL`,
	`CREATE INDEX vps_health_checks_checked_idx ON vps_health_checks (checked_at)`,

	// health_candidate is the status the recent results agree on when it differs
	// from health_status, health_streak how many consecutive results agreed.
	`ALTER TABLE vps_servers ADD COLUMN health_candidate TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE vps_servers ADD COLUMN health_streak INTEGER NOT NULL DEFAULT 0`,
	`ALTER TABLE vps_servers ADD COLUMN health_checked_at {ts}`,
	`ALTER TABLE vps_servers ADD COLUMN health_reason TEXT NOT NULL DEFAULT ''`,
	// The sweep pages through active servers by ID.
	`CREATE INDEX vps_servers_status_idx ON vps_servers (status, id)`,
}

var vpsHealthDown = []string{
	`DROP INDEX vps_servers_status_idx`,
	`ALTER TABLE vps_servers DROP COLUMN health_reason`,
	`ALTER TABLE vps_servers DROP COLUMN health_checked_at`,
	`ALTER TABLE vps_servers DROP COLUMN health_streak`,
	`ALTER TABLE vps_servers DROP COLUMN health_candidate`,
	`DROP TABLE vps_health_checks`,
}

func init() {
	Migrations.MustRegister(
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, vpsHealthUp) },
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, vpsHealthDown) },
	)
}
