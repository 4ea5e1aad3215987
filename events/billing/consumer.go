package billing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/models"
)

// Headers the consumer adds to a record it sends to the dead-letter topic; the
// record keeps its key, value and original headers.
const (
	HeaderDLQReason    = "chom_dlq_reason"
	HeaderDLQTopic     = "chom_dlq_topic"
	HeaderDLQPartition = "chom_dlq_partition"
	HeaderDLQOffset    = "chom_dlq_offset"
	HeaderDLQConsumer  = "chom_dlq_consumer"
)

// DefaultGroupID is the consumer group, and the consumer's name in
// processed_events, unless configured.
const DefaultGroupID = "chom-billing"

// maxReason bounds the reason header, which quotes the offending input.
const maxReason = 1024

// Config configures a Consumer. Zero values take the defaults named on each field.
type Config struct {
	// Store records invoices and processed events; required.
	Store *models.Store
	// Brokers are the bootstrap addresses (host:port) of the Kafka cluster; required.
	Brokers []string
	// Logger receives the consumer's logs; required.
	Logger *slog.Logger
	// Security is how the consumer's connections to the brokers are secured
	// (TLS, SASL). Default PLAINTEXT.
	Security events.KafkaSecurity

	// GroupID is the Kafka consumer group, and the name under which processed
	// events are recorded. Default DefaultGroupID.
	GroupID string
	// TopicPrefix is the relay's topic prefix. Default events.DefaultTopicPrefix;
	// "-" means none.
	TopicPrefix string
	// Topics is how the consumer creates its topics when they are missing (it
	// may start before the relay). Default 6 partitions, 3 replicas,
	// min.insync.replicas 2 (see events.DefaultMinInSyncReplicas).
	Topics events.TopicSpec

	// MaxBatch is the most records applied in one database transaction.
	// Default 500.
	MaxBatch int
	// Linger is how long the consumer waits for more records to fill a batch
	// once it has one. Default 20ms.
	Linger time.Duration
	// SessionTimeout is how long the group waits for a silent member before
	// giving its partitions to another. Default 10s.
	SessionTimeout time.Duration
}

// Validate reports every missing or invalid field at once. It is called after
// defaults are filled in.
func (c Config) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("billing: Config.Store is required"))
	}
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("billing: Config.Brokers is required"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("billing: Config.Logger is required"))
	}
	if err := events.ValidTopicPrefix(c.TopicPrefix); err != nil {
		errs = append(errs, fmt.Errorf("billing: %w", err))
	}
	if err := c.Topics.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("billing: %w", err))
	}
	if c.MaxBatch <= 0 {
		errs = append(errs, errors.New("billing: Config.MaxBatch must be positive"))
	}
	if c.Linger <= 0 || c.SessionTimeout <= 0 {
		errs = append(errs, errors.New("billing: Config.Linger and SessionTimeout must be positive"))
	}
	if err := c.Security.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("billing: %w", err))
	}
	return errors.Join(errs...)
}

func (c *Config) setDefaults() {
	if c.GroupID == "" {
		c.GroupID = DefaultGroupID
	}
	switch c.TopicPrefix {
	case "":
		c.TopicPrefix = events.DefaultTopicPrefix
	case "-":
		c.TopicPrefix = ""
	}
	if c.Topics.Partitions == 0 {
		c.Topics.Partitions = events.DefaultPartitions
	}
	if c.Topics.ReplicationFactor == 0 {
		c.Topics.ReplicationFactor = events.DefaultReplicationFactor
	}
	if c.Topics.MinInSyncReplicas == 0 {
		c.Topics.MinInSyncReplicas = events.DefaultMinInSyncReplicas(c.Topics.ReplicationFactor)
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 500
	}
	if c.Linger == 0 {
		c.Linger = 20 * time.Millisecond
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 10 * time.Second
	}
}

// Consumer is the reference billing consumer: a member of a Kafka consumer group
// on the usage and site topics that turns usage.recorded.v1 events into invoice
// lines, exactly once.
//
// Exactly once on top of at-least-once delivery: each batch of records is
// applied in one database transaction that also records every event's (source,
// ID) in processed_events, and an event already recorded there changes nothing.
// Offsets are committed to Kafka only after that transaction commits, so a crash
// at any point either redelivers records (which the transaction then skips) or
// has already applied them; nothing is lost and nothing is billed twice.
//
// A record that is not a valid CHOM CloudEvent, or whose usage data does not
// validate, goes to the dead-letter topic <prefix>.billing.dlq.v1 with the reason
// in the chom_dlq_reason header, and the consumer moves on. Valid site events
// have no billing effect here; event types the consumer does not know are
// skipped, as the contract asks of every consumer.
type Consumer struct {
	cfg       Config
	log       *slog.Logger
	transport *kafka.Transport
	dialer    *kafka.Dialer
	dlqTopic  string
	// pause waits between two attempts (sleep; tests record the waits).
	pause func(ctx context.Context, d time.Duration) bool

	billed       atomic.Uint64
	duplicates   atomic.Uint64
	deadLettered atomic.Uint64
	ignored      atomic.Uint64
}

