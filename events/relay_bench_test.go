package events_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// The benchmarks below run against the real broker and PostgreSQL of
// scripts/test-services.sh, and print each figure beside its ceiling measured
// in the same run: kafka-go's own Writer sending the same records to the same
// broker, with no database in the way. See docs/performance.md.

// benchPartitions is the partition count of the benchmarks' topics, the
// production default.
const benchPartitions = 6

// ceilingWriter is kafka-go's Writer as an application would use it to send
// records straight to the broker: the relay's acknowledgements (acks=all),
// partitioner, batch limits and linger.
func ceilingWriter(brokers []string) *kafka.Writer {
	return &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Balancer:     kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		BatchSize:    events.DefaultRelayBatchSize,
		BatchBytes:   1 << 20,
		BatchTimeout: events.DefaultRelayBatchTimeout,
	}
}

// createTopics creates the topics of the benchmarks under prefix.
func createTopics(b *testing.B, brokers []string, prefix string) {
	b.Helper()
	var names []string
	for _, t := range events.Topics() {
		names = append(names, events.FullTopic(prefix, t))
	}
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	if err := events.EnsureTopics(b.Context(), client, events.TopicSpec{Partitions: benchPartitions, ReplicationFactor: 1}, names...); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRelayPublish measures relay throughput to the real broker: b.N usage
// rows of 100 tenants, written to the PostgreSQL outbox beforehand, published
// and marked; beside it, kafka-go's Writer sending the same records to the
// same broker (ceiling-events/s) and the ratio. Run it with a fixed count, e.g.
//
//	go test -run '^$' -bench RelayPublish -benchtime 20000x -count 3 ./events/
func BenchmarkRelayPublish(b *testing.B) {
	k := testenv.Kafka(b)
	db := testenv.Postgres(b)
	s := newStore(b, db)
	tens := tenants(100)
	rows := usageRows(b, tens, b.N/len(tens)+1, at.Truncate(time.Hour))[:b.N]
	for chunk := range slices.Chunk(rows, 2000) {
		insertRows(b, db, chunk)
	}

	// The ceiling: the same records, under a prefix of their own.
	ceilingPrefix := k.Prefix + ".ceiling"
	createTopics(b, k.Brokers, ceilingPrefix)
	createTopics(b, k.Brokers, k.Prefix)
	msgs := make([]kafka.Message, len(rows))
	for i, row := range rows {
		msgs[i] = events.Message(ceilingPrefix, row)
	}
	w := ceilingWriter(k.Brokers)
	defer w.Close()
	start := time.Now()
	for chunk := range slices.Chunk(msgs, 10000) {
		if err := w.WriteMessages(b.Context(), chunk...); err != nil {
			b.Fatalf("ceiling: %v", err)
		}
	}
	ceiling := float64(b.N) / time.Since(start).Seconds()

	b.ResetTimer()
	start = time.Now()
	_, stop := runRelay(b, events.RelayConfig{Store: s, Brokers: k.Brokers, TopicPrefix: k.Prefix,
		Topics: events.TopicSpec{Partitions: benchPartitions, ReplicationFactor: 1}})
	waitDrained(b, s, 10*time.Minute)
	elapsed := time.Since(start)
	b.StopTimer()
	stop()
	rate := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rate, "events/s")
	b.ReportMetric(ceiling, "ceiling-events/s")
	b.ReportMetric(rate/ceiling, "ratio")
}

