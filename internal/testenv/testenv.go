package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/driver/sqliteshim"
)

// Environment variables read by this package.
const (
	// EnvDatabaseURL is the PostgreSQL server URL the tests create their schemas on.
	EnvDatabaseURL = "CHOM_TEST_DATABASE_URL"
	// EnvRedisURL is the Redis server URL; its database number is ignored.
	EnvRedisURL = "CHOM_TEST_REDIS_URL"
	// EnvCI, when non-empty, turns a missing server into a test failure.
	EnvCI = "CI"
)

// MaxOpenConns is the pool size of a [Postgres] database. The test server
// allows 300 connections and many tests run at once; a test that needs more
// can call db.SetMaxOpenConns itself.
const MaxOpenConns = 20

// redisCounterKey is the counter, on Redis database 0, that hands out databases.
const redisCounterKey = "chom:testenv:next-db"

// redisDatabases is how many databases the test Redis has (--databases 1024);
// database 0 holds the counter, so tests get 1..redisDatabases-1.
const redisDatabases = 1024

// setupTimeout bounds each round trip of setup and cleanup, so a hung server
// fails the test with a message instead of eating the whole go test -timeout.
const setupTimeout = 30 * time.Second

// serverURL returns the value of the environment variable env. When it is
// unset the test is skipped, or failed when CI is set.
func serverURL(tb testing.TB, env string) string {
	tb.Helper()
	v := os.Getenv(env)
	if v != "" {
		return v
	}
	if os.Getenv(EnvCI) != "" {
		tb.Fatalf("%s not set and CI=%q: integration tests must run in CI; run via scripts/test-services.sh", env, os.Getenv(EnvCI))
	}
	tb.Skipf("%s not set; run via scripts/test-services.sh", env)
	return ""
}

// Postgres returns a database on the PostgreSQL server of CHOM_TEST_DATABASE_URL
// in a new, empty schema that only this test sees. Every pooled connection has
// search_path set to that schema. On cleanup the pool is closed and the schema
// dropped with everything in it. It skips or fails the test when the variable
// is unset (see the package documentation) and fails it when the server does
// not answer.
func Postgres(tb testing.TB) *bun.DB {
	tb.Helper()
	dsn := PostgresDSN(tb)
	sqldb, err := sql.Open("pgx", dsn)
	if err != nil {
		tb.Fatalf("testenv: open postgres: %v", err)
	}
	sqldb.SetMaxOpenConns(MaxOpenConns)
	sqldb.SetMaxIdleConns(MaxOpenConns)
	db := bun.NewDB(sqldb, pgdialect.New())
	// Registered after PostgresDSN's cleanup, so it runs first: the pool is
	// closed before the schema is dropped.
	tb.Cleanup(func() { _ = db.Close() })

	ctx, cancel := context.WithTimeout(tb.Context(), setupTimeout)
	defer cancel()
	var schema string
	if err := db.QueryRowContext(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		tb.Fatalf("testenv: postgres: %v", err)
	}
	if want := searchPath(dsn); schema != want {
		tb.Fatalf("testenv: postgres connection uses schema %q, want %q", schema, want)
	}
	return db
}

// PostgresDSN creates a schema like [Postgres] and returns a connection string
// whose search_path is that schema, for tests that start subprocesses. The
// search_path is a startup parameter in the URL (or key=value) form, which pgx
// understands; it is dropped with everything in it on cleanup.
func PostgresDSN(tb testing.TB) string {
	tb.Helper()
	base := serverURL(tb, EnvDatabaseURL)
	schema := "t_" + randomHex(tb, 8)

	ctx, cancel := context.WithTimeout(tb.Context(), setupTimeout)
	defer cancel()
	if err := adminExec(ctx, base, "CREATE SCHEMA "+schema); err != nil {
		tb.Fatalf("testenv: create schema on %s: %v", redactURL(base), err)
	}
	tb.Cleanup(func() {
		// tb.Context is already cancelled during cleanup.
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		if err := adminExec(ctx, base, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
			tb.Errorf("testenv: drop schema %s: %v", schema, err)
		}
	})

	dsn, err := withSearchPath(base, schema)
	if err != nil {
		tb.Fatalf("testenv: %s: %v", EnvDatabaseURL, err)
	}
	return dsn
}

// adminExec runs one statement on a connection of its own, outside any test
// schema, and closes it.
func adminExec(ctx context.Context, dsn, query string) error {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	_, err = db.ExecContext(ctx, query)
	return err
}

// withSearchPath returns dsn with the search_path startup parameter set to schema.
func withSearchPath(dsn, schema string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("parse %s: %w", redactURL(dsn), err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	// key=value form; a later key wins in pgx.
	return dsn + " search_path=" + schema, nil
}

// searchPath returns the search_path withSearchPath put into dsn.
func searchPath(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		return u.Query().Get("search_path")
	}
	i := strings.LastIndex(dsn, "search_path=")
	if i < 0 {
		return ""
	}
	return strings.Fields(dsn[i+len("search_path="):])[0]
}

