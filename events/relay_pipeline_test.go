package events_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// These tests hold the pipelined relay (read ahead, mark behind) to its
// ledger on real PostgreSQL and the real broker: every committed row on its
// topic, each tenant's in order once duplicates are dropped.

// Writers commit out of ID order (each holds its transaction open a random
// while after its insert, so rows with lower IDs commit after rows with higher
// ones were read) while the relay works through a backlog by its cursor: it
// still publishes every row, once, and each tenant's in the order its
// transactions committed. Each tenant has one writer, so its transactions are
// ordered; different tenants' are concurrent.
func TestRelayPipelineLateCommits(t *testing.T) {
	t.Parallel()
	k := testenv.Kafka(t)
	db := testenv.Postgres(t)
	s := newStore(t, db)
	const writers = 6
	tens := tenants(writers * 2)
	// A backlog of other tenants' rows, so the relay reads full batches (by
	// its cursor) while the writers commit late.
	rows := insertRows(t, db, usageRows(t, tenants(20), 10, at.Truncate(time.Hour)))
	// Small batches, so many of them are full (read by the cursor), read
	// ahead and marked behind.
	runRelay(t, events.RelayConfig{Store: s, Brokers: k.Brokers, TopicPrefix: k.Prefix, BatchSize: 5})
	var mu sync.Mutex
	start := time.Now()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			mine := tens[2*w : 2*w+2]
			for i := 0; time.Since(start) < 2*time.Second; i++ {
				ten := mine[rand.N(len(mine))]
				batch := usageRows(t, []string{ten}, 1+rand.N(3), at.Truncate(time.Hour).Add(time.Duration(10*i)*time.Hour))
				var inserted []models.OutboxEvent
				err := db.RunInTx(context.WithoutCancel(t.Context()), nil, func(ctx context.Context, tx bun.Tx) error {
					inserted = insertRows(t, tx, batch)
					if err := models.NotifyOutbox(ctx, tx); err != nil {
						return err
					}
					time.Sleep(time.Duration(rand.N(15)) * time.Millisecond) // commit late
					return nil
				})
				if err != nil {
					t.Errorf("commit: %v", err)
					return
				}
				mu.Lock()
				rows = append(rows, inserted...)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	waitDrained(t, s, 60*time.Second)
	slices.SortFunc(rows, func(a, b models.OutboxEvent) int { return int(a.ID - b.ID) })

	msgs := testenv.WaitRecords(t, k.Brokers, events.FullTopic(k.Prefix, events.TopicUsage), len(rows), 30*time.Second)
	if dups := checkTopic(t, msgs, rows); dups != 0 {
		t.Errorf("%d duplicates in a run without a fault: a row read ahead or being marked was read again", dups)
	}
	t.Logf("%d rows from %d writers; %d records published after a record with a higher outbox ID (late commits)",
		len(rows), writers, lateRecords(t, msgs, rows))
}

// lateRecords counts the records of msgs whose outbox row has a lower ID than
// a row of a record the relay wrote before it (its timestamp is earlier, on
// any partition): rows that committed late.
func lateRecords(t *testing.T, msgs []kafka.Message, rows []models.OutboxEvent) int {
	t.Helper()
	id := map[string]int64{}
	for _, r := range rows {
		id[r.EventID] = r.ID
	}
	type rec struct {
		id int64
		at time.Time
	}
	var recs []rec
	for _, m := range msgs {
		if env, err := events.Parse(m); err == nil {
			recs = append(recs, rec{id[env.ID], m.Time})
		}
	}
	slices.SortStableFunc(recs, func(a, b rec) int { return a.at.Compare(b.at) })
	late := 0
	var highest int64
	var before time.Time // the time of the records that set highest
	for _, r := range recs {
		if r.id < highest && r.at.After(before) {
			late++
		}
		if r.id > highest {
			highest, before = r.id, r.at
		}
	}
	return late
}

// The relay crashes between the Kafka write and the mark, as far as the
// database can tell: the mark's session is terminated while the mark waits
// for a row lock, after Kafka acknowledged the rows. The leader gives up its
// lease and takes it again, and publishes those rows again; consumers, which
// drop duplicates by event ID, see every event once, each tenant's in order.
func TestRelayRepublishesWhenTheMarkIsLost(t *testing.T) {
	t.Parallel()
	k := testenv.Kafka(t)
	db := testenv.Postgres(t)
	s := newStore(t, db)
	ctx := t.Context()
	tens := tenants(3)
	rows := insertRows(t, db, usageRows(t, tens, 10, at.Truncate(time.Hour)))
	first := len(rows)

	// Lock one row of the first batch: its mark waits for the lock.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	var holder int
	if err := tx.QueryRowContext(ctx, "SELECT pg_backend_pid() FROM outbox_events WHERE id = ? FOR UPDATE", rows[5].ID).Scan(&holder); err != nil {
		t.Fatal(err)
	}
	r, _ := runRelay(t, events.RelayConfig{Store: s, Brokers: k.Brokers, TopicPrefix: k.Prefix})
	var marking int
	waitFor(t, 30*time.Second, "the mark waiting for the locked row", func() bool {
		err := db.QueryRowContext(ctx, "SELECT pid FROM pg_stat_activity WHERE ? = ANY(pg_blocking_pids(pid)) LIMIT 1", holder).Scan(&marking)
		return err == nil && marking != 0
	})
	if st := r.Stats(); st.Published != uint64(len(rows)) {
		t.Fatalf("published %d before the mark, want %d (Kafka acknowledges before the mark)", st.Published, len(rows))
	}
	// State changes go on meanwhile.
	rows = append(rows, commitRows(t, db, usageRows(t, tens, 5, at.Truncate(time.Hour).Add(100*time.Hour)))...)

	t.Logf("injecting pg_terminate_backend(%d): the session marking the first %d rows, which Kafka acknowledged", marking, first)
	var ok bool
	if err := db.QueryRowContext(ctx, "SELECT pg_terminate_backend(?)", marking).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", marking, ok, err)
	}
	killed := time.Now()
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, s, 60*time.Second)
	t.Logf("outbox drained %v after the mark was lost", time.Since(killed).Round(time.Millisecond))
	rows = append(rows, commitRows(t, db, usageRows(t, tens, 5, at.Truncate(time.Hour).Add(200*time.Hour)))...)
	waitDrained(t, s, 60*time.Second)

	// Ledger: every row on the topic, each tenant's in order once duplicates
	// are dropped; the first rows, acknowledged and never marked, twice.
	topic := events.FullTopic(k.Prefix, events.TopicUsage)
	st := r.Stats()
	msgs := testenv.WaitRecords(t, k.Brokers, topic, int(st.Published), 30*time.Second)
	dups := checkTopic(t, msgs, rows)
	t.Logf("%d rows, %d records, %d duplicates; stats %+v", len(rows), len(msgs), dups, st)
	if dups < first {
		t.Errorf("%d duplicates: the rows whose mark was lost were not published again", dups)
	}
	if st.Published != uint64(len(msgs)) {
		t.Errorf("relay counted %d records published, the topic holds %d", st.Published, len(msgs))
	}
}

