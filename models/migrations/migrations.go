package migrations

import (
	"context"
	"fmt"
	"strings"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
	"github.com/uptrace/bun/migrate"
)

// Migrations is the ordered set of schema migrations, registered by the files of this
// package (their names carry the version, as bun's migrate package expects).
var Migrations = migrate.NewMigrations()

// typeNames maps the dialect-neutral placeholders used in the SQL of this package to
// each dialect's column types.
var typeNames = map[dialect.Name]*strings.Replacer{
	dialect.PG: strings.NewReplacer(
		"{ts}", "TIMESTAMPTZ",
		"{serial_pk}", "BIGSERIAL PRIMARY KEY",
		"{bigint}", "BIGINT",
	),
	dialect.SQLite: strings.NewReplacer(
		"{ts}", "TIMESTAMP",
		"{serial_pk}", "INTEGER PRIMARY KEY AUTOINCREMENT",
		"{bigint}", "INTEGER",
	),
}

// execAll runs each statement in a transaction after substituting the dialect's types.
func execAll(ctx context.Context, db *bun.DB, statements []string) error {
	r, ok := typeNames[db.Dialect().Name()]
	if !ok {
		return fmt.Errorf("migrations: unsupported dialect %s", db.Dialect().Name())
	}
	return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		for _, stmt := range statements {
			if _, err := tx.ExecContext(ctx, r.Replace(stmt)); err != nil {
				return fmt.Errorf("migrations: %w\n%s", err, firstLine(stmt))
			}
		}
		return nil
	})
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
