package migrations

import (
	"context"

	"github.com/uptrace/bun"
)

// site_https: each site's certificate mode ('auto': issued after the
// provision and renewed; 'off': only when the tenant asks or uploads) and
// whether its HTTPS answers carry HSTS (opt-in). Existing sites get 'auto',
// so the renewal sweep and a re-issue treat them like new ones; nothing is
// issued for them until their next provision or a request.
var siteHTTPSUp = []string{
	`ALTER TABLE sites ADD COLUMN https TEXT NOT NULL DEFAULT 'auto'`,
	`ALTER TABLE sites ADD COLUMN hsts BOOLEAN NOT NULL DEFAULT FALSE`,
}

var siteHTTPSDown = []string{
	`ALTER TABLE sites DROP COLUMN hsts`,
	`ALTER TABLE sites DROP COLUMN https`,
}

func init() {
	Migrations.MustRegister(
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, siteHTTPSUp) },
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, siteHTTPSDown) },
	)
}
