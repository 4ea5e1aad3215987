package testenv_test

import (
	"context"
	"fmt"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
)

var schemaName = regexp.MustCompile(`^t_[0-9a-f]{16}$`)

func currentSchema(t *testing.T, db bun.IDB) string {
	t.Helper()
	var s string
	if err := db.QueryRowContext(t.Context(), "SELECT current_schema()").Scan(&s); err != nil {
		t.Fatalf("current_schema: %v", err)
	}
	return s
}

func schemaExists(t *testing.T, db *bun.DB, schema string) bool {
	t.Helper()
	var n int
	err := db.QueryRowContext(t.Context(),
		"SELECT count(*) FROM information_schema.schemata WHERE schema_name = ?", schema).Scan(&n)
	if err != nil {
		t.Fatalf("look up schema: %v", err)
	}
	return n == 1
}

func TestPostgresSchemaIsolation(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a, b := testenv.Postgres(t), testenv.Postgres(t)

	sa, sb := currentSchema(t, a), currentSchema(t, b)
	if !schemaName.MatchString(sa) || !schemaName.MatchString(sb) {
		t.Fatalf("schemas %q, %q: want t_<16 hex>", sa, sb)
	}
	if sa == sb {
		t.Fatalf("both databases use schema %q", sa)
	}

	if _, err := a.ExecContext(ctx, "CREATE TABLE widgets (id bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ExecContext(ctx, "INSERT INTO widgets VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	_, err := b.ExecContext(ctx, "SELECT id FROM widgets")
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("widgets seen from the other schema: err = %v, want relation does not exist", err)
	}
	var where string
	if err := a.QueryRowContext(ctx, "SELECT table_schema FROM information_schema.tables WHERE table_name = 'widgets'").Scan(&where); err != nil {
		t.Fatal(err)
	}
	if where != sa {
		t.Errorf("widgets created in schema %q, want %q", where, sa)
	}
}

