package migrations

import (
	"context"

	"github.com/uptrace/bun"
)

// api_tokens.last_used_at: when the token last authenticated a request, to
// within a minute (the ingress records it when it looks the token up, at most
// once a minute per token, never on every request). NULL: never used.
var tokenLastUsedUp = []string{
	`ALTER TABLE api_tokens ADD COLUMN last_used_at {ts}`,
}

var tokenLastUsedDown = []string{
	`ALTER TABLE api_tokens DROP COLUMN last_used_at`,
}

func init() {
	Migrations.MustRegister(
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, tokenLastUsedUp) },
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, tokenLastUsedDown) },
	)
}
