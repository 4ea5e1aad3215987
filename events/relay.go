package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/sony/gobreaker/v2"

	"github.com/chomhq/chom/models"
)

// maxBatchBytes bounds the records of one publish call, and is the kafka-go
// writer's batch limit: one call never gives a partition more than one batch
// (see Relay), and stays under the broker's default message.max.bytes (1 MiB).
const maxBatchBytes = 1 << 20

// recordOverhead over-estimates the framing of one record in a batch beyond its
// key, value and headers (kafka-go counts varints, a timestamp and a few bytes).
const recordOverhead = 64

// RelayConfig configures a Relay. Zero values take the defaults named on each field.
type RelayConfig struct {
	// Store reads and marks the outbox; required.
	Store *models.Store
	// Brokers are the bootstrap addresses (host:port) of the Kafka cluster; required.
	Brokers []string
	// Logger receives the relay's logs; required.
	Logger *slog.Logger
	// Security is how the relay's connections to the brokers are secured
	// (TLS, SASL). Default PLAINTEXT.
	Security KafkaSecurity

	// TopicPrefix starts every topic name: rows of "sites.v1" go to
	// "<prefix>.sites.v1". Default DefaultTopicPrefix ("chom"); "-" means none.
	TopicPrefix string
	// Topics is how missing topics are created. Default 6 partitions, 3
	// replicas, min.insync.replicas 2 (see DefaultMinInSyncReplicas).
	Topics TopicSpec

	// BatchSize is the most rows read, published and marked at once. Default
	// 2000: on the 2-core test machine 500-row batches spent most of their
	// time in per-statement work (docs/performance.md).
	BatchSize int
	// PollInterval is how long the leader waits before looking again at a
	// drained outbox when nothing wakes it. On PostgreSQL the commit of every
	// transaction that writes the outbox wakes the leader (LISTEN/NOTIFY, see
	// models.OutboxListener), so the poll is the fallback for a lost
	// notification or a listener being reconnected; on SQLite, which has no
	// notifications, it is the most an event waits in the database.
	// Default 100ms.
	PollInterval time.Duration
	// LeaderPoll is how often a standby relay tries to take the lease. Default 1s.
	LeaderPoll time.Duration
	// BatchTimeout is the kafka-go writer's linger before it sends a partial
	// batch. The relay is the writer's only caller and each call hands it
	// every record it will send, so lingering only delays: the default,
	// 100µs, sends each call's records at once. (A call's records still make
	// one batch per partition however short the linger: the writer adds them
	// under the partition's lock, which the linger's timer must take before
	// it sends.) Default 100µs.
	BatchTimeout time.Duration
	// WriteTimeout bounds one produce round trip to a broker. Default 10s.
	WriteTimeout time.Duration

	// BreakerFailures is how many publish calls in a row must fail before the
	// circuit opens. Default 3.
	BreakerFailures uint32
	// BreakerTimeout is how long the open circuit refuses calls before it lets
	// one through to probe Kafka; it is also the longest back-off. Default 10s.
	BreakerTimeout time.Duration

	// Retention is how long a published row is kept before it is pruned.
	// Default 7 days.
	Retention time.Duration
	// PruneInterval is how often the leader prunes. Default 10 minutes.
	PruneInterval time.Duration
}

// Validate reports every missing or invalid field at once. It is called after
// defaults are filled in.
func (c RelayConfig) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("relay: Config.Store is required"))
	}
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("relay: Config.Brokers is required"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("relay: Config.Logger is required"))
	}
	if err := ValidTopicPrefix(c.TopicPrefix); err != nil {
		errs = append(errs, fmt.Errorf("relay: %w", err))
	}
	if err := c.Topics.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("relay: %w", err))
	}
	for name, d := range map[string]time.Duration{
		"PollInterval": c.PollInterval, "LeaderPoll": c.LeaderPoll, "BatchTimeout": c.BatchTimeout,
		"WriteTimeout": c.WriteTimeout, "BreakerTimeout": c.BreakerTimeout,
		"Retention": c.Retention, "PruneInterval": c.PruneInterval,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("relay: Config.%s must be positive", name))
		}
	}
	if c.BatchSize <= 0 {
		errs = append(errs, errors.New("relay: Config.BatchSize must be positive"))
	}
	if c.BreakerFailures == 0 {
		errs = append(errs, errors.New("relay: Config.BreakerFailures must be positive"))
	}
	if err := c.Security.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("relay: %w", err))
	}
	return errors.Join(errs...)
}

