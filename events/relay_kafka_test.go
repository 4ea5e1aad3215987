package events_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// These tests run against the real Apache Kafka broker of CHOM_TEST_KAFKA_BROKERS
// (scripts/test-services.sh starts one), each under a topic prefix of its own.

// Every outbox row reaches its topic as a valid CloudEvent, rows written while
// the relay runs too, each tenant's in order, on PostgreSQL and SQLite.
func TestRelayEveryRowReachesItsTopic(t *testing.T) {
	t.Parallel()
	k := testenv.Kafka(t)
	schemas := compileSchemas(t)
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		s := newStore(t, db)
		prefix := k.Prefix + ".sqlite"
		if models.IsPostgres(db) {
			prefix = k.Prefix + ".pg"
		}
		tens := tenants(5)
		rows := insertRows(t, db, append(usageRows(t, tens, 60, at.Truncate(time.Hour)), siteRows(t, tens)...))
		r, _ := runRelay(t, events.RelayConfig{Store: s, Brokers: k.Brokers, TopicPrefix: prefix,
			Topics: events.TopicSpec{Partitions: 3, ReplicationFactor: 1}, BatchSize: 100})
		// State changes keep coming while it runs.
		for i := range 10 {
			more := usageRows(t, tens, 3, at.Truncate(time.Hour).Add(time.Duration(1000+10*i)*time.Hour))
			rows = append(rows, insertRows(t, db, more)...)
			time.Sleep(20 * time.Millisecond)
		}
		waitDrained(t, s, 60*time.Second)

		for topic, want := range byTopic(prefix, rows) {
			msgs := testenv.WaitRecords(t, k.Brokers, topic, len(want), 30*time.Second)
			if dups := checkTopic(t, msgs, want); dups != 0 {
				t.Errorf("%s: %d duplicates in a run without a crash", topic, dups)
			}
			for _, m := range msgs {
				env, err := events.Parse(m)
				if err != nil {
					continue // reported by checkTopic
				}
				if err := validate(t, schemas[env.Type], string(m.Value)); err != nil {
					t.Errorf("%s record %s does not match its schema: %v", topic, env.ID, err)
				}
			}
		}
		// A topic the broker has just created may refuse the first writes until its
		// partitions have leaders: those calls fail whole and are retried, so
		// they cost time, never a duplicate.
		if st := r.Stats(); st.Published != uint64(len(rows)) {
			t.Errorf("Stats = %+v, want %d published", st, len(rows))
		}
	})
}

// Two relays on one database, the leader stopped and replaced again and again
// while state changes keep committing: every event arrives, and each tenant's
// events keep their order once duplicates are dropped.
func TestTwoRelaysKeepTenantOrder(t *testing.T) {
	t.Parallel()
	k := testenv.Kafka(t)
	dsn := testenv.PostgresDSN(t)
	open := func() *models.Store {
		db, err := models.Open(t.Context(), dsn, models.PoolConfig{MaxOpenConns: 4})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return newStore(t, db)
	}
	writerStore := open()
	tens := tenants(8)
	cfg := func(s *models.Store) events.RelayConfig {
		return events.RelayConfig{Store: s, Brokers: k.Brokers, TopicPrefix: k.Prefix,
			Topics: events.TopicSpec{Partitions: 4, ReplicationFactor: 1}, BatchSize: 50}
	}

	// The writer: small transactions of 1–4 events for random tenants.
	var mu sync.Mutex
	var rows []models.OutboxEvent
	ctx, stopWriting := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			ten := tens[rand.N(len(tens))]
			batch := usageRows(t, []string{ten}, 1+rand.N(4), at.Truncate(time.Hour).Add(time.Duration(i*10)*time.Hour))
			inserted := insertRows(t, writerStore.DB(), batch)
			mu.Lock()
			rows = append(rows, inserted...)
			mu.Unlock()
			time.Sleep(3 * time.Millisecond)
		}
	})

	relays := []func(){}
	a, stopA := runRelay(t, cfg(open()))
	b, stopB := runRelay(t, cfg(open()))
	leaders := []*events.Relay{a, b}
	relays = append(relays, stopA, stopB)
	handovers := 0
	for range 6 {
		time.Sleep(400 * time.Millisecond)
		for i, r := range leaders {
			if r != nil && r.Stats().Leader {
				relays[i]() // stop the leader; the standby takes over
				nr, stop := runRelay(t, cfg(open()))
				leaders[i], relays[i] = nr, stop
				handovers++
				break
			}
		}
	}
	stopWriting()
	wg.Wait()
	waitDrained(t, writerStore, 60*time.Second)
	if handovers < 4 {
		t.Errorf("only %d handovers", handovers)
	}
	topic := events.FullTopic(k.Prefix, events.TopicUsage)
	msgs := testenv.WaitRecords(t, k.Brokers, topic, len(rows), 30*time.Second)
	dups := checkTopic(t, msgs, rows)
	t.Logf("%d events, %d records, %d duplicates, %d handovers", len(rows), len(msgs), dups, handovers)
}

