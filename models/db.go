package models

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/driver/sqliteshim"
)

// PoolConfig sizes the connection pool of a PostgreSQL database. Zero values take
// defaults that suit one ingress or worker process.
type PoolConfig struct {
	MaxOpenConns int
	MaxIdleConns int
	// Tracer, when set, sees every statement a PostgreSQL connection runs:
	// bun's, those sent with parameters past bun, BEGIN and COMMIT (the
	// drain benchmark counts transactions with it). SQLite ignores it.
	Tracer pgx.QueryTracer
}

// Open connects to the database named by rawURL: "postgres://…" or "postgresql://…"
// for PostgreSQL (through pgx), "sqlite:///path/to/file.db" or "sqlite://relative.db"
// for SQLite. It pings the database before returning.
func Open(ctx context.Context, rawURL string, pool PoolConfig) (*bun.DB, error) {
	switch {
	case strings.HasPrefix(rawURL, "postgres://"), strings.HasPrefix(rawURL, "postgresql://"):
		return openPostgres(ctx, rawURL, pool)
	case strings.HasPrefix(rawURL, "sqlite:"):
		return OpenSQLite(ctx, strings.TrimPrefix(strings.TrimPrefix(rawURL, "sqlite:"), "//"))
	default:
		return nil, fmt.Errorf("open database: unsupported URL scheme in %q (want postgres:// or sqlite://)", RedactURL(rawURL))
	}
}

// execModeParam is the connection-string parameter that sets pgx's
// default query execution mode; planCacheParam PostgreSQL's plan_cache_mode.
const (
	execModeParam  = "default_query_exec_mode"
	planCacheParam = "plan_cache_mode"
)

// openPostgres opens a pool of pgx connections that run statements with
// the simple protocol, unless the URL names a default_query_exec_mode.
//
// Why simple: bun writes every argument into the SQL text, so nearly every
// statement CHOM runs is text PostgreSQL has not seen before. pgx's default
// mode prepares each new text (a round trip of its own, a plan, a cached
// statement later deallocated) before it executes it; the simple protocol
// sends it once. Measured with scripts/load/drain.sh on 2 cores, this cut
// PostgreSQL's CPU per provision from 3.1 to 2.2 ms and raised the drain
// from 369 to 472 provisions/s. It also keeps no server-side statement, so
// a transaction-pooling proxy (PgBouncer) can sit in front. The few
// statements written with $n placeholders choose their own mode
// (queryPrepared keeps the hot ones prepared; domains.go).
//
// The statements kept prepared are a few hot ones whose text never changes
// (the accept batch, the provision start, the provision completion batch),
// and their connections run with plan_cache_mode=force_generic_plan unless
// the URL sets it: each is planned once per connection, not with every
// run. Left to choose, PostgreSQL planned the completion batch every time
// (a plan for an array of unknown length looks dearer than one for the two
// rows it holds), 0.55 ms of its CPU per batch. Their best plans do not
// depend on the values: primary-key lookups and unnested arrays of rows. A
// plan made while a table was nearly empty is made again after the table's
// next ANALYZE (autovacuum's, at the latest once a tenth of it changed).
func openPostgres(ctx context.Context, dsn string, pool PoolConfig) (*bun.DB, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres %s: %w", RedactURL(dsn), err)
	}
	// pgx.ParseConfig takes default_query_exec_mode out of RuntimeParams:
	// whether the URL set it is read from the URL itself.
	if !strings.Contains(dsn, execModeParam) {
		cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	}
	if _, set := cfg.RuntimeParams[planCacheParam]; !set {
		cfg.RuntimeParams[planCacheParam] = "force_generic_plan"
	}
	if pool.Tracer != nil {
		cfg.Tracer = pool.Tracer
	}
	sqldb := stdlib.OpenDB(*cfg)
	if pool.MaxOpenConns <= 0 {
		pool.MaxOpenConns = 40
	}
	if pool.MaxIdleConns <= 0 {
		pool.MaxIdleConns = pool.MaxOpenConns
	}
	sqldb.SetMaxOpenConns(pool.MaxOpenConns)
	sqldb.SetMaxIdleConns(pool.MaxIdleConns)
	sqldb.SetConnMaxIdleTime(5 * time.Minute)
	db := bun.NewDB(sqldb, pgdialect.New())
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("ping postgres %s: %w", RedactURL(dsn), err)
	}
	return db, nil
}

// OpenSQLite opens (creating if needed) the SQLite database file at path with WAL
// journaling, a busy timeout and foreign keys on. SQLite allows one writer at a time,
// so the pool holds a single connection: every statement is serialised, which keeps
// the read-modify-write queries here free of races without row locks.
func OpenSQLite(ctx context.Context, path string) (*bun.DB, error) {
	if path == "" {
		return nil, fmt.Errorf("open sqlite: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	dsn := "file:" + abs + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(on)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	sqldb, err := sql.Open(sqliteshim.ShimName, dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", abs, err)
	}
	sqldb.SetMaxOpenConns(1)
	sqldb.SetMaxIdleConns(1)
	sqldb.SetConnMaxLifetime(0)
	sqldb.SetConnMaxIdleTime(0)
	db := bun.NewDB(sqldb, sqlitedialect.New())
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("ping sqlite %s: %w", abs, err)
	}
	return db, nil
}

// IsPostgres reports whether db speaks PostgreSQL.
func IsPostgres(db bun.IDB) bool {
	return db.Dialect().Name() == dialect.PG
}

// RedactURL hides the secrets of a URL (a database, Redis or any other one) so
// it can be logged or put in an error: the password of its user info and the
// value of every query parameter whose name suggests a credential (PostgreSQL's
// password and sslpassword, Redis Sentinel's sentinel_password, an S3 secret
// key, a token). A URL that does not parse is replaced whole, since the parse
// error would echo it.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparseable URL>"
	}
	if u.RawQuery != "" {
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			u.RawQuery = "<unparseable query>"
		} else {
			changed := false
			for k := range q {
				if secretParam(k) {
					q[k] = []string{"xxxxx"}
					changed = true
				}
			}
			if changed {
				u.RawQuery = q.Encode()
			}
		}
	}
	return u.Redacted()
}

// secretParam reports whether a query parameter's name suggests a credential.
func secretParam(name string) bool {
	n := strings.ToLower(name)
	for _, w := range []string{"pass", "secret", "token", "key", "auth", "credential", "signature"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}
