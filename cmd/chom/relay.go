package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/metrics"
	"github.com/chomhq/chom/models"
)

// runRelay runs `chom relay`: the outbox relay to Kafka. Several may run; one
// publishes and the others stand by (see events.Relay).
func runRelay(ctx context.Context, stderr io.Writer, getenv func(string) string) error {
	c, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	if err := c.require("CHOM_DATABASE_URL", "CHOM_KAFKA_BROKERS"); err != nil {
		return err
	}
	log := newLogger(stderr, c).With("process", "relay")
	m := metrics.New()
	store, closeDB, err := openStore(ctx, c, c.AutoMigrate, 4, m)
	if err != nil {
		return err
	}
	defer closeDB()
	relay, err := newRelay(c, store, log)
	if err != nil {
		return err
	}
	trackRelay(ctx, m, relay)
	serveMetrics, err := metricsServer(metricsAddr(c, metricsAddrRelay), m, c.ShutdownTimeout, log)
	if err != nil {
		return err
	}
	return runAll(ctx, append(serveMetrics, relay.Run)...)
}

// newRelay builds the outbox relay from the configuration.
func newRelay(c config, store *models.Store, log *slog.Logger) (*events.Relay, error) {
	return events.NewRelay(events.RelayConfig{
		Store:          store,
		Brokers:        c.KafkaBrokers,
		Logger:         log,
		TopicPrefix:    c.KafkaTopicPrefix,
		Topics:         events.TopicSpec{Partitions: c.KafkaPartitions, ReplicationFactor: c.KafkaReplication},
		BatchSize:      c.RelayBatch,
		PollInterval:   c.RelayPollInterval,
		BreakerTimeout: c.RelayBreakerTimeout,
		Retention:      c.OutboxRetention,
	})
}

// openStore opens the database alone (the relay and the billing consumer need no
// Redis), migrating it when asked, with a pool of at most conns connections; with
// a non-nil m every statement is measured.
func openStore(ctx context.Context, c config, migrate bool, conns int, m *metrics.Metrics) (*models.Store, func(), error) {
	db, err := models.Open(ctx, c.DatabaseURL, models.PoolConfig{MaxOpenConns: min(conns, c.DBMaxConns)})
	if err != nil {
		return nil, nil, err
	}
	instrumentDB(db, m)
	if migrate {
		if _, err := models.MigrateUp(ctx, db); err != nil {
			_ = db.Close()
			return nil, nil, err
		}
	}
	store, err := models.New(models.Config{DB: db})
	if err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	return store, func() { _ = db.Close() }, nil
}
