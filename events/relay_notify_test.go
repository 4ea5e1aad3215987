package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// These tests run the relay with a poll interval of an hour: only the commit's
// notification (or the listener's wake-up when it connects) can make it read
// the outbox, so a row published proves the wake-up path.
const noPoll = time.Hour

// commitRows writes rows to the outbox in one transaction that notifies the
// relay, as the store's writes do, and returns them with their IDs.
func commitRows(t testing.TB, db *bun.DB, rows []models.OutboxEvent) []models.OutboxEvent {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	var out []models.OutboxEvent
	err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		out = insertRows(t, tx, rows)
		return models.NotifyOutbox(ctx, tx)
	})
	if err != nil {
		t.Fatalf("commit %d outbox rows: %v", len(rows), err)
	}
	return out
}

// waitFor polls cond every 10ms until it holds, failing after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not after %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// A commit wakes the leader: with no poll to speak of, each committed
// transaction is published at once, and every row reaches its topic in order.
func TestRelayWakesOnCommit(t *testing.T) {
	t.Parallel()
	k := testenv.Kafka(t)
	db := testenv.Postgres(t)
	s := newStore(t, db)
	r, _ := runRelay(t, events.RelayConfig{Store: s, Brokers: k.Brokers, TopicPrefix: k.Prefix, PollInterval: noPoll})
	waitFor(t, 30*time.Second, "listener up", func() bool { return r.Stats().ListenerPID != 0 })

	tens := tenants(3)
	var rows []models.OutboxEvent
	for i := range 5 {
		rows = append(rows, commitRows(t, db, usageRows(t, tens, 2, at.Truncate(time.Hour).Add(time.Duration(10*i)*time.Hour)))...)
		start := time.Now()
		waitDrained(t, s, 30*time.Second)
		t.Logf("commit %d: drained %v after its commit", i, time.Since(start).Round(time.Millisecond))
	}
	for topic, want := range byTopic(k.Prefix, rows) {
		msgs := testenv.WaitRecords(t, k.Brokers, topic, len(want), 30*time.Second)
		if dups := checkTopic(t, msgs, want); dups != 0 {
			t.Errorf("%s: %d duplicates in a run without a crash", topic, dups)
		}
	}
	st := r.Stats()
	t.Logf("stats: %+v", st)
	if st.Published != uint64(len(rows)) {
		t.Errorf("published %d, want %d", st.Published, len(rows))
	}
}

// Commits that notify while the leader is busy coalesce into one wake-up: the
// leader reads the outbox once more, not once per transaction.
func TestRelayCoalescesNotifications(t *testing.T) {
	t.Parallel()
	k := testenv.Kafka(t)
	db := testenv.Postgres(t)
	s := newStore(t, db)
	r, _ := runRelay(t, events.RelayConfig{Store: s, Brokers: k.Brokers, TopicPrefix: k.Prefix, PollInterval: noPoll})
	waitFor(t, 30*time.Second, "listener up", func() bool { return r.Stats().ListenerPID != 0 })
	ctx := t.Context()
	tens := tenants(1)

	// Hold the leader busy: lock a row it has not seen, then wake it; it
	// publishes the row and blocks marking it.
	first := insertRows(t, db, usageRows(t, tens, 1, at.Truncate(time.Hour)))
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	var holder int
	if err := tx.QueryRowContext(ctx, "SELECT pg_backend_pid() FROM outbox_events WHERE id = ? FOR UPDATE", first[0].ID).Scan(&holder); err != nil {
		t.Fatal(err)
	}
	if err := models.NotifyOutbox(ctx, db); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "leader blocked marking the locked row", func() bool {
		var n int
		err := db.QueryRowContext(ctx, "SELECT count(*) FROM pg_stat_activity WHERE ? = ANY(pg_blocking_pids(pid))", holder).Scan(&n)
		return err == nil && n > 0
	})

	// Fifty transactions commit meanwhile, each notifying.
	before := r.Stats()
	const commits = 50
	rows := first
	for i := range commits {
		rows = append(rows, commitRows(t, db, usageRows(t, tens, 1, at.Truncate(time.Hour).Add(time.Duration(i+1)*time.Hour)))...)
	}
	waitFor(t, 30*time.Second, "listener received the notifications", func() bool {
		return r.Stats().Notifications-before.Notifications >= commits
	})
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, s, 30*time.Second)
	after := r.Stats()
	t.Logf("%d notifications while the leader was busy, then %d wake-ups", after.Notifications-before.Notifications, after.Wakes-before.Wakes)
	// One wake-up reads the fifty rows; a second may come from a notification
	// the listener handed over after that read began. Never one per commit.
	if w := after.Wakes - before.Wakes; w > 2 {
		t.Errorf("%d wake-ups for %d notifications that came while the leader was busy, want at most 2", w, commits)
	}
	msgs := testenv.WaitRecords(t, k.Brokers, events.FullTopic(k.Prefix, events.TopicUsage), len(rows), 30*time.Second)
	if dups := checkTopic(t, msgs, rows); dups != 0 {
		t.Errorf("%d duplicates in a run without a crash", dups)
	}
}