// Defaults of RelayConfig and TopicSpec, used when a field is zero; the
// assembly's settings table takes the CHOM_KAFKA_* and CHOM_RELAY_* defaults
// from these.
const (
	DefaultPartitions          = 6
	DefaultReplicationFactor   = 3
	DefaultRelayBatchSize      = 2000
	DefaultRelayPollInterval   = 100 * time.Millisecond
	DefaultRelayBatchTimeout   = 100 * time.Microsecond
	DefaultRelayBreakerTimeout = 10 * time.Second
	DefaultOutboxRetention     = 7 * 24 * time.Hour
)

func (c *RelayConfig) setDefaults() {
	switch c.TopicPrefix {
	case "":
		c.TopicPrefix = DefaultTopicPrefix
	case "-":
		c.TopicPrefix = ""
	}
	if c.Topics.Partitions == 0 {
		c.Topics.Partitions = DefaultPartitions
	}
	if c.Topics.ReplicationFactor == 0 {
		c.Topics.ReplicationFactor = DefaultReplicationFactor
	}
	if c.Topics.MinInSyncReplicas == 0 {
		c.Topics.MinInSyncReplicas = DefaultMinInSyncReplicas(c.Topics.ReplicationFactor)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.PollInterval, DefaultRelayPollInterval)
	def(&c.LeaderPoll, time.Second)
	def(&c.BatchTimeout, DefaultRelayBatchTimeout)
	def(&c.WriteTimeout, 10*time.Second)
	def(&c.BreakerTimeout, DefaultRelayBreakerTimeout)
	def(&c.Retention, DefaultOutboxRetention)
	def(&c.PruneInterval, 10*time.Minute)
	if c.BatchSize == 0 {
		c.BatchSize = DefaultRelayBatchSize
	}
	if c.BreakerFailures == 0 {
		c.BreakerFailures = 3
	}
}

// Relay publishes the outbox to Kafka: at least once, and in order per tenant.
//
// Many relays may run; one holds the outbox lease (see models.OutboxLease) and
// publishes, the others wait to take over. The leader reads unpublished rows in
// ID order, publishes them as CloudEvents records keyed by tenant (murmur2, as
// the Java client partitions), waits for every in-sync replica to acknowledge
// (acks=all), and only then marks the rows published. A crash between publish
// and mark publishes those rows again: duplicates, with the same event IDs,
// which consumers drop. Never a loss.
//
// Pipelined: while Kafka takes one batch, the leader reads the next and the
// previous batch is marked on another connection (see lead, reader and
// marker); a batch is sent only after the one before it was acknowledged whole.
//
// Order: a tenant's rows always map to one partition, and one publish call
// gives each partition at most one batch (calls are bounded to the writer's
// batch size and bytes), which the broker appends whole or not at all. kafka-go
// sends a partition's batches one at a time, so a retry never overtakes an
// earlier batch. A failed call is retried from its first unacknowledged row
// before anything after it is sent (the rows read ahead are dropped), so after dropping duplicates a consumer sees each
// tenant's events in ID order, which is the order their transactions wrote them.
// (Events of two transactions that commit concurrently have no order between
// them; causally related ones, such as a site's provision and then its
// deletion, always do.)
//
// When Kafka is unreachable, publish calls fail, a circuit breaker opens after
// BreakerFailures of them and the relay probes again every BreakerTimeout; the
// outbox grows meanwhile and drains when Kafka is back. A call that some
// partitions acknowledged (one broker of a cluster lost, its partitions
// changing leader) is progress, not an outage: it does not count towards the
// breaker and is retried after the shortest back-off, so the other partitions
// keep flowing. Published rows older than Retention are pruned by the leader.
//
// Duplicates, not idempotence: kafka-go (v0.4.51) has no idempotent producer
// (its produce requests carry no producer ID or sequence numbers), so a batch
// whose acknowledgement is lost (a leader killed after appending it, a
// timeout) is appended again by the writer's or the relay's retry. With
// acks=all, min.insync.replicas 2 and no unclean leader election, an
// acknowledged batch survives the loss of its leader, and a tenant's next rows
// are sent only after an earlier copy of theirs was acknowledged, so the first
// copy of each event on a partition is in outbox order; later copies carry the
// same event ID, and consumers drop them (see events/billing).
type Relay struct {
	cfg       RelayConfig
	log       *slog.Logger
	transport *kafka.Transport
	writer    *kafka.Writer
	admin     *kafka.Client
	breaker   *gobreaker.CircuitBreaker[struct{}]

	// topicsMu guards created: the full topic names known to exist.
	topicsMu sync.Mutex
	created  map[string]bool

	published atomic.Uint64
	failed    atomic.Uint64
	wakes     atomic.Uint64
	notified  atomic.Uint64
	leader    atomic.Bool
	// listener is the backend PID of the leader's listening session, 0 when
	// it has none.
	listener atomic.Uint32
}

