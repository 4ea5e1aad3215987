package stack

import (
	"context"
	"log/slog"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/events/billing"
	"github.com/chomhq/chom/metrics"
)

// eventPoolConns is the database pool of the relay and the billing
// consumer: each runs one loop, so a few connections are plenty.
const eventPoolConns = 4

// Relay is the outbox relay role: it publishes the outbox to Kafka. Several
// may run; one publishes and the others stand by (see events.Relay).
type Relay struct {
	Relay *events.Relay
}

// NewRelay builds the relay over b's store and reports its counters,
// leadership, outbox lag and Kafka breaker in b's metrics.
func NewRelay(ctx context.Context, c Config, b *Backends, log *slog.Logger) (*Relay, error) {
	r, err := events.NewRelay(events.RelayConfig{
		Store:          b.Store,
		Brokers:        c.KafkaBrokers,
		Logger:         log,
		Security:       c.KafkaSecurity,
		TopicPrefix:    c.KafkaTopicPrefix,
		Topics:         c.topicSpec(),
		BatchSize:      c.RelayBatch,
		PollInterval:   c.RelayPollInterval,
		BreakerTimeout: c.RelayBreakerTimeout,
		Retention:      c.OutboxRetention,
	})
	if err != nil {
		return nil, err
	}
	b.Metrics.TrackRelay(ctx, func() metrics.RelayStats {
		s := r.Stats()
		return metrics.RelayStats{Published: s.Published, Failed: s.Failed, Leader: s.Leader, Breaker: s.Breaker}
	}, r.Lag)
	return &Relay{Relay: r}, nil
}

// Run publishes until ctx ends.
func (r *Relay) Run(ctx context.Context) error { return r.Relay.Run(ctx) }

// BillingConsumer is the reference billing consumer role: usage events from
// Kafka become invoice lines exactly once (see billing.Consumer).
type BillingConsumer struct {
	Consumer *billing.Consumer
}

// NewBillingConsumer builds the consumer over b's store and reports its
// counters in b's metrics.
func NewBillingConsumer(c Config, b *Backends, log *slog.Logger) (*BillingConsumer, error) {
	consumer, err := billing.New(billing.Config{
		Store:       b.Store,
		Brokers:     c.KafkaBrokers,
		Logger:      log,
		Security:    c.KafkaSecurity,
		GroupID:     c.BillingGroup,
		TopicPrefix: c.KafkaTopicPrefix,
		Topics:      c.topicSpec(),
	})
	if err != nil {
		return nil, err
	}
	b.Metrics.TrackBilling(func() map[string]uint64 { return consumer.Stats().Counters() })
	return &BillingConsumer{Consumer: consumer}, nil
}

// Run consumes until ctx ends.
func (bc *BillingConsumer) Run(ctx context.Context) error { return bc.Consumer.Run(ctx) }

// topicSpec is how the relay and the billing consumer create missing topics.
func (c Config) topicSpec() events.TopicSpec {
	return events.TopicSpec{Partitions: c.KafkaPartitions, ReplicationFactor: c.KafkaReplication, MinInSyncReplicas: c.KafkaMinInSync}
}