// SQLite returns a database in a new file under tb.TempDir(), opened through
// sqliteshim (modernc.org/sqlite on linux/amd64, mattn/go-sqlite3 where
// modernc is unavailable or with -tags cgosqlite) with WAL journaling,
// busy_timeout=5000 and foreign keys enforced. The pool has a single
// connection (see the package documentation). It fails the test if the file
// cannot be opened or a pragma does not take.
func SQLite(tb testing.TB) *bun.DB {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "chom.db")
	// The two drivers spell per-connection pragmas differently; both apply them
	// to every connection they open, so a replaced connection keeps them.
	var params string
	switch sqliteshim.DriverName() {
	case "sqlite": // modernc.org/sqlite
		params = "_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(on)"
	case "sqlite3": // github.com/mattn/go-sqlite3
		params = "_busy_timeout=5000&_journal_mode=WAL&_foreign_keys=on"
	}
	sqldb, err := sql.Open(sqliteshim.ShimName, "file:"+path+"?"+params)
	if err != nil {
		tb.Fatalf("testenv: open sqlite %s: %v", path, err)
	}
	sqldb.SetMaxOpenConns(1)
	sqldb.SetMaxIdleConns(1)
	sqldb.SetConnMaxLifetime(0)
	sqldb.SetConnMaxIdleTime(0)
	db := bun.NewDB(sqldb, sqlitedialect.New())
	tb.Cleanup(func() { _ = db.Close() })

	ctx, cancel := context.WithTimeout(tb.Context(), setupTimeout)
	defer cancel()
	// Set them again on the one connection, whatever the driver did with the
	// DSN, then check they took: a silently ignored pragma would let foreign
	// key bugs pass on SQLite.
	for _, p := range []string{"busy_timeout = 5000", "journal_mode = WAL", "foreign_keys = ON"} {
		if _, err := db.ExecContext(ctx, "PRAGMA "+p); err != nil {
			tb.Fatalf("testenv: sqlite PRAGMA %s: %v", p, err)
		}
	}
	for pragma, want := range map[string]string{"busy_timeout": "5000", "journal_mode": "wal", "foreign_keys": "1"} {
		var got string
		if err := db.QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&got); err != nil {
			tb.Fatalf("testenv: sqlite PRAGMA %s: %v", pragma, err)
		}
		if !strings.EqualFold(got, want) {
			tb.Fatalf("testenv: sqlite PRAGMA %s = %q, want %q", pragma, got, want)
		}
	}
	return db
}

// RedisDB is one logical database of the test Redis server, for this test alone.
type RedisDB struct {
	// Addr is host:port of the server.
	Addr string
	// DB is the database number, 1..1023.
	DB int
	// URL is redis://[user:password@]Addr/DB, for code that takes a URL
	// (redis.ParseURL, asynq.ParseRedisURI).
	URL string
}

// Redis returns a database of the Redis server of CHOM_TEST_REDIS_URL that no
// other running test uses, flushed before use and again on cleanup. Databases
// come from a counter on database 0, so they are distinct across test binaries
// running at the same time (up to 1023 tests at once). It skips or fails the
// test when the variable is unset (see the package documentation) and fails it
// when the server does not answer or has fewer than 1024 databases.
func Redis(tb testing.TB) RedisDB {
	tb.Helper()
	raw := serverURL(tb, EnvRedisURL)
	opts, err := redis.ParseURL(raw)
	if err != nil {
		tb.Fatalf("testenv: %s: %v", EnvRedisURL, err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		tb.Fatalf("testenv: %s: %v", EnvRedisURL, err)
	}

	ctx, cancel := context.WithTimeout(tb.Context(), setupTimeout)
	defer cancel()
	opts.DB = 0
	admin := redis.NewClient(opts)
	n, err := admin.Incr(ctx, redisCounterKey).Result()
	_ = admin.Close()
	if err != nil {
		tb.Fatalf("testenv: redis %s: INCR %s: %v", opts.Addr, redisCounterKey, err)
	}
	db := 1 + int(n%(redisDatabases-1))

	u.Path = "/" + strconv.Itoa(db)
	u.RawPath = ""
	r := RedisDB{Addr: opts.Addr, DB: db, URL: u.String()}
	if err := r.flush(ctx); err != nil {
		tb.Fatalf("testenv: redis %s: FLUSHDB %d (the server needs --databases %d): %v", r.Addr, db, redisDatabases, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		if err := r.flush(ctx); err != nil {
			tb.Errorf("testenv: redis %s: FLUSHDB %d: %v", r.Addr, r.DB, err)
		}
	})
	return r
}

func (r RedisDB) flush(ctx context.Context) error {
	opts, err := redis.ParseURL(r.URL)
	if err != nil {
		return err
	}
	c := redis.NewClient(opts)
	defer c.Close()
	return c.FlushDB(ctx).Err()
}

// Client returns a client of r, closed on cleanup. It fails the test if r.URL
// does not parse.
func (r RedisDB) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	opts, err := redis.ParseURL(r.URL)
	if err != nil {
		tb.Fatalf("testenv: redis URL: %v", err)
	}
	c := redis.NewClient(opts)
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Backends runs fn in the parallel subtests "postgres" and "sqlite", each with
// a fresh database from [Postgres] and [SQLite], for code that must behave the
// same on both. The postgres subtest skips or fails like [Postgres].
func Backends(t *testing.T, fn func(t *testing.T, db *bun.DB)) {
	t.Helper()
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		fn(t, Postgres(t))
	})
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		fn(t, SQLite(t))
	})
}

func randomHex(tb testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatalf("testenv: random: %v", err)
	}
	return hex.EncodeToString(b)
}

// redactURL hides the password of a server URL in messages.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	return "(connection string)"
}