// New returns a consumer over cfg, which it validates after filling in defaults.
func New(cfg Config) (*Consumer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	transport, err := events.NewTransport("chom-billing", 10*time.Second, cfg.Security)
	if err != nil {
		return nil, fmt.Errorf("billing: %w", err)
	}
	dialer, err := events.NewDialer("chom-billing", 10*time.Second, cfg.Security)
	if err != nil {
		return nil, fmt.Errorf("billing: %w", err)
	}
	return &Consumer{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "billing-consumer", "group", cfg.GroupID),
		transport: transport,
		dialer:    dialer,
		dlqTopic:  events.FullTopic(cfg.TopicPrefix, events.TopicBillingDLQ),
		pause:     sleep,
	}, nil
}

// Stats are the consumer's counters since it started.
type Stats struct {
	// Billed counts usage events that became invoice lines.
	Billed uint64
	// Duplicates counts usage events skipped because they were already billed.
	Duplicates uint64
	// DeadLettered counts records sent to the dead-letter topic.
	DeadLettered uint64
	// Ignored counts valid records with no billing effect (site events, unknown types).
	Ignored uint64
}

// Stats returns the consumer's counters. It is safe to call at any time.
func (c *Consumer) Stats() Stats {
	return Stats{
		Billed: c.billed.Load(), Duplicates: c.duplicates.Load(),
		DeadLettered: c.deadLettered.Load(), Ignored: c.ignored.Load(),
	}
}

// Result labels of Stats.Counters, as chom_billing_events_total{result}
// reports them.
const (
	ResultBilled       = "billed"
	ResultDuplicate    = "duplicate"
	ResultDeadLettered = "dead_lettered"
	ResultIgnored      = "ignored"
)

// Counters returns s by result label, for metrics.
func (s Stats) Counters() map[string]uint64 {
	return map[string]uint64{ResultBilled: s.Billed, ResultDuplicate: s.Duplicates,
		ResultDeadLettered: s.DeadLettered, ResultIgnored: s.Ignored}
}

// DLQTopic is the full name of the dead-letter topic.
func (c *Consumer) DLQTopic() string { return c.dlqTopic }

// Run consumes until ctx ends, then leaves the group and returns nil. Kafka and
// database failures are logged and retried; it returns an error only when the
// reader fails for good.
func (c *Consumer) Run(ctx context.Context) error {
	usage := events.FullTopic(c.cfg.TopicPrefix, events.TopicUsage)
	sites := events.FullTopic(c.cfg.TopicPrefix, events.TopicSites)
	admin := &kafka.Client{Addr: kafka.TCP(c.cfg.Brokers...), Timeout: 10 * time.Second, Transport: c.transport}
	for attempt := 1; ; attempt++ {
		err := events.EnsureTopics(ctx, admin, c.cfg.Topics, usage, sites, c.dlqTopic)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		c.log.Warn("create topics; retrying", "error", err)
		if !sleep(ctx, backoff(attempt)) {
			return nil
		}
	}
	reader := kafka.NewReader(kafka.ReaderConfig{
		Brokers:     c.cfg.Brokers,
		Dialer:      c.dialer,
		GroupID:     c.cfg.GroupID,
		GroupTopics: []string{usage, sites},
		// A new group starts from the beginning: billing must not skip usage
		// published before it first ran.
		StartOffset:       kafka.FirstOffset,
		CommitInterval:    0, // commit synchronously, after the transaction
		MinBytes:          1,
		MaxBytes:          10 << 20,
		MaxWait:           250 * time.Millisecond,
		SessionTimeout:    c.cfg.SessionTimeout,
		HeartbeatInterval: c.cfg.SessionTimeout / 5,
		RebalanceTimeout:  c.cfg.SessionTimeout,
		JoinGroupBackoff:  time.Second,
		ReadBackoffMin:    100 * time.Millisecond,
		ReadBackoffMax:    2 * time.Second,
		Logger:            kafkaLogger(ctx, c.log, slog.LevelDebug),
		ErrorLogger:       kafkaLogger(ctx, c.log, slog.LevelDebug),
	})
	dlq := &kafka.Writer{
		Addr:         kafka.TCP(c.cfg.Brokers...),
		Topic:        c.dlqTopic,
		Balancer:     kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 5 * time.Millisecond,
		MaxAttempts:  3,
		Transport:    c.transport,
	}
	c.log.Info("billing consumer started", "topics", []string{usage, sites}, "dlq", c.dlqTopic, "security", c.cfg.Security)
	err := c.consume(ctx, reader, dlq)
	if cerr := reader.Close(); cerr != nil && err == nil && ctx.Err() == nil {
		err = fmt.Errorf("billing: close reader: %w", cerr)
	}
	if cerr := dlq.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("billing: close dead-letter writer: %w", cerr)
	}
	c.log.Info("billing consumer stopped")
	return err
}