// A client that is not Go (kcat, on librdkafka) reads our events: the CloudEvents
// headers and the JSON data it prints are what the contract says.
func TestKcatReadsOurEvents(t *testing.T) {
	t.Parallel()
	kcat := testenv.Kcat(t)
	k := testenv.Kafka(t)
	db := testenv.SQLite(t)
	s := newStore(t, db)
	schemas := compileSchemas(t)
	tens := tenants(2)
	rows := insertRows(t, db, append(usageRows(t, tens, 3, at.Truncate(time.Hour)), siteRows(t, tens)...))
	runRelay(t, events.RelayConfig{Store: s, Brokers: k.Brokers, TopicPrefix: k.Prefix,
		Topics: events.TopicSpec{Partitions: 2, ReplicationFactor: 1}})
	waitDrained(t, s, 30*time.Second)

	for topic, want := range byTopic(k.Prefix, rows) {
		testenv.WaitRecords(t, k.Brokers, topic, len(want), 30*time.Second)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		out, err := exec.CommandContext(ctx, kcat, "-b", k.Brokers[0], "-C", "-t", topic,
			"-o", "beginning", "-e", "-q", "-J").Output()
		cancel()
		if err != nil {
			t.Fatalf("kcat: %v", err)
		}
		byID := map[string]models.OutboxEvent{}
		for _, r := range want {
			byID[r.EventID] = r
		}
		n := 0
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			var rec struct {
				Topic   string   `json:"topic"`
				Key     string   `json:"key"`
				Payload string   `json:"payload"`
				Headers []string `json:"headers"`
			}
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				t.Fatalf("kcat printed %q: %v", sc.Text(), err)
			}
			h := map[string]string{}
			for i := 0; i+1 < len(rec.Headers); i += 2 {
				h[rec.Headers[i]] = rec.Headers[i+1]
			}
			row, ok := byID[h["ce_id"]]
			if !ok {
				t.Errorf("kcat read an unknown event: %s", sc.Text())
				continue
			}
			n++
			want := map[string]string{
				"ce_id": row.EventID, "ce_source": row.Source, "ce_type": row.Type, "ce_specversion": "1.0",
				"ce_time": row.OccurredAt.UTC().Format(time.RFC3339Nano), "ce_subject": row.Subject,
				"ce_partitionkey": row.TenantID, "content-type": "application/json",
			}
			for name, v := range want {
				if h[name] != v {
					t.Errorf("event %s: header %s = %q, want %q", row.EventID, name, h[name], v)
				}
			}
			if rec.Key != row.TenantID || rec.Topic != topic {
				t.Errorf("event %s: key %q topic %q", row.EventID, rec.Key, rec.Topic)
			}
			if _, err := time.Parse(time.RFC3339, h["ce_time"]); err != nil {
				t.Errorf("ce_time %q is not RFC 3339", h["ce_time"])
			}
			if err := validate(t, schemas[row.Type], rec.Payload); err != nil {
				t.Errorf("payload printed by kcat fails its schema: %v\n%s", err, rec.Payload)
			}
		}
		if n != len(want) {
			t.Errorf("kcat read %d events of %s, want %d:\n%s", n, topic, len(want), out)
		}
	}
}
