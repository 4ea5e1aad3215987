package migrations

import (
	"context"

	"github.com/uptrace/bun"
)

// operations.server_touched_at: when a driver call of the operation's job may
// first have reached its server. It stays NULL while every call was refused by
// a protection layer before it ran (an open circuit breaker, a full limit:
// drivers.ErrDeferred), so a cancel of such an operation has nothing to undo
// on the server and finishes at once, instead of waiting for the server to be
// reachable again to undo what was never done.
var serverTouchedUp = []string{
	`ALTER TABLE operations ADD COLUMN server_touched_at {ts}`,
}

var serverTouchedDown = []string{
	`ALTER TABLE operations DROP COLUMN server_touched_at`,
}

func init() {
	Migrations.MustRegister(
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, serverTouchedUp) },
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, serverTouchedDown) },
	)
}
