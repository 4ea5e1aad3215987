package main

import (
	"context"
	"io"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/events/billing"
	"github.com/chomhq/chom/metrics"
)

// runBillingConsumer runs `chom billing-consumer`: the reference consumer that
// turns usage events into invoice lines exactly once (see billing.Consumer).
func runBillingConsumer(ctx context.Context, stderr io.Writer, getenv func(string) string) error {
	c, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	if err := c.require("CHOM_DATABASE_URL", "CHOM_KAFKA_BROKERS"); err != nil {
		return err
	}
	log := newLogger(stderr, c).With("process", "billing-consumer")
	m := metrics.New()
	store, closeDB, err := openStore(ctx, c, c.AutoMigrate, 4, m)
	if err != nil {
		return err
	}
	defer closeDB()
	consumer, err := billing.New(billing.Config{
		Store:       store,
		Brokers:     c.KafkaBrokers,
		Logger:      log,
		GroupID:     c.BillingGroup,
		TopicPrefix: c.KafkaTopicPrefix,
		Topics:      events.TopicSpec{Partitions: c.KafkaPartitions, ReplicationFactor: c.KafkaReplication},
	})
	if err != nil {
		return err
	}
	m.TrackBilling(func() map[string]uint64 { return consumer.Stats().Counters() })
	serveMetrics, err := metricsServer(metricsAddr(c, metricsAddrBilling), m, c.ShutdownTimeout, log)
	if err != nil {
		return err
	}
	return runAll(ctx, append(serveMetrics, consumer.Run)...)
}
