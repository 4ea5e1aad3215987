package events_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// testLogger discards logs unless CHOM_TEST_VERBOSE is set.
func testLogger() *slog.Logger {
	if os.Getenv("CHOM_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newStore migrates db and returns a store over it.
func newStore(t testing.TB, db *bun.DB) *models.Store {
	t.Helper()
	if _, err := models.MigrateUp(t.Context(), db); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	s, err := models.New(models.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// usageRows builds n usage rows per tenant (hourly periods from base), tenant by
// tenant interleaved, as a metering run would write them.
func usageRows(t testing.TB, tenants []string, n int, base time.Time) []models.OutboxEvent {
	t.Helper()
	var out []models.OutboxEvent
	for i := range n {
		for j, ten := range tenants {
			start := base.Add(time.Duration(i) * time.Hour)
			row, err := events.UsageOutbox(events.UsageEvent{
				TenantID: ten, Metric: "bandwidth_bytes", Quantity: int64(1000*j + i), Unit: "byte",
				PeriodStart: start, PeriodEnd: start.Add(time.Hour), OccurredAt: start.Add(time.Hour),
			})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, row)
		}
	}
	return out
}

// siteRows builds one provisioned and one deleted event per tenant.
func siteRows(t testing.TB, tenants []string) []models.OutboxEvent {
	t.Helper()
	var out []models.OutboxEvent
	for _, ten := range tenants {
		for _, typ := range []string{events.TypeSiteProvisioned, events.TypeSiteDeleted} {
			e := siteEvent(func(e *events.SiteEvent) {
				e.TenantID, e.OperationID = ten, models.NewID(models.PrefixOperation)
				if typ == events.TypeSiteDeleted {
					e.Status = models.SiteStatusDeleted
				}
			})
			row, err := events.SiteOutbox(typ, e)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, row)
		}
	}
	return out
}

// insertRows writes rows to the outbox in one transaction, as a state change
// would, and returns them with their IDs.
func insertRows(t testing.TB, db bun.IDB, rows []models.OutboxEvent) []models.OutboxEvent {
	t.Helper()
	if len(rows) == 0 {
		return nil
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	rows = slices.Clone(rows)
	for i := range rows {
		rows[i].CreatedAt = now
	}
	if _, err := db.NewInsert().Model(&rows).Exec(context.WithoutCancel(t.Context())); err != nil {
		t.Fatalf("insert %d outbox rows: %v", len(rows), err)
	}
	return rows
}

func tenants(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = models.NewID(models.PrefixTenant)
	}
	return out
}

// runRelay starts a relay over cfg (Store, Brokers and Logger may be left to the
// caller) and returns it with a function that stops it and waits.
func runRelay(t testing.TB, cfg events.RelayConfig) (*events.Relay, func()) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	if cfg.Topics.Partitions == 0 {
		cfg.Topics = events.TopicSpec{Partitions: 6, ReplicationFactor: 1}
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 20 * time.Millisecond
	}
	if cfg.LeaderPoll == 0 {
		cfg.LeaderPoll = 100 * time.Millisecond
	}
	r, err := events.NewRelay(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, testenv.RunInBackground(t, "relay", r.Run)
}

// waitDrained waits until no outbox row is unpublished.
func waitDrained(t testing.TB, s *models.Store, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n, err := s.CountUnpublished(t.Context())
		if err == nil && n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d outbox rows still unpublished after %v (last error %v)", n, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkTopic reads what the records of topic say about rows (the outbox rows
// published there, in ID order): every row is there, as a valid CloudEvent, each
// tenant's records sit on one partition, and after dropping duplicates each
// tenant's events come in ID order. It returns how many duplicates it saw.
func checkTopic(t testing.TB, msgs []kafka.Message, rows []models.OutboxEvent) int {
	t.Helper()
	want := map[string][]string{} // tenant → event IDs in outbox order
	for _, r := range rows {
		want[r.TenantID] = append(want[r.TenantID], r.EventID)
	}
	got := map[string][]string{}
	seen := map[string]bool{}
	partition := map[string]int{}
	dups := 0
	for _, m := range msgs {
		env, err := events.Parse(m)
		if err != nil {
			t.Errorf("record %s/%d@%d: %v", m.Topic, m.Partition, m.Offset, err)
			continue
		}
		if p, ok := partition[env.TenantID]; ok && p != m.Partition {
			t.Errorf("tenant %s on partitions %d and %d", env.TenantID, p, m.Partition)
		}
		partition[env.TenantID] = m.Partition
		if seen[env.ID] {
			dups++
			continue
		}
		seen[env.ID] = true
		got[env.TenantID] = append(got[env.TenantID], env.ID)
	}
	for ten, ids := range want {
		if !slices.Equal(got[ten], ids) {
			missing := 0
			for _, id := range ids {
				if !seen[id] {
					missing++
				}
			}
			t.Errorf("tenant %s: %d events on the topic (%d missing), want %d in outbox order; order kept: %v",
				ten, len(got[ten]), missing, len(ids), isSubsequence(got[ten], ids))
		}
	}
	if len(got) != len(want) {
		t.Errorf("events of %d tenants on the topic, want %d", len(got), len(want))
	}
	return dups
}

func isSubsequence(sub, seq []string) bool {
	i := 0
	for _, s := range seq {
		if i < len(sub) && sub[i] == s {
			i++
		}
	}
	return i == len(sub)
}

// byTopic splits rows by their full topic name under prefix.
func byTopic(prefix string, rows []models.OutboxEvent) map[string][]models.OutboxEvent {
	out := map[string][]models.OutboxEvent{}
	for _, r := range rows {
		name := events.FullTopic(prefix, r.Topic)
		out[name] = append(out[name], r)
	}
	return out
}

func TestRelayConfigValidate(t *testing.T) {
	t.Parallel()
	_, err := events.NewRelay(events.RelayConfig{TopicPrefix: "bad/prefix", BatchSize: -1})
	if err == nil {
		t.Fatal("NewRelay accepted an empty config")
	}
	for _, want := range []string{"Store is required", "Brokers is required", "Logger is required", "topic prefix", "BatchSize"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// newKfake starts an in-process broker for fast relay tests.
func newKfake(t testing.TB) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// The relay publishes every row, in order per tenant, and marks them; on the
// in-process broker, on SQLite, in well under a second.
func TestRelayPublishesToKfake(t *testing.T) {
	t.Parallel()
	cluster := newKfake(t)
	db := testenv.SQLite(t)
	s := newStore(t, db)
	tens := tenants(4)
	rows := insertRows(t, db, append(usageRows(t, tens, 30, at.Truncate(time.Hour)), siteRows(t, tens)...))

	r, _ := runRelay(t, events.RelayConfig{Store: s, Brokers: cluster.ListenAddrs(), BatchSize: 25})
	waitDrained(t, s, 30*time.Second)
	for topic, want := range byTopic("chom", rows) {
		msgs := testenv.WaitRecords(t, cluster.ListenAddrs(), topic, len(want), 10*time.Second)
		if dups := checkTopic(t, msgs, want); dups != 0 {
			t.Errorf("%s: %d duplicates without any failure", topic, dups)
		}
	}
	if st := r.Stats(); st.Published != uint64(len(rows)) || st.Failed != 0 || !st.Leader || st.Breaker != "closed" {
		t.Errorf("Stats = %+v, want %d published", st, len(rows))
	}
	if lag, err := r.Lag(t.Context()); err != nil || lag != 0 {
		t.Errorf("Lag = %v, %v; want 0", lag, err)
	}
}

// Kafka refusing writes: the breaker opens, rows stay unpublished (nothing is
// marked that Kafka did not take), and everything drains once Kafka is back.
func TestRelayBacksOffAndDrains(t *testing.T) {
	t.Parallel()
	cluster := newKfake(t)
	var down atomic.Bool
	down.Store(true)
	var refused atomic.Int64
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		if down.Load() {
			refused.Add(1)
			return nil, errors.New("broker down"), true
		}
		return nil, nil, false
	})
	db := testenv.SQLite(t)
	s := newStore(t, db)
	tens := tenants(3)
	rows := insertRows(t, db, usageRows(t, tens, 20, at.Truncate(time.Hour)))

	r, _ := runRelay(t, events.RelayConfig{Store: s, Brokers: cluster.ListenAddrs(),
		BreakerFailures: 2, BreakerTimeout: 300 * time.Millisecond, WriteTimeout: 2 * time.Second})
	deadline := time.Now().Add(30 * time.Second)
	for r.Stats().Breaker != "open" || r.Stats().Failed == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("breaker never opened: %+v", r.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n, err := s.CountUnpublished(t.Context()); err != nil || n != len(rows) {
		t.Fatalf("%d rows unpublished while Kafka refuses (%v), want all %d", n, err, len(rows))
	}
	lag, err := r.Lag(t.Context())
	if err != nil || lag <= 0 {
		t.Errorf("Lag while Kafka refuses = %v, %v; want > 0", lag, err)
	}
	// More state changes meanwhile: the outbox grows.
	rows = append(rows, insertRows(t, db, usageRows(t, tens, 5, at.Truncate(time.Hour).Add(100*time.Hour)))...)

	down.Store(false)
	waitDrained(t, s, 30*time.Second)
	topic := events.FullTopic("chom", events.TopicUsage)
	checkTopic(t, testenv.WaitRecords(t, cluster.ListenAddrs(), topic, len(rows), 10*time.Second), rows)
	if refused.Load() == 0 {
		t.Error("no produce request was refused")
	}
	if st := r.Stats(); st.Breaker != "closed" {
		t.Errorf("breaker %s after recovery, want closed", st.Breaker)
	}
}

// Two relays on one SQLite file would both publish; on PostgreSQL only the
// lease holder does (see relay_kafka_test.go). Here: a relay with no lease
// publishes nothing.
func TestRelayStandbyPublishesNothing(t *testing.T) {
	t.Parallel()
	cluster := newKfake(t)
	db := testenv.Postgres(t)
	s := newStore(t, db)
	holder, err := s.TryOutboxLease(t.Context())
	if err != nil || holder == nil {
		t.Fatalf("take the lease: %v, %v", holder, err)
	}
	insertRows(t, db, usageRows(t, tenants(1), 3, at.Truncate(time.Hour)))
	r, _ := runRelay(t, events.RelayConfig{Store: s, Brokers: cluster.ListenAddrs()})
	time.Sleep(500 * time.Millisecond)
	if st := r.Stats(); st.Leader || st.Published != 0 {
		t.Fatalf("standby relay: %+v, want no lease and nothing published", st)
	}
	if err := holder.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, s, 10*time.Second)
	if !r.Stats().Leader {
		t.Error("relay did not take over the released lease")
	}
}