// fetchRetryPause is how long the consumer waits after a failed fetch. It is
// short and fixed, not a growing backoff: kafka-go's reader already paces its
// own reconnects (ReadBackoffMin..Max per partition, JoinGroupBackoff for the
// group) and queues one error per failed attempt on the channel FetchMessage
// reads, behind which the records wait. A consumer that slept a backoff of its
// own, growing to 10s, for every queued error spent minutes reading stale
// "connection refused" errors after a Kafka broker came back, billing nothing
// meanwhile (TestFleet found it; see TestFetchErrorsDoNotStallTheConsumer).
const fetchRetryPause = 25 * time.Millisecond

// fetchLogEvery bounds the fetch-failure warnings: one line at the first
// failure, then at most one per interval with the count since the last line.
const fetchLogEvery = 5 * time.Second

// messageReader is the part of *kafka.Reader that consume uses.
type messageReader interface {
	FetchMessage(ctx context.Context) (kafka.Message, error)
	CommitMessages(ctx context.Context, msgs ...kafka.Message) error
}

// consume is Run's loop: fetch a batch, apply it (retrying until it is
// applied), commit its offsets.
func (c *Consumer) consume(ctx context.Context, reader messageReader, dlq *kafka.Writer) error {
	var unlogged int       // fetch failures since the last warning
	var loggedAt time.Time // when the last warning was written
	for {
		batch, err := c.fetch(ctx, reader)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, io.EOF):
			return fmt.Errorf("billing: fetch: reader closed: %w", err)
		case err != nil:
			// Kafka unreachable or the group rebalancing: the reader reconnects
			// and rejoins by itself; read on (see fetchRetryPause).
			unlogged++
			if time.Since(loggedAt) >= fetchLogEvery {
				c.log.Warn("fetch failed; retrying", "error", err, "failures", unlogged)
				unlogged, loggedAt = 0, time.Now()
			}
			if !c.pause(ctx, fetchRetryPause) {
				return nil
			}
			continue
		}
		if unlogged > 0 || !loggedAt.IsZero() {
			c.log.Info("fetching again", "failures_since_last_warning", unlogged)
			unlogged, loggedAt = 0, time.Time{}
		}
		for attempt := 1; ; attempt++ {
			err := c.apply(ctx, batch, dlq)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			d := backoff(attempt)
			c.log.Warn("apply batch; retrying", "error", err, "records", len(batch), "retry_in", d.String())
			if !c.pause(ctx, d) {
				return nil
			}
		}
		if err := reader.CommitMessages(ctx, batch...); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// Applied but not committed (a rebalance, Kafka away): the records come
			// back, to this member or another, and are skipped as duplicates.
			c.log.Warn("commit offsets", "error", err, "records", len(batch))
		}
	}
}

// fetch blocks for one record, then takes whatever else arrives within Linger,
// up to MaxBatch records.
func (c *Consumer) fetch(ctx context.Context, reader messageReader) ([]kafka.Message, error) {
	m, err := reader.FetchMessage(ctx)
	if err != nil {
		return nil, err
	}
	batch := []kafka.Message{m}
	lctx, cancel := context.WithTimeout(ctx, c.cfg.Linger)
	defer cancel()
	for len(batch) < c.cfg.MaxBatch {
		m, err := reader.FetchMessage(lctx)
		if err != nil {
			break // linger over; a reader failure shows on the next fetch
		}
		batch = append(batch, m)
	}
	return batch, nil
}

