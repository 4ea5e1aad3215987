package main

import (
	"bytes"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// chomBinary builds the chom binary once per test run.
func chomBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "chom-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin, buildErr = testenv.BuildChom(dir, false)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// startRelayProcess runs `chom relay` with env and returns its command and a
// buffer of its stderr.
func startRelayProcess(t *testing.T, bin string, env []string) (*exec.Cmd, *testenv.SyncBuffer) {
	t.Helper()
	cmd := exec.Command(bin, "relay")
	cmd.Env = append(os.Environ(), env...)
	stderr := &testenv.SyncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, stderr
}

// A `chom relay` killed with SIGKILL after Kafka acknowledged its records and
// before it marked them loses nothing: the next relay publishes them again
// (duplicates, same event IDs) and marks them.
//
// The test holds an EXCLUSIVE lock on outbox_events, which lets the relay read
// and publish but blocks its mark; once the records are on the topic, the relay
// is killed inside that window for sure (and its blocked database session ended).
// Kafka may refuse one partition of the first write (a busy broker that has not
// loaded a new partition yet): the relay then logs it and marks what was
// acknowledged, so the test kills it there, with fewer records published.
// Either way each record published before the kill must be published exactly
// once more, and every other exactly once.
func TestRelayKilledBetweenPublishAndMark(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	t.Parallel()
	k := testenv.Kafka(t)
	dsn := testenv.PostgresDSN(t)
	bin := chomBinary(t)
	ctx := t.Context()
	db, err := models.Open(ctx, dsn, models.PoolConfig{MaxOpenConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := models.MigrateUp(ctx, db); err != nil {
		t.Fatal(err)
	}
	store, err := models.New(models.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	var rows []models.OutboxEvent
	start := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	for h := range 50 {
		for _, ten := range []string{"ten_a", "ten_b", "ten_c"} {
			row, err := events.UsageOutbox(events.UsageEvent{TenantID: ten, Metric: "bandwidth_bytes", Quantity: int64(h),
				Unit: "byte", PeriodStart: start.Add(time.Duration(h) * time.Hour),
				PeriodEnd: start.Add(time.Duration(h+1) * time.Hour), OccurredAt: start.Add(time.Duration(h+1) * time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			row.CreatedAt = time.Now().UTC()
			rows = append(rows, row)
		}
	}
	if _, err := db.NewInsert().Model(&rows).Exec(ctx); err != nil {
		t.Fatal(err)
	}

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "LOCK TABLE outbox_events IN EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"CHOM_DATABASE_URL=" + dsn, "CHOM_KAFKA_BROKERS=" + k.Brokers[0], "CHOM_KAFKA_TOPIC_PREFIX=" + k.Prefix,
		"CHOM_KAFKA_PARTITIONS=3", "CHOM_KAFKA_REPLICATION=1", "CHOM_LOG_FORMAT=text", "CHOM_RELAY_POLL_INTERVAL=20ms",
	}
	first, firstLog := startRelayProcess(t, bin, env)
	topic := events.FullTopic(k.Prefix, events.TopicUsage)
	before := waitPublished(t, k.Brokers, topic, len(rows), firstLog)
	if n, err := store.CountUnpublished(ctx); err != nil || n != len(rows) {
		t.Fatalf("%d rows unpublished (%v) while the mark is blocked, want %d", n, err, len(rows))
	}
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	// The relay's mark was already sent and waits for the lock in a server
	// session of the relay's pool (the relay marks beside its lease's
	// session), which PostgreSQL ends only when it next reads the dead
	// socket: after the lock is gone, too late. End that session first, so
	// the mark really never happens, as if the process had died before
	// sending it; and the session holding the relay's advisory lock, if the
	// server has not noticed its death yet.
	var locker int
	if err := tx.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&locker); err != nil {
		t.Fatal(err)
	}
	const marking = `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE ? = ANY(pg_blocking_pids(pid))`
	var terminated int
	if err := db.QueryRowContext(ctx, marking, locker).Scan(&terminated); err != nil || terminated == 0 {
		t.Fatalf("terminate the killed relay's marking session: %d terminated, %v", terminated, err)
	}
	const holder = `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = hashtext(current_schema() || '.chom_outbox_relay')::bigint`
	if err := db.QueryRowContext(ctx, holder).Scan(&terminated); err != nil {
		t.Fatalf("terminate the killed relay's lease session: %v", err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if n, err := store.CountUnpublished(ctx); err != nil || n != len(rows) {
		t.Fatalf("%d rows unpublished (%v) after the kill, want %d", n, err, len(rows))
	}

	second, secondLog := startRelayProcess(t, bin, env)
	deadline := time.Now().Add(60 * time.Second)
	for {
		n, err := store.CountUnpublished(ctx)
		if err == nil && n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d rows still unpublished after the restart (%v)\nrelay log:\n%s", n, err, secondLog)
		}
		time.Sleep(50 * time.Millisecond)
	}
	published := 0
	for _, n := range before {
		published += n
	}
	msgs := testenv.WaitRecords(t, k.Brokers, topic, published+len(rows), 30*time.Second)
	if len(msgs) != published+len(rows) {
		out, _ := exec.Command("kcat", "-b", k.Brokers[0], "-C", "-t", topic, "-e", "-q", "-o", "beginning", "-f", "%p %o\n").Output()
		t.Logf("kcat sees %d records; second relay log:\n%s", bytes.Count(out, []byte("\n")), secondLog)
	}
	count := map[string]int{}
	order := map[string][]string{}
	for _, m := range msgs {
		env, err := events.Parse(m)
		if err != nil {
			t.Fatalf("record %d: %v", m.Offset, err)
		}
		if count[env.ID] == 0 {
			order[env.TenantID] = append(order[env.TenantID], env.ID)
		}
		count[env.ID]++
	}
	want := map[string][]string{}
	for _, r := range rows {
		want[r.TenantID] = append(want[r.TenantID], r.EventID)
		if want := before[r.EventID] + 1; count[r.EventID] != want {
			t.Errorf("event %s on the topic %d times, want %d (%d before the kill, then once more)",
				r.EventID, count[r.EventID], want, before[r.EventID])
		}
	}
	for ten, ids := range want {
		if !slices.Equal(order[ten], ids) {
			t.Errorf("tenant %s: events out of order after dropping duplicates", ten)
		}
	}
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- second.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("relay exited with %v on SIGTERM\n%s", err, secondLog)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("relay did not stop within 30s of SIGTERM")
	}
}

// partlyFailed is what the relay logs when Kafka acknowledged only part of a
// write.
const partlyFailed = "publish partly failed"

// waitPublished waits until the relay whose log is relayLog has published all
// want records to topic, or has logged a partly failed write (and published
// some), and returns how many times each event ID is on the topic then. Fewer
// records with no such line fail the test.
func waitPublished(t *testing.T, brokers []string, topic string, want int, relayLog *testenv.SyncBuffer) map[string]int {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		msgs, err := testenv.Records(t.Context(), brokers, topic)
		partial := strings.Contains(relayLog.String(), partlyFailed)
		if err == nil && (len(msgs) >= want || partial && len(msgs) > 0) {
			if len(msgs) < want {
				t.Logf("the relay's first write partly failed: %d of %d records published before the kill", len(msgs), want)
			}
			seen := map[string]int{}
			for _, m := range msgs {
				env, err := events.Parse(m)
				if err != nil {
					t.Fatalf("record %d: %v", m.Offset, err)
				}
				seen[env.ID]++
			}
			return seen
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d records on the topic before the kill (%v), want %d\nrelay log:\n%s", len(msgs), err, want, relayLog)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
