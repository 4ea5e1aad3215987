package migrations

import (
	"context"

	"github.com/uptrace/bun"
)

// certificates: the platform's ACME accounts, each site's certificate and the
// CA rate-limit ledger. Keys are sealed (certs/seal): key_sealed names the
// key that sealed it, and its associated data binds it to its row.
var certificatesUp = []string{
	`CREATE TABLE acme_accounts (
		id TEXT PRIMARY KEY,
		directory_url TEXT NOT NULL,
		email TEXT NOT NULL,
		uri TEXT NOT NULL,
		key_sealed TEXT NOT NULL,
		created_at {ts} NOT NULL,
		updated_at {ts} NOT NULL
	)`,
	`CREATE UNIQUE INDEX acme_accounts_directory_email_key ON acme_accounts (directory_url, email)`,

	`CREATE TABLE site_certificates (
		site_id TEXT PRIMARY KEY REFERENCES sites (id),
		status TEXT NOT NULL,
		source TEXT NOT NULL,
		issuer TEXT NOT NULL DEFAULT '',
		domains TEXT NOT NULL DEFAULT '[]',
		serial TEXT NOT NULL DEFAULT '',
		not_before {ts},
		not_after {ts},
		renew_after {ts},
		chain_pem TEXT NOT NULL DEFAULT '',
		key_sealed TEXT NOT NULL DEFAULT '',
		last_error_code TEXT NOT NULL DEFAULT '',
		last_error_message TEXT NOT NULL DEFAULT '',
		last_error_at {ts},
		created_at {ts} NOT NULL,
		updated_at {ts} NOT NULL,
		CHECK (status IN ('pending', 'issued', 'failed')),
		CHECK (source IN ('acme', 'upload'))
	)`,
	`CREATE INDEX site_certificates_renew_idx ON site_certificates (renew_after)`,

	`CREATE TABLE acme_budget (
		id {serial_pk},
		bucket TEXT NOT NULL,
		reservation TEXT NOT NULL,
		created_at {ts} NOT NULL
	)`,
	`CREATE INDEX acme_budget_bucket_idx ON acme_budget (bucket, created_at)`,
	`CREATE INDEX acme_budget_reservation_idx ON acme_budget (reservation)`,
}

var certificatesDown = []string{
	`DROP TABLE acme_budget`,
	`DROP TABLE site_certificates`,
	`DROP TABLE acme_accounts`,
}

func init() {
	Migrations.MustRegister(
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, certificatesUp) },
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, certificatesDown) },
	)
}