// Every connection of the pool, not only the first, must have the search_path.
func TestPostgresEveryConnectionUsesSchema(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	want := currentSchema(t, db)

	const n = 5
	var conns []bun.Conn
	for range n {
		c, err := db.Conn(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	pids := map[int]bool{}
	for _, c := range conns {
		var pid int
		var schema string
		if err := c.QueryRowContext(t.Context(), "SELECT pg_backend_pid(), current_schema()").Scan(&pid, &schema); err != nil {
			t.Fatal(err)
		}
		pids[pid] = true
		if schema != want {
			t.Errorf("connection %d uses schema %q, want %q", pid, schema, want)
		}
	}
	for _, c := range conns {
		_ = c.Close()
	}
	if len(pids) != n {
		t.Errorf("got %d distinct backends, want %d", len(pids), n)
	}
}

func TestPostgresDropsSchemaOnCleanup(t *testing.T) {
	t.Parallel()
	observer := testenv.Postgres(t)
	var schema string
	t.Run("user", func(t *testing.T) {
		db := testenv.Postgres(t)
		schema = currentSchema(t, db)
		if _, err := db.ExecContext(t.Context(), "CREATE TABLE leftovers (id int)"); err != nil {
			t.Fatal(err)
		}
		if !schemaExists(t, observer, schema) {
			t.Fatalf("schema %q not visible to other connections", schema)
		}
	})
	if schemaExists(t, observer, schema) {
		t.Errorf("schema %q still exists after cleanup", schema)
	}
}

func TestPostgresDSN(t *testing.T) {
	t.Parallel()
	dsn := testenv.PostgresDSN(t)
	// What a subprocess would do: connect with the DSN alone.
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var schema string
	if err := conn.QueryRow(t.Context(), "SELECT current_schema()").Scan(&schema); err != nil {
		t.Fatal(err)
	}
	if !schemaName.MatchString(schema) || !strings.Contains(dsn, "search_path="+schema) {
		t.Errorf("current_schema() = %q with DSN %q", schema, dsn)
	}
}

func TestRedisDatabasesAreDistinct(t *testing.T) {
	t.Parallel()
	const n = 4
	seen := map[int]bool{}
	var dbs []testenv.RedisDB
	for range n {
		r := testenv.Redis(t)
		if r.DB < 1 || r.DB > 1023 {
			t.Errorf("DB = %d, want 1..1023", r.DB)
		}
		if want := fmt.Sprintf("redis://%s/%d", r.Addr, r.DB); r.URL != want {
			t.Errorf("URL = %q, want %q", r.URL, want)
		}
		if seen[r.DB] {
			t.Errorf("DB %d handed out twice", r.DB)
		}
		seen[r.DB] = true
		dbs = append(dbs, r)
	}

	ctx := t.Context()
	first := dbs[0].Client(t)
	if err := first.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, r := range dbs[1:] {
		c := r.Client(t)
		if size, err := c.DBSize(ctx).Result(); err != nil || size != 0 {
			t.Errorf("DB %d: DBSIZE = %d, %v; want 0, nil", r.DB, size, err)
		}
	}
}

func TestRedisFlushesOnCleanup(t *testing.T) {
	t.Parallel()
	var used testenv.RedisDB
	ok := t.Run("user", func(t *testing.T) {
		used = testenv.Redis(t)
		if err := used.Client(t).Set(t.Context(), "leftover", "1", 0).Err(); err != nil {
			t.Fatal(err)
		}
	})
	if !ok || used.URL == "" { // failed or skipped
		return
	}
	size, err := used.Client(t).DBSize(t.Context()).Result()
	if err != nil || size != 0 {
		t.Errorf("DB %d after cleanup: DBSIZE = %d, %v; want 0, nil", used.DB, size, err)
	}
}

func TestSQLite(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	ctx := t.Context()

	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
	for _, q := range []string{
		"CREATE TABLE parents (id INTEGER PRIMARY KEY)",
		"CREATE TABLE children (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL REFERENCES parents (id))",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO children (parent_id) VALUES (42)"); err == nil {
		t.Error("insert with a dangling foreign key succeeded; foreign_keys is off")
	}

	// The single connection serialises concurrent users instead of failing them.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			_, err := db.ExecContext(ctx, "INSERT INTO parents (id) VALUES (?)", i+1)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

type gadget struct {
	bun.BaseModel `bun:"table:gadgets"`

	ID   int64  `bun:"id,pk,autoincrement"`
	Name string `bun:"name,notnull"`
}

func TestBackends(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		if _, err := db.NewCreateTable().Model((*gadget)(nil)).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := db.NewInsert().Model(&[]gadget{{Name: "a"}, {Name: "b"}}).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		n, err := db.NewSelect().Model((*gadget)(nil)).Count(ctx)
		if err != nil || n != 2 {
			t.Errorf("count = %d, %v; want 2, nil", n, err)
		}
	})
}

// recordingTB stands in for a test so that a Fatal or Skip of the kit can be
// observed instead of ending the real test.
type recordingTB struct {
	testing.TB // the real test, for everything not overridden

	mu               sync.Mutex
	fataled, skipped bool
	msg              string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) stop(fatal bool, msg string) {
	r.mu.Lock()
	r.fataled, r.skipped, r.msg = fatal, !fatal, msg
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recordingTB) Fatal(args ...any)                 { r.stop(true, fmt.Sprint(args...)) }
func (r *recordingTB) Fatalf(format string, args ...any) { r.stop(true, fmt.Sprintf(format, args...)) }
func (r *recordingTB) FailNow()                          { r.stop(true, "FailNow") }
func (r *recordingTB) Skip(args ...any)                  { r.stop(false, fmt.Sprint(args...)) }
func (r *recordingTB) Skipf(format string, args ...any)  { r.stop(false, fmt.Sprintf(format, args...)) }
func (r *recordingTB) SkipNow()                          { r.stop(false, "SkipNow") }

// run calls fn with r on a goroutine of its own, as the testing package runs
// a test, so that runtime.Goexit in Fatal or Skip ends only fn.
func (r *recordingTB) run(fn func(tb testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
}

// Without its environment variable a kit function skips the test on a
// developer machine and fails it when CI is set: CI never passes with the
// integration tests silently skipped. Not parallel: it changes the environment.
func TestMissingServer(t *testing.T) {
	kits := map[string]func(tb testing.TB){
		"Postgres":    func(tb testing.TB) { testenv.Postgres(tb) },
		"PostgresDSN": func(tb testing.TB) { testenv.PostgresDSN(tb) },
		"Redis":       func(tb testing.TB) { testenv.Redis(tb) },
		"Kafka":       func(tb testing.TB) { testenv.Kafka(tb) },
		"KafkaServer": func(tb testing.TB) { testenv.StartKafkaServer(tb) },
	}
	for name, kit := range kits {
		for _, ci := range []string{"", "true"} {
			t.Run(fmt.Sprintf("%s/CI=%q", name, ci), func(t *testing.T) {
				t.Setenv(testenv.EnvDatabaseURL, "")
				t.Setenv(testenv.EnvRedisURL, "")
				t.Setenv(testenv.EnvKafkaBrokers, "")
				t.Setenv(testenv.EnvKafkaLauncher, "")
				t.Setenv(testenv.EnvCI, ci)

				r := &recordingTB{TB: t}
				r.run(kit)
				wantFatal := ci != ""
				if r.fataled != wantFatal || r.skipped == wantFatal {
					t.Errorf("fatal = %v, skip = %v (%q); want fatal = %v", r.fataled, r.skipped, r.msg, wantFatal)
				}
				if !strings.Contains(r.msg, "scripts/test-services.sh") {
					t.Errorf("message %q does not say how to get the servers", r.msg)
				}
			})
		}
	}
}

// Without dockerd, StartDocker skips the test on a developer machine and
// fails it when CI is set (the image test must run in CI). Not parallel: it
// changes the environment.
func TestMissingDocker(t *testing.T) {
	for _, ci := range []string{"", "true"} {
		t.Run(fmt.Sprintf("CI=%q", ci), func(t *testing.T) {
			t.Setenv("PATH", t.TempDir()) // no dockerd, no docker
			t.Setenv(testenv.EnvCI, ci)
			r := &recordingTB{TB: t}
			r.run(func(tb testing.TB) { testenv.StartDocker(tb) })
			wantFatal := ci != ""
			if r.fataled != wantFatal || r.skipped == wantFatal {
				t.Errorf("fatal = %v, skip = %v (%q); want fatal = %v", r.fataled, r.skipped, r.msg, wantFatal)
			}
			if !strings.Contains(r.msg, "docker.io") {
				t.Errorf("message %q does not say what to install", r.msg)
			}
		})
	}
}
