package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ReplicaName is the application_name a replica started by
// StartPostgresReplica connects to its primary with: the name
// synchronous_standby_names lists when the replica is synchronous.
const ReplicaName = "chom_replica"

// PostgresReplicaConfig configures a streaming replica.
type PostgresReplicaConfig struct {
	// Synchronous makes the primary wait, before a commit returns, until
	// this standby has flushed the commit's WAL (synchronous_standby_names
	// = ReplicaName, synchronous_commit = on): every commit a client saw
	// survives the primary's loss.
	Synchronous bool
	// LogStatements logs every statement the replica runs (log_statement =
	// 'all') to its server.log, so a test can count the reads it served.
	LogStatements bool
}

// StartPostgresReplica makes a hot standby of primary the way an operator
// would: pg_basebackup of the running primary (WAL streamed during the copy),
// standby.signal, primary_conninfo with application_name ReplicaName; then
// starts it on a free loopback port of its own. It returns once the replica
// answers queries and the primary reports it streaming (and, with
// Synchronous, as its sync standby). The replica is stopped and its
// directory removed when the test ends. Its Stop, Kill and Start work as the
// primary's; Promote turns it into a primary.
func StartPostgresReplica(tb testing.TB, primary *PostgresServer, cfg PostgresReplicaConfig) *PostgresServer {
	tb.Helper()
	dir, err := os.MkdirTemp("", "chom-pgr-")
	if err != nil {
		tb.Fatalf("testenv: replica dir: %v", err)
	}
	r := &PostgresServer{Dir: dir, bin: primary.bin, cred: primary.cred}
	tb.Cleanup(func() {
		r.mu.Lock()
		p := r.proc
		r.mu.Unlock()
		if p != nil && !p.signal(syscall.SIGINT, false, serverStopTimeout) {
			p.signal(syscall.SIGKILL, true, serverStopTimeout)
		}
		if tb.Failed() {
			tb.Logf("testenv: replica log (last lines):\n%s", Tail(filepath.Join(dir, "server.log"), 30))
		}
		_ = os.RemoveAll(dir)
	})
	if err := os.Mkdir(filepath.Join(dir, "sock"), 0o700); err != nil {
		tb.Fatalf("testenv: replica dir: %v", err)
	}
	if r.cred != nil {
		if err := chownTree(dir, int(r.cred.Uid), int(r.cred.Gid)); err != nil {
			tb.Fatalf("testenv: replica dir: %v", err)
		}
	}
	host, port, _ := net.SplitHostPort(primary.Addr)
	data := filepath.Join(dir, "data")
	backup := r.command(filepath.Join(r.bin, "pg_basebackup"), "--host", host, "--port", port, "--username", "chom",
		"--pgdata", data, "--wal-method", "stream", "--checkpoint", "fast", "--no-sync")
	if out, err := backup.CombinedOutput(); err != nil {
		tb.Fatalf("testenv: pg_basebackup from %s: %v\n%s", primary.Addr, err, out)
	}
	if err := os.WriteFile(filepath.Join(data, "standby.signal"), nil, 0o600); err != nil {
		tb.Fatalf("testenv: standby.signal: %v", err)
	}
	if r.cred != nil {
		if err := os.Chown(filepath.Join(data, "standby.signal"), int(r.cred.Uid), int(r.cred.Gid)); err != nil {
			tb.Fatalf("testenv: standby.signal: %v", err)
		}
	}
	logStatements := "none"
	if cfg.LogStatements {
		logStatements = "all"
	}
	for attempt := 1; ; attempt++ {
		p := freePort(tb)
		r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		r.URL = "postgres://chom@" + r.Addr + "/postgres?sslmode=disable"
		// Appended after the primary's own lines (copied with the data), so
		// these win.
		conf := fmt.Sprintf(`
# chom testenv: the streaming replica of %s
port = %d
unix_socket_directories = '%s'
primary_conninfo = 'host=%s port=%s user=chom application_name=%s'
hot_standby = on
hot_standby_feedback = on
log_statement = '%s'
`, primary.Addr, p, filepath.Join(dir, "sock"), host, port, ReplicaName, logStatements)
		if err := appendFile(filepath.Join(data, "postgresql.conf"), conf); err != nil {
			tb.Fatalf("testenv: replica postgresql.conf: %v", err)
		}
		err := r.start()
		if err == nil {
			break
		}
		if attempt == 5 {
			tb.Fatalf("testenv: replica did not start: %v\n%s", err, Tail(filepath.Join(dir, "server.log"), 30))
		}
	}
	if cfg.Synchronous {
		primary.Exec(tb, fmt.Sprintf("ALTER SYSTEM SET synchronous_standby_names = '%q'", ReplicaName))
		primary.Exec(tb, "ALTER SYSTEM SET synchronous_commit = 'on'")
		primary.Exec(tb, "SELECT pg_reload_conf()")
	}
	want := "async"
	if cfg.Synchronous {
		want = "sync"
	}
	deadline := time.Now().Add(serverStartTimeout)
	for {
		var state string
		err := primary.Scan(tb, "SELECT coalesce(max(sync_state), '') FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'",
			[]any{ReplicaName}, &state)
		if err == nil && state == want {
			return r
		}
		if time.Now().After(deadline) {
			tb.Fatalf("testenv: replica %s not streaming as %s after %s (state %q, %v)\n%s", r.Addr, want, serverStartTimeout,
				state, err, Tail(filepath.Join(dir, "server.log"), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// MultiHostURL is the URL an operator gives every process for a primary
// with standbys: every server's host:port, and target_session_attrs=read-write
// so that a connection goes to whichever of them accepts writes (the primary,
// or the standby promoted after it was lost). connect_timeout=2 bounds the
// wait on a host that does not answer.
func MultiHostURL(servers ...*PostgresServer) string {
	hosts := make([]string, len(servers))
	for i, s := range servers {
		hosts[i] = s.Addr
	}
	return "postgres://chom@" + strings.Join(hosts, ",") + "/postgres?sslmode=disable&target_session_attrs=read-write&connect_timeout=2"
}

// Promote ends the standby's recovery with `pg_ctl promote --wait`: it then
// accepts writes, on the timeline after the one it replayed. It fails the
// test when the promotion does not finish.
func (s *PostgresServer) Promote(tb testing.TB) {
	tb.Helper()
	cmd := s.command(filepath.Join(s.bin, "pg_ctl"), "promote", "--wait", "--timeout", "60", "--pgdata", filepath.Join(s.Dir, "data"))
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("testenv: pg_ctl promote %s: %v\n%s", s.Addr, err, out)
	}
}

// PauseReplay stops the standby applying the WAL it receives
// (pg_wal_replay_pause): it still answers queries, with the data as of the
// pause, and falls further behind its primary until ResumeReplay.
func (s *PostgresServer) PauseReplay(tb testing.TB) {
	tb.Helper()
	s.Exec(tb, "SELECT pg_wal_replay_pause()")
	deadline := time.Now().Add(serverStartTimeout)
	for {
		var state string
		if err := s.Scan(tb, "SELECT pg_get_wal_replay_pause_state()", nil, &state); err != nil {
			tb.Fatalf("testenv: %v", err)
		}
		if state == "paused" {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("testenv: replay of %s not paused after %s (%s)", s.Addr, serverStartTimeout, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ResumeReplay lets the standby apply WAL again (pg_wal_replay_resume).
func (s *PostgresServer) ResumeReplay(tb testing.TB) {
	tb.Helper()
	s.Exec(tb, "SELECT pg_wal_replay_resume()")
}

// Exec runs one statement on the server (a fresh connection each time, so it
// works across restarts) and fails the test on an error.
func (s *PostgresServer) Exec(tb testing.TB, query string, args ...any) {
	tb.Helper()
	db := s.open(tb)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, query, args...); err != nil {
		tb.Fatalf("testenv: %s on %s: %v", query, s.Addr, err)
	}
}

// Scan runs one query on the server on a fresh connection and scans its
// first row into dest; it returns the query's or the scan's error.
func (s *PostgresServer) Scan(tb testing.TB, query string, args []any, dest ...any) error {
	tb.Helper()
	db := s.open(tb)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := db.QueryRowContext(ctx, query, args...).Scan(dest...); err != nil {
		return fmt.Errorf("%s on %s: %w", query, s.Addr, err)
	}
	return nil
}

func (s *PostgresServer) open(tb testing.TB) *sql.DB {
	tb.Helper()
	db, err := sql.Open("pgx", s.URL+"&connect_timeout=5")
	if err != nil {
		tb.Fatalf("testenv: open %s: %v", s.Addr, err)
	}
	return db
}