// NewRelay returns a relay over cfg, which it validates after filling in defaults.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Relay{cfg: cfg, log: cfg.Logger.With("component", "relay"), created: map[string]bool{}}
	transport, err := NewTransport("chom-relay", cfg.WriteTimeout, cfg.Security)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	r.transport = transport
	r.writer = &kafka.Writer{
		Addr:                   kafka.TCP(cfg.Brokers...),
		Balancer:               kafka.Murmur2Balancer{},
		RequiredAcks:           kafka.RequireAll,
		BatchSize:              cfg.BatchSize,
		BatchBytes:             maxBatchBytes,
		BatchTimeout:           cfg.BatchTimeout,
		MaxAttempts:            3,
		WriteBackoffMin:        50 * time.Millisecond,
		WriteBackoffMax:        500 * time.Millisecond,
		ReadTimeout:            cfg.WriteTimeout,
		WriteTimeout:           cfg.WriteTimeout,
		AllowAutoTopicCreation: false,
		Transport:              r.transport,
	}
	r.admin = &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Timeout: cfg.WriteTimeout, Transport: r.transport}
	r.breaker = newBreaker(cfg.BreakerFailures, cfg.BreakerTimeout, func(from, to gobreaker.State) {
		r.log.Warn("kafka circuit breaker", "from", from.String(), "to", to.String())
	})
	return r, nil
}

// newBreaker returns the relay's circuit breaker: open after failures publish
// calls in a row wrote nothing, probing again every timeout (zero: gobreaker's
// 60s); onChange, if not nil, hears every change of state.
func newBreaker(failures uint32, timeout time.Duration, onChange func(from, to gobreaker.State)) *gobreaker.CircuitBreaker[struct{}] {
	return gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "kafka",
		MaxRequests: 1,
		Timeout:     timeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		// The context of a stopping relay is no fault of Kafka's.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
		// A call that some partitions acknowledged reached Kafka: one broker of
		// a cluster is away and its partitions are moving to other leaders.
		// Opening the circuit then would stop the healthy partitions too.
		IsSuccessful: func(err error) bool { return err == nil || partlyWritten(err) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			if onChange != nil {
				onChange(from, to)
			}
		},
	})
}

// RelayStats are the relay's counters since it started, for metrics.
type RelayStats struct {
	// Published counts records Kafka acknowledged (a republished row counts again).
	Published uint64
	// Failed counts records whose publish failed (each attempt counts).
	Failed uint64
	// Leader is true while this relay holds the outbox lease.
	Leader bool
	// Breaker is the circuit breaker's state: "closed", "half-open" or "open".
	Breaker string
	// Notifications counts the commits' notifications the leader's listener
	// received (one per transaction that wrote the outbox).
	Notifications uint64
	// Wakes counts the times the leader looked at the outbox because a
	// commit notified it: notifications that arrive while it reads and
	// publishes coalesce into one wake.
	Wakes uint64
	// ListenerPID is the PostgreSQL backend of the leader's LISTEN session,
	// 0 while it has none (a standby, SQLite, the session being reconnected):
	// the leader then finds new rows by polling.
	ListenerPID uint32
}

