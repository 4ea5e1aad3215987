package migrations

import (
	"context"

	"github.com/uptrace/bun"
)

// certificate_renewal: what the renewal sweep needs.
//
//   - site_certificates.ari_check_after: when the sweep next asks the CA for
//     its ACME Renewal Information about the certificate (NULL: at the next
//     sweep). Indexed, as the sweep lists the rows whose time has come.
//   - operations_certificate_issue_open_key: at most one unfinished
//     certificate.issue per site, enforced by the database. The code checks
//     first (a ConflictError naming the operation, or the sweep skipping a
//     busy site); the index is the backstop when two paths (a tenant's POST
//     and the sweep, two sweeps) check at the same instant.
var certificateRenewalUp = []string{
	`ALTER TABLE site_certificates ADD COLUMN ari_check_after {ts}`,
	`CREATE INDEX site_certificates_ari_idx ON site_certificates (ari_check_after)`,
	`CREATE UNIQUE INDEX operations_certificate_issue_open_key ON operations (target_id)
		WHERE op_type = 'certificate.issue' AND status IN ('pending', 'running')`,
}

var certificateRenewalDown = []string{
	`DROP INDEX operations_certificate_issue_open_key`,
	`DROP INDEX site_certificates_ari_idx`,
	`ALTER TABLE site_certificates DROP COLUMN ari_check_after`,
}

func init() {
	Migrations.MustRegister(
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, certificateRenewalUp) },
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, certificateRenewalDown) },
	)
}
