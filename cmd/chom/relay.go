package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/chomhq/chom/events"
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
	store, closeDB, err := openStore(ctx, c, c.AutoMigrate, 4)
	if err != nil {
		return err
	}
	defer closeDB()
	relay, err := newRelay(c, store, log)
	if err != nil {
		return err
	}
	return relay.Run(ctx)
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
// Redis), migrating it when asked, with a pool of at most conns connections.
func openStore(ctx context.Context, c config, migrate bool, conns int) (*models.Store, func(), error) {
	db, err := models.Open(ctx, c.DatabaseURL, models.PoolConfig{MaxOpenConns: min(conns, c.DBMaxConns)})
	if err != nil {
		return nil, nil, err
	}
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