// Stats returns the relay's counters. It is safe to call at any time.
func (r *Relay) Stats() RelayStats {
	return RelayStats{
		Published: r.published.Load(),
		Failed:    r.failed.Load(),
		Leader:    r.leader.Load(),
		Breaker:   r.breaker.State().String(),

		Notifications: r.notified.Load(),
		Wakes:         r.wakes.Load(),
		ListenerPID:   r.listener.Load(),
	}
}

// Lag returns the age of the oldest unpublished outbox row, zero when the outbox
// is drained.
func (r *Relay) Lag(ctx context.Context) (time.Duration, error) {
	return r.cfg.Store.OutboxLag(ctx)
}

// Run publishes until ctx ends, then returns nil after closing the writer. It
// survives Kafka and database outages (it logs, backs off and retries); it
// returns an error only when the writer cannot be closed cleanly.
func (r *Relay) Run(ctx context.Context) error {
	r.log.Info("relay started", "brokers", r.cfg.Brokers, "security", r.cfg.Security, "topic_prefix", r.cfg.TopicPrefix,
		"batch", r.cfg.BatchSize, "poll", r.cfg.PollInterval.String())
	pruned := make(chan struct{})
	go func() { defer close(pruned); r.pruneLoop(ctx) }()
	var attempt int
	for ctx.Err() == nil {
		lease, err := r.acquire(ctx)
		if err != nil {
			break // ctx ended
		}
		r.leader.Store(true)
		r.log.Info("relay is the leader")
		err = r.lead(ctx, lease)
		r.leader.Store(false)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if rerr := lease.Release(rctx); rerr != nil {
			r.log.Warn("release outbox lease", "error", rerr)
		}
		cancel()
		if ctx.Err() != nil {
			break
		}
		attempt++
		r.log.Error("relay lost the outbox lease; taking it again", "error", err)
		sleep(ctx, backoff(attempt, r.cfg.BreakerTimeout))
	}
	<-pruned
	if err := r.writer.Close(); err != nil {
		return fmt.Errorf("relay: close writer: %w", err)
	}
	r.log.Info("relay stopped")
	return nil
}

// acquire waits until this relay holds the outbox lease or ctx ends.
func (r *Relay) acquire(ctx context.Context) (*models.OutboxLease, error) {
	waiting := false
	for {
		lease, err := r.cfg.Store.TryOutboxLease(ctx)
		if lease != nil {
			return lease, nil
		}
		if err != nil && ctx.Err() == nil {
			r.log.Warn("take outbox lease", "error", err)
		} else if err == nil && !waiting {
			waiting = true
			r.log.Info("relay on standby: another relay holds the outbox lease")
		}
		if !sleep(ctx, r.cfg.LeaderPoll) {
			return nil, ctx.Err()
		}
	}
}

// errMark is a failure to mark published rows: a database problem, which ends
// the lease rather than the Kafka back-off.
var errMark = errors.New("mark published")

