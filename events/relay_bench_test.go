package events_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/internal/testenv"
)

// BenchmarkRelayPublish measures relay throughput to the real broker: b.N usage
// rows of 100 tenants, written to the PostgreSQL outbox beforehand, published
// and marked. Run it with a fixed count, e.g.
//
//	go test -run '^$' -bench RelayPublish -benchtime 20000x ./events/
func BenchmarkRelayPublish(b *testing.B) {
	k := testenv.Kafka(b)
	db := testenv.Postgres(b)
	s := newStore(b, db)
	tens := tenants(100)
	rows := usageRows(b, tens, b.N/len(tens)+1, at.Truncate(time.Hour))[:b.N]
	for chunk := range slices.Chunk(rows, 2000) {
		insertRows(b, db, chunk)
	}
	b.ResetTimer()
	start := time.Now()
	_, stop := runRelay(b, events.RelayConfig{Store: s, Brokers: k.Brokers, TopicPrefix: k.Prefix,
		Topics: events.TopicSpec{Partitions: 6, ReplicationFactor: 1}})
	waitDrained(b, s, 10*time.Minute)
	elapsed := time.Since(start)
	b.StopTimer()
	stop()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}

// BenchmarkEventLatency measures end-to-end event latency: from the commit of a
// state change's transaction (an outbox row) to the record being readable by a
// consumer of the topic, one event at a time, with the relay's poll interval at
// its default (100ms) and at 10ms. Run it with e.g.
//
//	go test -run '^$' -bench EventLatency -benchtime 200x ./events/
func BenchmarkEventLatency(b *testing.B) {
	for _, poll := range []time.Duration{100 * time.Millisecond, 10 * time.Millisecond} {
		b.Run(fmt.Sprintf("poll=%v", poll), func(b *testing.B) {
			k := testenv.Kafka(b)
			db := testenv.Postgres(b)
			s := newStore(b, db)
			runRelay(b, events.RelayConfig{Store: s, Brokers: k.Brokers, TopicPrefix: k.Prefix, PollInterval: poll,
				Topics: events.TopicSpec{Partitions: 1, ReplicationFactor: 1}})
			topic := events.FullTopic(k.Prefix, events.TopicUsage)
			ten := tenants(1)
			warm := insertRows(b, db, usageRows(b, ten, 1, at.Truncate(time.Hour)))
			waitDrained(b, s, time.Minute)
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: k.Brokers, Topic: topic, Partition: 0,
				MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 5 * time.Millisecond})
			defer r.Close()
			if err := r.SetOffset(kafka.FirstOffset); err != nil {
				b.Fatal(err)
			}
			readID := func(id string) {
				ctx, cancel := context.WithTimeout(b.Context(), 30*time.Second)
				defer cancel()
				for {
					m, err := r.ReadMessage(ctx)
					if err != nil {
						b.Fatalf("read: %v", err)
					}
					if env, err := events.Parse(m); err == nil && env.ID == id {
						return
					}
				}
			}
			readID(warm[0].EventID)

			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				row := usageRows(b, ten, 1, at.Truncate(time.Hour).Add(time.Duration(i+1)*time.Hour))
				committed := time.Now()
				insertRows(b, db, row) // commits
				readID(row[0].EventID)
				lat = append(lat, time.Since(committed))
			}
			b.StopTimer()
			slices.Sort(lat)
			ms := func(q float64) float64 {
				return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))]) / float64(time.Millisecond)
			}
			b.ReportMetric(ms(0.5), "p50-ms")
			b.ReportMetric(ms(0.99), "p99-ms")
			b.ReportMetric(ms(1), "max-ms")
		})
	}
}
