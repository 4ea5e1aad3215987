package migrations

import (
	"context"

	"github.com/uptrace/bun"
)

// certificate_uploads: a certificate a tenant uploaded, kept from the request
// that accepted it to the certificate.issue operation (reason "upload") that
// installs it, which deletes the row when it finishes. The key is sealed
// (certs/seal) and bound by its associated data to the operation and the
// site, so a row copied to another operation or site does not open. No
// foreign key to operations: the row is written in the same transaction,
// before the operation row.
var certificateUploadsUp = []string{
	`CREATE TABLE certificate_uploads (
		operation_id TEXT PRIMARY KEY,
		site_id TEXT NOT NULL REFERENCES sites (id),
		chain_pem TEXT NOT NULL,
		key_sealed TEXT NOT NULL,
		created_at {ts} NOT NULL
	)`,
	`CREATE INDEX certificate_uploads_site_idx ON certificate_uploads (site_id)`,
}

var certificateUploadsDown = []string{
	`DROP TABLE certificate_uploads`,
}

func init() {
	Migrations.MustRegister(
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, certificateUploadsUp) },
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, certificateUploadsDown) },
	)
}