// lead publishes while this relay holds lease. It returns ctx's error when ctx
// ends, or the database error that cost the lease.
//
// It is a pipeline of three steps, each on a connection of its own: while
// Kafka takes one batch (the publish), the lease's session reads the next
// (the rows after it: unpublished and not already read), and the marker
// records the previous batch as published on a pool connection. A batch is
// sent only once the batch before it was acknowledged whole, and a failed
// publish throws the rows read meanwhile away, so no row leaves before an
// earlier row that failed; the rows acknowledged and not yet marked when the
// relay crashes are published again by the next leader.
//
// The read ahead starts with the publish and usually ends long before Kafka's
// acknowledgement; once it arrives, a read ahead short of a full batch is
// topped up by one more read (of the rows after it), so the rows that
// committed while Kafka took the batch ride the next one rather than waiting
// a whole cycle more (docs/performance.md).
func (r *Relay) lead(ctx context.Context, lease *models.OutboxLease) error {
	// wake holds at most one pending wake-up: however many commits notify
	// while the leader reads and publishes, it reads the outbox once more.
	wake := make(chan struct{}, 1)
	lctx, stopListening := context.WithCancel(ctx)
	listened := make(chan struct{})
	go func() { defer close(listened); r.listen(lctx, wake) }()
	defer func() { stopListening(); <-listened }()
	m := newMarker(ctx, r.cfg.Store.MarkOutboxPublished)
	defer m.close()

	var failures int
	rd := newReader(lease, r.cfg.BatchSize)
	// next holds the rows read while the previous batch was published, when
	// prefetched; an empty prefetch means the outbox was drained then.
	var next []models.OutboxEvent
	prefetched := false
	for {
		if err := m.failure(); err != nil {
			return fmt.Errorf("%w: %w", errMark, err)
		}
		if failures == 0 {
			// Create the known topics early, so consumers can subscribe before
			// the first event; failures are retried on the next round.
			_ = r.ensureTopics(ctx, r.knownTopics())
		}
		rows := next
		if !prefetched {
			var err error
			if rows, err = rd.read(ctx, m.outstanding()); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return err
			}
		}
		next, prefetched = nil, false
		if len(rows) == 0 {
			// Drained: a commit since the last read has notified, or the
			// poll interval will pass.
			r.idle(ctx, wake)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}

		published := make(chan error, 1)
		go func() { published <- r.publish(ctx, m, rows) }()
		// Meanwhile, read the next rows: those not being published or marked.
		skip := m.outstanding()
		for _, row := range rows {
			skip = append(skip, row.ID)
		}
		ahead, rerr := rd.read(ctx, skip)
		err := <-published
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, errMark):
			return err
		case err != nil:
			// The rows read ahead are dropped: none may leave before the
			// failed rows, which the next read (a sweep) returns first.
			rd.restart()
			failures++
			if errors.Is(err, errPartial) {
				// Progress: the failed partitions' leaders are moving (a broker
				// lost); retry them soon, and let the writer's own back-off pace it.
				failures = 1
			}
			d := backoff(failures, r.cfg.BreakerTimeout)
			if !errors.Is(err, gobreaker.ErrOpenState) {
				r.log.Warn("publish failed; backing off", "error", err, "rows", len(rows), "retry_in", d.String())
			}
			sleep(ctx, d)
			continue
		case rerr != nil:
			return rerr // the lease's session is lost
		}
		if failures > 0 {
			r.log.Info("publishing again", "after_failures", failures)
			failures = 0
		}
		if len(ahead) > 0 && len(ahead) < r.cfg.BatchSize {
			// Top up: the rows that committed while Kafka took the batch
			// ride the next one, rather than a whole cycle later. (An empty
			// read ahead needs none: the commits' wake-up reads them.)
			skip := m.outstanding()
			for _, row := range ahead {
				skip = append(skip, row.ID)
			}
			more, err := rd.readN(ctx, skip, r.cfg.BatchSize-len(ahead))
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return err // the lease's session is lost
			}
			ahead = append(ahead, more...)
		}
		next, prefetched = ahead, true
	}
}

// idle waits, with the outbox drained, until a commit wakes the leader, the
// poll interval passes, or ctx ends.
func (r *Relay) idle(ctx context.Context, wake <-chan struct{}) {
	t := time.NewTimer(r.cfg.PollInterval)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-wake:
		r.wakes.Add(1)
	case <-t.C:
	}
}

