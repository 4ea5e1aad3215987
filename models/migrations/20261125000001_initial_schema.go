package migrations

import (
	"context"

	"github.com/uptrace/bun"
)

// The initial schema. Index names end in _idx (lookups) or _key (uniqueness).
// Listings are ordered by ID (UUIDv7, so by creation time); the (tenant_id, id)
// indexes are the "tenant + created_at" indexes of a tenant-scoped listing.
var initialUp = []string{
	`CREATE TABLE tenants (
		id TEXT PRIMARY KEY,
		name TEXT NOT NULL,
		status TEXT NOT NULL DEFAULT 'active',
		created_at {ts} NOT NULL,
		updated_at {ts} NOT NULL
	)`,
	`CREATE UNIQUE INDEX tenants_name_key ON tenants (name)`,

	`CREATE TABLE users (
		id TEXT PRIMARY KEY,
		tenant_id TEXT NOT NULL REFERENCES tenants (id),
		email TEXT NOT NULL,
		name TEXT NOT NULL DEFAULT '',
		role TEXT NOT NULL DEFAULT 'member',
		created_at {ts} NOT NULL
	)`,
	`CREATE UNIQUE INDEX users_tenant_email_key ON users (tenant_id, email)`,

	`CREATE TABLE api_tokens (
		id TEXT PRIMARY KEY,
		tenant_id TEXT NOT NULL REFERENCES tenants (id),
		user_id TEXT REFERENCES users (id),
		name TEXT NOT NULL,
		prefix TEXT NOT NULL,
		token_hash TEXT NOT NULL,
		scopes TEXT NOT NULL,
		expires_at {ts},
		revoked_at {ts},
		created_at {ts} NOT NULL
	)`,
	`CREATE UNIQUE INDEX api_tokens_hash_key ON api_tokens (token_hash)`,
	`CREATE INDEX api_tokens_tenant_idx ON api_tokens (tenant_id, id)`,

	`CREATE TABLE vps_servers (
		id TEXT PRIMARY KEY,
		hostname TEXT NOT NULL,
		ip_address TEXT NOT NULL,
		ssh_port INTEGER NOT NULL,
		provider TEXT NOT NULL,
		region TEXT NOT NULL,
		allocation TEXT NOT NULL,
		tenant_id TEXT REFERENCES tenants (id),
		site_capacity INTEGER NOT NULL,
		site_count INTEGER NOT NULL DEFAULT 0,
		status TEXT NOT NULL,
		health_status TEXT NOT NULL,
		host_key TEXT NOT NULL DEFAULT '',
		created_at {ts} NOT NULL,
		updated_at {ts} NOT NULL,
		CHECK (site_count >= 0 AND site_count <= site_capacity)
	)`,
	`CREATE UNIQUE INDEX vps_servers_hostname_key ON vps_servers (hostname)`,
	`CREATE INDEX vps_servers_placement_idx ON vps_servers (allocation, status, health_status, site_count)`,
	`CREATE INDEX vps_servers_tenant_idx ON vps_servers (tenant_id)`,

	`CREATE TABLE sites (
		id TEXT PRIMARY KEY,
		tenant_id TEXT NOT NULL REFERENCES tenants (id),
		vps_id TEXT REFERENCES vps_servers (id),
		domain TEXT NOT NULL,
		site_type TEXT NOT NULL,
		php_version TEXT NOT NULL DEFAULT '',
		status TEXT NOT NULL,
		document_root TEXT NOT NULL DEFAULT '',
		system_user TEXT NOT NULL DEFAULT '',
		operation_id TEXT,
		created_at {ts} NOT NULL,
		updated_at {ts} NOT NULL,
		deleted_at {ts}
	)`,
	// One live site per domain across the platform: two tenants cannot both serve
	// example.com. A deleted site frees its domain.
	`CREATE UNIQUE INDEX sites_domain_live_key ON sites (domain) WHERE deleted_at IS NULL`,
	`CREATE INDEX sites_tenant_idx ON sites (tenant_id, id)`,
	`CREATE INDEX sites_tenant_status_idx ON sites (tenant_id, status, id)`,
	`CREATE INDEX sites_vps_status_idx ON sites (vps_id, status)`,

	`CREATE TABLE site_backups (
		id TEXT PRIMARY KEY,
		tenant_id TEXT NOT NULL REFERENCES tenants (id),
		site_id TEXT NOT NULL REFERENCES sites (id),
		backup_type TEXT NOT NULL,
		status TEXT NOT NULL,
		size_bytes {bigint} NOT NULL DEFAULT 0,
		sha256 TEXT NOT NULL DEFAULT '',
		storage_key TEXT NOT NULL DEFAULT '',
		retention_days INTEGER NOT NULL,
		expires_at {ts},
		created_at {ts} NOT NULL,
		completed_at {ts}
	)`,
	`CREATE INDEX site_backups_tenant_site_idx ON site_backups (tenant_id, site_id, id)`,
	`CREATE INDEX site_backups_expiry_idx ON site_backups (status, expires_at)`,

	`CREATE TABLE operations (
		id TEXT PRIMARY KEY,
		tenant_id TEXT NOT NULL REFERENCES tenants (id),
		op_type TEXT NOT NULL,
		status TEXT NOT NULL,
		progress INTEGER NOT NULL DEFAULT 0,
		target_type TEXT NOT NULL,
		target_id TEXT NOT NULL,
		payload TEXT NOT NULL DEFAULT '{}',
		result TEXT,
		error_code TEXT,
		error_message TEXT,
		request_id TEXT NOT NULL DEFAULT '',
		attempts INTEGER NOT NULL DEFAULT 0,
		created_at {ts} NOT NULL,
		updated_at {ts} NOT NULL,
		started_at {ts},
		finished_at {ts},
		cancel_requested_at {ts},
		CHECK (progress >= 0 AND progress <= 100)
	)`,
	`CREATE INDEX operations_tenant_idx ON operations (tenant_id, id)`,
	`CREATE INDEX operations_tenant_status_idx ON operations (tenant_id, status, id)`,
	`CREATE INDEX operations_tenant_target_idx ON operations (tenant_id, target_type, target_id, id)`,
	// The reconciler's scan: only unfinished operations are indexed.
	`CREATE INDEX operations_unfinished_idx ON operations (created_at) WHERE status IN ('pending', 'running')`,

	`CREATE TABLE idempotency_keys (
		tenant_id TEXT NOT NULL REFERENCES tenants (id),
		idem_key TEXT NOT NULL,
		request_hash TEXT NOT NULL,
		operation_id TEXT NOT NULL,
		created_at {ts} NOT NULL,
		expires_at {ts} NOT NULL,
		PRIMARY KEY (tenant_id, idem_key)
	)`,
	`CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (expires_at)`,

	`CREATE TABLE outbox_events (
		id {serial_pk},
		event_id TEXT NOT NULL,
		tenant_id TEXT NOT NULL,
		topic TEXT NOT NULL,
		event_type TEXT NOT NULL,
		source TEXT NOT NULL,
		subject TEXT NOT NULL,
		data TEXT NOT NULL,
		occurred_at {ts} NOT NULL,
		created_at {ts} NOT NULL,
		published_at {ts}
	)`,
	`CREATE UNIQUE INDEX outbox_events_event_id_key ON outbox_events (event_id)`,
	`CREATE INDEX outbox_events_unpublished_idx ON outbox_events (id) WHERE published_at IS NULL`,
	`CREATE INDEX outbox_events_published_idx ON outbox_events (published_at) WHERE published_at IS NOT NULL`,

	`CREATE TABLE usage_records (
		id TEXT PRIMARY KEY,
		tenant_id TEXT NOT NULL REFERENCES tenants (id),
		metric TEXT NOT NULL,
		quantity {bigint} NOT NULL,
		unit TEXT NOT NULL,
		period_start {ts} NOT NULL,
		period_end {ts} NOT NULL,
		created_at {ts} NOT NULL,
		updated_at {ts} NOT NULL
	)`,
	`CREATE UNIQUE INDEX usage_records_period_key ON usage_records (tenant_id, metric, period_start)`,
	`CREATE INDEX usage_records_tenant_period_idx ON usage_records (tenant_id, period_start)`,

	`CREATE TABLE audit_logs (
		id {serial_pk},
		tenant_id TEXT NOT NULL,
		actor TEXT NOT NULL,
		action TEXT NOT NULL,
		target_type TEXT NOT NULL,
		target_id TEXT NOT NULL,
		operation_id TEXT,
		request_id TEXT NOT NULL DEFAULT '',
		created_at {ts} NOT NULL
	)`,
	`CREATE INDEX audit_logs_tenant_created_idx ON audit_logs (tenant_id, created_at)`,
}

var initialDown = []string{
	`DROP TABLE audit_logs`,
	`DROP TABLE usage_records`,
	`DROP TABLE outbox_events`,
	`DROP TABLE idempotency_keys`,
	`DROP TABLE operations`,
	`DROP TABLE site_backups`,
	`DROP TABLE sites`,
	`DROP TABLE vps_servers`,
	`DROP TABLE api_tokens`,
	`DROP TABLE users`,
	`DROP TABLE tenants`,
}

func init() {
	Migrations.MustRegister(
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, initialUp) },
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, initialDown) },
	)
}