// BenchmarkEventLatency measures end-to-end event latency at light load: from
// the commit of a state change's transaction (an outbox row) to the record
// being readable by a consumer of the topic, one event at a time. It runs the
// relay woken by the commit (notify, poll at its default 100ms as the
// fallback), the relay polling only (poll=100ms: the commit does not notify, as
// when the listener is down, and as on SQLite), and the ceiling: kafka-go's
// Writer sending the same record, timed from the call. Run it with e.g.
//
//	go test -run '^$' -bench 'EventLatency$' -benchtime 200x -count 3 ./events/
func BenchmarkEventLatency(b *testing.B) {
	for _, mode := range []string{"ceiling", "notify", "poll=100ms"} {
		b.Run(mode, func(b *testing.B) {
			k := testenv.Kafka(b)
			db := testenv.Postgres(b)
			s := newStore(b, db)
			createTopics(b, k.Brokers, k.Prefix)
			ten := tenants(1)
			var relay *events.Relay
			var send func(row []models.OutboxEvent) []models.OutboxEvent
			switch mode {
			case "ceiling":
				w := ceilingWriter(k.Brokers)
				defer w.Close()
				send = func(rows []models.OutboxEvent) []models.OutboxEvent {
					if err := w.WriteMessages(b.Context(), events.Message(k.Prefix, rows[0])); err != nil {
						b.Fatal(err)
					}
					return rows
				}
			case "notify":
				relay, _ = runRelay(b, events.RelayConfig{Store: s, Brokers: k.Brokers, TopicPrefix: k.Prefix,
					PollInterval: events.DefaultRelayPollInterval, Topics: events.TopicSpec{Partitions: benchPartitions, ReplicationFactor: 1}})
				send = func(rows []models.OutboxEvent) []models.OutboxEvent { return commitRows(b, db, rows) }
			default:
				relay, _ = runRelay(b, events.RelayConfig{Store: s, Brokers: k.Brokers, TopicPrefix: k.Prefix,
					PollInterval: events.DefaultRelayPollInterval, Topics: events.TopicSpec{Partitions: benchPartitions, ReplicationFactor: 1}})
				send = func(rows []models.OutboxEvent) []models.OutboxEvent { return insertRows(b, db, rows) }
			}
			topic := events.FullTopic(k.Prefix, events.TopicUsage)
			seen := make(chan string, 16)
			reconnects := readIDs(b, k.Brokers, topic, func(id string, _ time.Time) {
				select {
				case seen <- id:
				case <-b.Context().Done():
				}
			})
			readID := func(id string) {
				timeout := time.After(30 * time.Second)
				for {
					select {
					case got := <-seen:
						if got == id {
							return
						}
					case <-timeout:
						b.Fatalf("event %s not read after 30s", id)
					}
				}
			}
			warm := send(usageRows(b, ten, 1, at.Truncate(time.Hour)))
			readID(warm[0].EventID)

			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				row := usageRows(b, ten, 1, at.Truncate(time.Hour).Add(time.Duration(i+1)*time.Hour))
				// The ceiling is timed from the call; the relay from the
				// commit's return.
				committed := time.Now()
				row = send(row)
				if mode != "ceiling" {
					committed = time.Now()
				}
				readID(row[0].EventID)
				lat = append(lat, time.Since(committed))
			}
			b.StopTimer()
			reportLatency(b, lat)
			reportWakes(b, relay)
			b.ReportMetric(float64(reconnects()), "consumer-reconnects")
		})
	}
}

// BenchmarkEventLatencyAtRate measures commit → readable latency under load:
// b.N events offered at 10,000 events/s (a transaction of 10 events every
// millisecond, from a pool of writers, open loop), read back from every
// partition; beside it, kafka-go's Writer sending the same records at the same
// rate (ceiling). Run it with e.g.
//
//	go test -run '^$' -bench EventLatencyAtRate -benchtime 50000x -count 3 ./events/
func BenchmarkEventLatencyAtRate(b *testing.B) {
	const (
		perTx   = 10
		every   = time.Millisecond // perTx every millisecond: 10,000 events/s
		writers = 16
	)
	for _, mode := range []string{"ceiling", "notify"} {
		b.Run(fmt.Sprintf("rate=10000/%s", mode), func(b *testing.B) {
			k := testenv.Kafka(b)
			db := testenv.Postgres(b)
			s := newStore(b, db)
			createTopics(b, k.Brokers, k.Prefix)
			tens := tenants(100)
			rows := usageRows(b, tens, b.N/len(tens)+1, at.Truncate(time.Hour))[:b.N]
			var relay *events.Relay
			var send func(rows []models.OutboxEvent)
			switch mode {
			case "ceiling":
				w := ceilingWriter(k.Brokers)
				defer w.Close()
				send = func(rows []models.OutboxEvent) {
					msgs := make([]kafka.Message, len(rows))
					for i, r := range rows {
						msgs[i] = events.Message(k.Prefix, r)
					}
					if err := w.WriteMessages(context.WithoutCancel(b.Context()), msgs...); err != nil {
						b.Error(err)
					}
				}
			default:
				relay, _ = runRelay(b, events.RelayConfig{Store: s, Brokers: k.Brokers, TopicPrefix: k.Prefix,
					PollInterval: events.DefaultRelayPollInterval, Topics: events.TopicSpec{Partitions: benchPartitions, ReplicationFactor: 1}})
				send = func(rows []models.OutboxEvent) { commitTx(b, db, rows) }
			}
			var mu sync.Mutex
			sent := make(map[string]time.Time, b.N)
			lat := make([]time.Duration, 0, b.N)
			done := make(chan struct{})
			add := func(d time.Duration) { // with mu held
				lat = append(lat, d)
				if len(lat) == b.N {
					close(done)
				}
			}
			topic := events.FullTopic(k.Prefix, events.TopicUsage)
			early := map[string]time.Time{} // read before the writer noted its commit
			reconnects := readIDs(b, k.Brokers, topic, func(id string, at time.Time) {
				mu.Lock()
				defer mu.Unlock()
				if t, ok := sent[id]; ok {
					add(at.Sub(t))
					delete(sent, id)
				} else {
					early[id] = at
				}
			})
			work := make(chan []models.OutboxEvent, b.N/perTx+1)
			var wg sync.WaitGroup
			for range writers {
				wg.Go(func() {
					for tx := range work {
						committed := time.Now()
						send(tx)
						if mode != "ceiling" {
							committed = time.Now()
						}
						mu.Lock()
						for _, r := range tx {
							if at, ok := early[r.EventID]; ok {
								add(at.Sub(committed))
								delete(early, r.EventID)
							} else {
								sent[r.EventID] = committed
							}
						}
						mu.Unlock()
					}
				})
			}
			b.ResetTimer()
			start := time.Now()
			for i, tx := range slices.Collect(slices.Chunk(rows, perTx)) {
				time.Sleep(time.Until(start.Add(time.Duration(i) * every)))
				work <- tx
			}
			close(work)
			offered := float64(b.N) / time.Since(start).Seconds()
			wg.Wait()
			select {
			case <-done:
			case <-time.After(2 * time.Minute):
				mu.Lock()
				b.Fatalf("%d of %d events read after 2 minutes", len(lat), b.N)
			}
			b.StopTimer()
			mu.Lock()
			defer mu.Unlock()
			b.ReportMetric(offered, "offered-events/s")
			reportLatency(b, lat)
			reportWakes(b, relay)
			b.ReportMetric(float64(reconnects()), "consumer-reconnects")
		})
	}
}