// listen keeps a LISTEN session on the outbox channel while ctx lasts, and
// turns each notification into a pending wake-up of the leader (wake holds at
// most one, so a burst coalesces). When the session is lost (the server
// terminated it, the network dropped) it reconnects with the relay's
// jittered back-off, from 100ms doubling up to BreakerTimeout; the leader
// polls meanwhile,
// and a wake-up on every (re)connection covers the rows committed while
// nobody listened. On SQLite it returns at once: the leader polls.
func (r *Relay) listen(ctx context.Context, wake chan<- struct{}) {
	var attempt int
	for ctx.Err() == nil {
		l, err := r.cfg.Store.ListenOutbox(ctx)
		if errors.Is(err, models.ErrListenUnsupported) {
			return
		}
		if err == nil {
			since := time.Now()
			r.listener.Store(l.PID())
			if attempt > 0 {
				r.log.Info("listening for outbox commits again", "pid", l.PID(), "after_attempts", attempt)
			} else {
				r.log.Info("listening for outbox commits", "pid", l.PID(), "channel", models.OutboxChannel)
			}
			notify(wake)
			for err == nil {
				if err = l.Wait(ctx); err == nil {
					r.notified.Add(1)
					notify(wake)
				}
			}
			r.listener.Store(0)
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = l.Close(cctx) // the session is gone or ctx ended: nothing to keep
			cancel()
			if time.Since(since) > r.cfg.BreakerTimeout {
				attempt = 0 // a session that lived is not a failing server
			}
		}
		if ctx.Err() != nil {
			return
		}
		attempt++
		d := backoff(attempt, r.cfg.BreakerTimeout)
		r.log.Warn("outbox listener lost; polling until it is back", "error", err,
			"poll", r.cfg.PollInterval.String(), "retry_in", d.String())
		sleep(ctx, d)
	}
}

// notify leaves a wake-up pending in wake unless one already is.
func notify(wake chan<- struct{}) {
	select {
	case wake <- struct{}{}:
	default:
	}
}

// publish sends rows in calls bounded by the writer's batch limits, and hands
// the rows Kafka acknowledged to the marker once at the end, so the batch is
// marked by one statement (or markSplit) while the next is read and sent. It
// stops at the first failure, so no row is published before an earlier
// unmarked one is.
func (r *Relay) publish(ctx context.Context, m *marker, rows []models.OutboxEvent) error {
	acked := make([]int64, 0, len(rows))
	err := r.send(ctx, rows, func(ids []int64) { acked = append(acked, ids...) })
	if len(acked) > 0 {
		if merr := m.submit(ctx, acked); merr != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%w: %w", errMark, merr)
		}
	}
	return err
}

// send writes rows in calls bounded by the writer's batch limits, calling
// acked with the IDs of each call's rows Kafka acknowledged, and stops at the
// first call that failed.
func (r *Relay) send(ctx context.Context, rows []models.OutboxEvent, acked func([]int64)) error {
	for len(rows) > 0 {
		n, msgs := r.chunk(rows)
		chunk := rows[:n]
		rows = rows[n:]
		if err := r.ensureTopics(ctx, topicsOf(msgs)); err != nil {
			return err
		}
		_, err := r.breaker.Execute(func() (struct{}, error) {
			return struct{}{}, r.writer.WriteMessages(ctx, msgs...)
		})
		ok := chunkSucceeded(chunk, err)
		if err != nil && len(ok) > 0 {
			r.log.Warn("publish partly failed; marking the acknowledged rows",
				"acknowledged", len(ok), "failed", n-len(ok), "error", err)
		}
		if len(ok) > 0 {
			r.published.Add(uint64(len(ok)))
			acked(ok)
		}
		if err != nil {
			if !errors.Is(err, gobreaker.ErrOpenState) {
				r.failed.Add(uint64(n - len(ok)))
			}
			if len(ok) > 0 {
				return fmt.Errorf("publish %d events: %w: %w", n, errPartial, err)
			}
			return fmt.Errorf("publish %d events: %w", n, err)
		}
	}
	return nil
}

// chunk returns how many leading rows fit one publish call, and their records.
func (r *Relay) chunk(rows []models.OutboxEvent) (int, []kafka.Message) {
	msgs := make([]kafka.Message, 0, len(rows))
	var bytes int
	for _, row := range rows {
		m := Message(r.cfg.TopicPrefix, row)
		size := recordSize(m)
		if len(msgs) > 0 && bytes+size > maxBatchBytes {
			break
		}
		bytes += size
		msgs = append(msgs, m)
	}
	return len(msgs), msgs
}

