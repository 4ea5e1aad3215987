package loadtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"github.com/redis/go-redis/v9"
)

// CheckLoopbackURL returns nil when the host of a server URL (http, postgres,
// redis) is a loopback address, and an error wrapping ErrNotLoopback otherwise.
func CheckLoopbackURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("loadtest: %q is not a URL with a host", redactURL(raw))
	}
	return CheckLoopbackHost(u.Hostname())
}

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// FreshSchema creates the schema name on the PostgreSQL server of dsn (a
// postgres:// URL) and returns a URL whose connections use it (search_path, a
// startup parameter pgx passes on) and a function that drops it with
// everything in it. name must be a plain lowercase identifier.
func FreshSchema(ctx context.Context, dsn, name string) (string, func(context.Context) error, error) {
	if !schemaName.MatchString(name) {
		return "", nil, fmt.Errorf("loadtest: schema name %q: want a lowercase identifier", name)
	}
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", nil, fmt.Errorf("loadtest: database URL %s: want postgres://…", redactURL(dsn))
	}
	if err := adminExec(ctx, dsn, "CREATE SCHEMA "+name); err != nil {
		return "", nil, fmt.Errorf("loadtest: create schema %s on %s: %w", name, redactURL(dsn), err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	drop := func(ctx context.Context) error {
		if err := adminExec(ctx, dsn, "DROP SCHEMA IF EXISTS "+name+" CASCADE"); err != nil {
			return fmt.Errorf("loadtest: drop schema %s: %w", name, err)
		}
		return nil
	}
	return u.String(), drop, nil
}

// adminExec runs one statement on a connection of its own and closes it.
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

// PostgresVersion returns the server_version of the server of dsn, or "".
func PostgresVersion(ctx context.Context, dsn string) string {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return ""
	}
	defer db.Close()
	var v string
	if err := db.QueryRowContext(ctx, "SHOW server_version").Scan(&v); err != nil {
		return ""
	}
	return v
}

// claimKey marks a Redis logical database as taken by a load run.
const claimKey = "chom:loadtest:owner"

// RedisDB is a Redis logical database a run has to itself.
type RedisDB struct {
	// URL names the database (redis://host:port/N).
	URL string
	// DB is its number.
	DB     int
	client *redis.Client
}

// ClaimRedisDB finds an empty logical database on the Redis server of raw
// (a redis:// or rediss:// URL) for the run runID. When raw names a database
// other than 0, that one is used and must be empty. Otherwise it tries the
// databases from the highest down to 1 (test kits hand them out from the
// bottom up) and claims the first empty one with SET NX. Release it with
// RedisDB.Release, which empties it.
func ClaimRedisDB(ctx context.Context, raw, runID string) (*RedisDB, error) {
	opts, err := redis.ParseURL(raw)
	if err != nil {
		// Not %w: a *url.Error's text quotes the URL, password and all.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("loadtest: redis URL %s: %v", redactURL(raw), err)
	}
	try := func(db int) (*RedisDB, bool, error) {
		o := *opts
		o.DB = db
		c := redis.NewClient(&o)
		ok, err := c.SetNX(ctx, claimKey, runID, 0).Result()
		if err != nil {
			_ = c.Close()
			return nil, false, fmt.Errorf("loadtest: redis %s db %d: %w", opts.Addr, db, err)
		}
		if !ok {
			_ = c.Close()
			return nil, false, nil
		}
		if n, err := c.DBSize(ctx).Result(); err != nil || n != 1 {
			_ = c.Del(ctx, claimKey).Err()
			_ = c.Close()
			return nil, false, err
		}
		u, _ := url.Parse(raw)
		u.Path = "/" + strconv.Itoa(db)
		return &RedisDB{URL: u.String(), DB: db, client: c}, true, nil
	}
	if opts.DB != 0 {
		d, ok, err := try(opts.DB)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("loadtest: redis %s db %d is not empty", opts.Addr, opts.DB)
		}
		return d, nil
	}
	o := *opts
	c := redis.NewClient(&o)
	n := 16
	if cfg, err := c.ConfigGet(ctx, "databases").Result(); err == nil {
		if v, err := strconv.Atoi(cfg["databases"]); err == nil && v > 0 {
			n = v
		}
	}
	_ = c.Close()
	for db := n - 1; db >= 1; db-- {
		d, ok, err := try(db)
		if err != nil {
			return nil, err
		}
		if ok {
			return d, nil
		}
	}
	return nil, fmt.Errorf("loadtest: redis %s: no empty logical database among 1..%d", opts.Addr, n-1)
}

// Flush empties the database and claims it again, so the next stack starts on
// an empty queue.
func (d *RedisDB) Flush(ctx context.Context) error {
	if err := d.client.FlushDB(ctx).Err(); err != nil {
		return fmt.Errorf("loadtest: flush redis db %d: %w", d.DB, err)
	}
	if err := d.client.Set(ctx, claimKey, "flushed", 0).Err(); err != nil {
		return fmt.Errorf("loadtest: claim redis db %d: %w", d.DB, err)
	}
	return nil
}

// Version returns the Redis server version, or "".
func (d *RedisDB) Version(ctx context.Context) string {
	info, err := d.client.Info(ctx, "server").Result()
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return v
		}
	}
	return ""
}

// Release empties the database (the claim goes with it) and closes the client.
func (d *RedisDB) Release(ctx context.Context) error {
	err := d.client.FlushDB(ctx).Err()
	return errors.Join(err, d.client.Close())
}

// redactURL hides the password of a server URL.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	return "(connection string)"
}
