package testenv_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/chomhq/chom/internal/testenv"
)

// A private Redis with AOF keeps an acknowledged write across a kill, comes
// back on the same address, and refuses connections while it is down.
func TestRedisServer(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedisServer(t, testenv.RedisServerConfig{AppendOnly: true})
	c := r.Client(t)
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r.Kill(t)
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := c.Ping(pctx).Err(); err == nil {
		t.Fatal("PING answered while the server was killed")
	}
	r.Start(t)
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("after kill and restart: GET k = %q, %v; want v (AOF with appendfsync always)", v, err)
	}
	r.Stop(t)
	r.Start(t)
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("after stop and restart: GET k = %q, %v; want v", v, err)
	}
}

// A private PostgreSQL keeps committed rows across a clean stop and a kill
// (crash recovery) and comes back on the same address.
func TestPostgresServer(t *testing.T) {
	t.Parallel()
	s := testenv.StartPostgresServer(t)
	db, err := sql.Open("pgx", s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := t.Context()
	if _, err := db.ExecContext(ctx, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	s.Kill(t)
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err == nil {
		t.Fatal("ping answered while the server was killed")
	}
	s.Start(t)
	if _, err := db.ExecContext(ctx, "INSERT INTO kept VALUES (2)"); err != nil {
		// The pool may hand out a connection that died with the server once.
		if _, err := db.ExecContext(ctx, "INSERT INTO kept VALUES (2)"); err != nil {
			t.Fatal(err)
		}
	}
	s.Stop(t)
	s.Start(t)
	var n int
	err = db.QueryRowContext(ctx, "SELECT count(*) FROM kept").Scan(&n)
	if err != nil {
		err = db.QueryRowContext(ctx, "SELECT count(*) FROM kept").Scan(&n)
	}
	if err != nil || n != 2 {
		t.Fatalf("rows after kill, stop and restarts = %d, %v; want 2", n, err)
	}
}