// recordSize over-estimates what kafka-go counts for m against BatchBytes.
func recordSize(m kafka.Message) int {
	n := recordOverhead + len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += 10 + len(h.Key) + len(h.Value)
	}
	return n
}

// errPartial marks a publish call that Kafka acknowledged for some partitions
// and not others.
var errPartial = errors.New("partly acknowledged")

// partlyWritten reports whether err is a kafka-go write error in which some
// records were written.
func partlyWritten(err error) bool {
	var werrs kafka.WriteErrors
	if !errors.As(err, &werrs) {
		return false
	}
	return slices.ContainsFunc(werrs, func(e error) bool { return e == nil })
}

// chunkSucceeded returns the IDs of the rows of chunk that Kafka acknowledged
// when the call returned err: all on success, those whose partition succeeded
// on a partial failure (kafka.WriteErrors), none otherwise.
func chunkSucceeded(chunk []models.OutboxEvent, err error) []int64 {
	var werrs kafka.WriteErrors
	switch {
	case err == nil:
	case errors.As(err, &werrs) && len(werrs) == len(chunk):
	default:
		return nil
	}
	ids := make([]int64, 0, len(chunk))
	for i, row := range chunk {
		if err == nil || werrs[i] == nil {
			ids = append(ids, row.ID)
		}
	}
	return ids
}

// knownTopics are the full names of the topics CHOM publishes to.
func (r *Relay) knownTopics() []string {
	var out []string
	for _, t := range Topics() {
		out = append(out, FullTopic(r.cfg.TopicPrefix, t))
	}
	return out
}

// ensureTopics creates the topics not yet known to exist, through the breaker.
func (r *Relay) ensureTopics(ctx context.Context, topics []string) error {
	r.topicsMu.Lock()
	var missing []string
	for _, t := range topics {
		if !r.created[t] {
			missing = append(missing, t)
		}
	}
	r.topicsMu.Unlock()
	if len(missing) == 0 {
		return nil
	}
	_, err := r.breaker.Execute(func() (struct{}, error) {
		return struct{}{}, EnsureTopics(ctx, r.admin, r.cfg.Topics, missing...)
	})
	if err != nil {
		return err
	}
	r.topicsMu.Lock()
	for _, t := range missing {
		r.created[t] = true
	}
	r.topicsMu.Unlock()
	r.log.Info("topics ready", "topics", missing)
	return nil
}

// pruneLoop deletes published rows older than Retention every PruneInterval
// while this relay is the leader, until ctx ends. It runs beside publishing, so
// a slow delete never holds events back; a failure is logged and retried at the
// next interval.
func (r *Relay) pruneLoop(ctx context.Context) {
	var last time.Time
	tick := time.NewTicker(min(r.cfg.PruneInterval, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !r.leader.Load() || time.Since(last) < r.cfg.PruneInterval {
			continue
		}
		last = time.Now()
		r.prune(ctx)
	}
}

// prune deletes the published rows older than Retention once.
func (r *Relay) prune(ctx context.Context) {
	cutoff := time.Now().Add(-r.cfg.Retention)
	n, err := r.cfg.Store.PruneOutbox(ctx, cutoff, 5000)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("prune outbox", "error", err)
		}
		return
	}
	if n > 0 {
		r.log.Info("pruned published outbox events", "rows", n, "published_before", cutoff.UTC().Format(time.RFC3339))
	}
}

// topicsOf returns the distinct topics of msgs.
func topicsOf(msgs []kafka.Message) []string {
	var out []string
	for _, m := range msgs {
		if !slices.Contains(out, m.Topic) {
			out = append(out, m.Topic)
		}
	}
	return out
}

// backoff returns the delay before retry number attempt (1, 2, …): exponential
// from 100ms, capped at limit, with full jitter over its upper half.
func backoff(attempt int, limit time.Duration) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return d/2 + rand.N(d/2+1)
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