// The listener's session is terminated by the server: the leader keeps its
// lease and polls, the listener reconnects with back-off, and the rows
// committed while nobody listened are published when it is back.
func TestRelayListenerReconnects(t *testing.T) {
	t.Parallel()
	k := testenv.Kafka(t)
	db := testenv.Postgres(t)
	s := newStore(t, db)
	r, _ := runRelay(t, events.RelayConfig{Store: s, Brokers: k.Brokers, TopicPrefix: k.Prefix, PollInterval: noPoll,
		BreakerTimeout: time.Second})
	waitFor(t, 30*time.Second, "listener up", func() bool { return r.Stats().ListenerPID != 0 })
	ctx := t.Context()
	tens := tenants(4)
	rows := commitRows(t, db, usageRows(t, tens, 2, at.Truncate(time.Hour)))
	waitDrained(t, s, 30*time.Second)

	for round := range 3 {
		pid := r.Stats().ListenerPID
		t.Logf("round %d: injecting pg_terminate_backend(%d), the listener's session", round, pid)
		var ok bool
		if err := db.QueryRowContext(ctx, "SELECT pg_terminate_backend(?)", pid).Scan(&ok); err != nil || !ok {
			t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, ok, err)
		}
		killed := time.Now()
		// Commits go on while the listener is away: their notifications reach
		// nobody.
		base := at.Truncate(time.Hour).Add(time.Duration(100*(round+1)) * time.Hour)
		rows = append(rows, commitRows(t, db, usageRows(t, tens, 2, base))...)
		waitFor(t, 30*time.Second, "listener back", func() bool {
			p := r.Stats().ListenerPID
			return p != 0 && p != pid
		})
		back := time.Since(killed)
		waitDrained(t, s, 30*time.Second)
		t.Logf("round %d: listener back after %v, outbox drained after %v", round, back.Round(time.Millisecond),
			time.Since(killed).Round(time.Millisecond))
		if !r.Stats().Leader {
			t.Errorf("round %d: the relay lost its lease with its listener", round)
		}
		// The new session hears commits again.
		rows = append(rows, commitRows(t, db, usageRows(t, tens, 2, base.Add(50*time.Hour)))...)
		waitDrained(t, s, 30*time.Second)
	}

	// Ledger: every committed row on its topic once, each tenant's in order.
	msgs := testenv.WaitRecords(t, k.Brokers, events.FullTopic(k.Prefix, events.TopicUsage), len(rows), 30*time.Second)
	if dups := checkTopic(t, msgs, rows); dups != 0 {
		t.Errorf("%d duplicates: a lost listener must not republish", dups)
	}
	if st := r.Stats(); st.Published != uint64(len(rows)) {
		t.Errorf("published %d, want %d (%+v)", st.Published, len(rows), st)
	}
}