// commitTx writes rows in one transaction that notifies the relay.
func commitTx(b *testing.B, db *bun.DB, rows []models.OutboxEvent) {
	ctx := context.WithoutCancel(b.Context())
	now := time.Now().UTC().Truncate(time.Microsecond)
	rows = slices.Clone(rows)
	for i := range rows {
		rows[i].CreatedAt = now
	}
	err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewInsert().Model(&rows).Exec(ctx); err != nil {
			return err
		}
		return models.NotifyOutbox(ctx, tx)
	})
	if err != nil {
		b.Errorf("commit %d outbox rows: %v", len(rows), err)
	}
}

// readerMaxWait is how long the benchmarks' consumers let the broker hold a
// fetch that finds nothing new. The broker answers a fetch as soon as a record
// arrives (MinBytes 1), so it adds no latency; kafka-go also sets the fetch's
// client-side read deadline from it, with a quarter of it as the slack for
// the answer's round trip, and a read past that deadline closes the
// connection and dials the partition's leader again. At 5 ms (the slack
// 1.25 ms) the consumers of a busy 2-core machine reconnected every few
// fetches and stopped reading for up to a second at a time, on the ceiling's
// side and the relay's alike: the p99 was theirs (docs/performance.md).
const readerMaxWait = 500 * time.Millisecond

// readIDs reads topic from its first offset on every partition until b's
// context ends, calling got with each event's ID and when it was read. It
// returns at once; reconnects tells how many times its consumers have dialed
// a partition's leader again since they started (their first dials aside).
func readIDs(b *testing.B, brokers []string, topic string, got func(id string, at time.Time)) (reconnects func() int64) {
	var dials atomic.Int64
	var mu sync.Mutex
	var readers []*kafka.Reader
	for p := range benchPartitions {
		// The back-off after a failed fetch is 1–10 ms, not kafka-go's
		// 100 ms–1 s: the figure is when a record becomes readable, not
		// how long a reader sleeps after a hiccup.
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p,
			MinBytes: 1, MaxBytes: 1 << 20, MaxWait: readerMaxWait,
			ReadBackoffMin: time.Millisecond, ReadBackoffMax: 10 * time.Millisecond})
		readers = append(readers, r)
		go func() {
			defer r.Close()
			if err := r.SetOffset(kafka.FirstOffset); err != nil {
				b.Error(err)
				return
			}
			for {
				m, err := r.ReadMessage(b.Context())
				if err != nil {
					return // the benchmark ended
				}
				if env, err := events.Parse(m); err == nil {
					got(env.ID, time.Now())
				}
			}
		}()
	}
	return func() int64 {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range readers {
			dials.Add(r.Stats().Dials) // Stats counts since its last call
		}
		return max(dials.Load()-int64(len(readers)), 0)
	}
}

// reportWakes reports how many times per event the relay, if any, was woken
// by a commit and how many notifications it received.
func reportWakes(b *testing.B, r *events.Relay) {
	if r == nil {
		return
	}
	st := r.Stats()
	b.ReportMetric(float64(st.Wakes)/float64(b.N), "wakes/event")
	b.ReportMetric(float64(st.Notifications)/float64(b.N), "notifications/event")
}

// reportLatency reports the p50, p99 and max of lat in milliseconds.
func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	ms := func(q float64) float64 {
		return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(ms(0.5), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
	b.ReportMetric(ms(1), "max-ms")
}