// A transaction holds its outbox row uncommitted while others commit rows
// with higher IDs and the relay publishes them: the relay reads past the
// row's ID (a gap), waits for it half a second, then reads from its cursor.
// When the row commits, well after that, a sweep still finds it: a late
// commit is published late, never skipped.
func TestRelayPublishesARowCommittedAfterItsGapExpired(t *testing.T) {
	t.Parallel()
	k := testenv.Kafka(t)
	db := testenv.Postgres(t)
	s := newStore(t, db)
	ctx := t.Context()
	runRelay(t, events.RelayConfig{Store: s, Brokers: k.Brokers, TopicPrefix: k.Prefix})
	// Rows before it, published: the relay reads from its cursor.
	rows := commitRows(t, db, usageRows(t, tenants(3), 1, at.Truncate(time.Hour).Add(-time.Hour)))
	waitDrained(t, s, 30*time.Second)

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	late := insertRows(t, tx, usageRows(t, []string{"tenant-late"}, 1, at.Truncate(time.Hour)))
	if err := models.NotifyOutbox(ctx, tx); err != nil {
		t.Fatal(err)
	}
	opened := time.Now()
	for i := 0; time.Since(opened) < 1500*time.Millisecond; i++ {
		rows = append(rows, commitRows(t, db, usageRows(t, tenants(3), 1, at.Truncate(time.Hour).Add(time.Duration(i)*time.Hour)))...)
		time.Sleep(50 * time.Millisecond)
	}
	waitDrained(t, s, 30*time.Second) // every committed row published: the relay read past late's ID
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	committed := time.Now()
	t.Logf("row %d committed %v after it was inserted, after %d rows with higher IDs were published",
		late[0].ID, committed.Sub(opened).Round(time.Millisecond), len(rows)-3)
	waitDrained(t, s, 20*time.Second)
	t.Logf("row %d published within %v of its commit", late[0].ID, time.Since(committed).Round(time.Millisecond))
	rows = append(rows, late...)
	slices.SortFunc(rows, func(a, b models.OutboxEvent) int { return int(a.ID - b.ID) })
	msgs := testenv.WaitRecords(t, k.Brokers, events.FullTopic(k.Prefix, events.TopicUsage), len(rows), 30*time.Second)
	if dups := checkTopic(t, msgs, rows); dups != 0 {
		t.Errorf("%d duplicates in a run without a fault", dups)
	}
}