// apply turns a batch into its effects: malformed records to the dead-letter
// topic first, then every usage event in one transaction. It is safe to call
// again with the same batch after a failure.
func (c *Consumer) apply(ctx context.Context, batch []kafka.Message, dlq *kafka.Writer) error {
	var facts []models.UsageFact
	var dead []kafka.Message
	var ignored int
	for _, m := range batch {
		fact, ok, err := c.classify(m)
		switch {
		case err != nil:
			c.log.Warn("dead-lettering record", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "reason", err.Error())
			dead = append(dead, c.deadLetter(m, err))
		case ok:
			facts = append(facts, fact)
		default:
			ignored++
		}
	}
	if len(dead) > 0 {
		if err := dlq.WriteMessages(ctx, dead...); err != nil {
			return fmt.Errorf("write %d records to %s: %w", len(dead), c.dlqTopic, err)
		}
	}
	var billed int
	if len(facts) > 0 {
		n, err := c.cfg.Store.BillUsage(ctx, c.cfg.GroupID, facts)
		if err != nil {
			return err
		}
		billed = n
	}
	c.deadLettered.Add(uint64(len(dead)))
	c.billed.Add(uint64(billed))
	c.duplicates.Add(uint64(len(facts) - billed))
	c.ignored.Add(uint64(ignored))
	return nil
}

// classify parses a record. It returns the usage fact of a valid usage event
// (ok true), ok false for a valid record with no billing effect, or an error
// saying why the record is malformed.
func (c *Consumer) classify(m kafka.Message) (models.UsageFact, bool, error) {
	env, err := events.Parse(m)
	if err != nil {
		return models.UsageFact{}, false, err
	}
	switch env.Type {
	case events.TypeUsageRecorded:
		u, err := events.DecodeUsage(env)
		if err != nil {
			return models.UsageFact{}, false, err
		}
		if u.SiteID != "" {
			// One site's share of a total that arrives as its own event:
			// billing it too would bill the usage twice.
			return models.UsageFact{}, false, nil
		}
		return models.UsageFact{
			Source: env.Source, EventID: env.ID, Type: env.Type, TenantID: u.TenantID,
			Metric: u.Metric, Quantity: u.Quantity, Unit: u.Unit,
			PeriodStart: u.PeriodStart, PeriodEnd: u.PeriodEnd,
			Topic: m.Topic, Partition: m.Partition, Offset: m.Offset,
		}, true, nil
	case events.TypeSiteProvisioned, events.TypeSiteProvisionFailed, events.TypeSiteDeleted:
		if _, err := events.DecodeSite(env); err != nil {
			return models.UsageFact{}, false, err
		}
		return models.UsageFact{}, false, nil
	default:
		c.log.Debug("skipping unknown event type", "type", env.Type, "id", env.ID)
		return models.UsageFact{}, false, nil
	}
}

// deadLetter returns the dead-letter record of m: its key, value and headers,
// plus where it came from and why it was refused.
func (c *Consumer) deadLetter(m kafka.Message, reason error) kafka.Message {
	why := reason.Error()
	if len(why) > maxReason {
		why = why[:maxReason]
	}
	headers := append([]kafka.Header(nil), m.Headers...)
	headers = append(headers,
		kafka.Header{Key: HeaderDLQReason, Value: []byte(why)},
		kafka.Header{Key: HeaderDLQTopic, Value: []byte(m.Topic)},
		kafka.Header{Key: HeaderDLQPartition, Value: []byte(strconv.Itoa(m.Partition))},
		kafka.Header{Key: HeaderDLQOffset, Value: []byte(strconv.FormatInt(m.Offset, 10))},
		kafka.Header{Key: HeaderDLQConsumer, Value: []byte(c.cfg.GroupID)},
	)
	return kafka.Message{Key: m.Key, Value: m.Value, Headers: headers}
}

// kafkaLogger adapts kafka-go's printf logger to slog at level.
func kafkaLogger(ctx context.Context, log *slog.Logger, level slog.Level) kafka.Logger {
	ctx = context.WithoutCancel(ctx)
	return kafka.LoggerFunc(func(format string, args ...any) {
		if log.Enabled(ctx, level) {
			log.Log(ctx, level, fmt.Sprintf(format, args...))
		}
	})
}

// backoff returns the delay before retry number attempt: exponential from
// 200ms, capped at 10s.
func backoff(attempt int) time.Duration {
	d := 200 * time.Millisecond
	for i := 1; i < attempt && d < 10*time.Second; i++ {
		d *= 2
	}
	return min(d, 10*time.Second)
}

// sleep waits for d or until ctx ends, and reports whether the wait was complete.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
