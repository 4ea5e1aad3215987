package models

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/uptrace/bun"
)

// numberParams numbers q's ? placeholders $1, $2, … in order, for a
// PostgreSQL statement sent with its values as parameters (queryStrings)
// rather than written into its text by bun. q must hold no other ?.
func numberParams(q string) string {
	var b strings.Builder
	n := 0
	for {
		i := strings.IndexByte(q, '?')
		if i < 0 {
			b.WriteString(q)
			return b.String()
		}
		n++
		b.WriteString(q[:i])
		b.WriteString("$" + strconv.Itoa(n))
		q = q[i+1:]
	}
}

// queryPrepared runs PostgreSQL statement q (numbered parameters) with
// args in db, a *bun.DB or a bun.Tx.
//
// The statement goes past bun, with its values as parameters, and is kept
// prepared on the connection (pgx's statement cache): for a hot statement
// whose text never changes, PostgreSQL then parses it once per connection
// and plans it once (openPostgres's plan_cache_mode), where the simple
// protocol that openPostgres sets as the default parses and plans it every
// time. bun's query hooks do not see it; a pgx tracer does
// (PoolConfig.Tracer).
func queryPrepared(ctx context.Context, db bun.IDB, q string, args ...any) (*sql.Rows, error) {
	a := append([]any{pgx.QueryExecModeCacheStatement}, args...)
	switch d := db.(type) {
	case *bun.DB:
		return d.DB.QueryContext(ctx, q, a...)
	case bun.Tx:
		return d.Tx.QueryContext(ctx, q, a...)
	default:
		return nil, fmt.Errorf("query: %T is neither a *bun.DB nor a bun.Tx", db)
	}
}

// queryStrings is queryPrepared for a statement of a single text column.
func queryStrings(ctx context.Context, db bun.IDB, q string, args []any) ([]string, error) {
	rows, err := queryPrepared(ctx, db, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
