package models

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uptrace/bun"
)

// ReadsConfig configures Reads.
type ReadsConfig struct {
	// Primary is the store over the database that takes writes; required.
	Primary *Store
	// Replica is a hot standby of Primary's PostgreSQL database (streaming
	// replication); required.
	Replica *bun.DB
	// ProbeTimeout bounds one freshness probe (a round trip to each
	// database). Default 1s.
	ProbeTimeout time.Duration
	// Backoff is how long reads skip the replica, without probing it, after
	// it could not be reached: a replica that does not answer (a network
	// partition rather than a refused connection) then costs one
	// ProbeTimeout per Backoff, not one per read. Default 5s.
	Backoff time.Duration
	// Logger reports a replica that cannot be probed, at most once a minute;
	// required.
	Logger *slog.Logger
}

// Validate reports every missing or invalid field at once.
func (c ReadsConfig) Validate() error {
	var errs []error
	if c.Primary == nil {
		errs = append(errs, errors.New("models: ReadsConfig.Primary is required"))
	} else if !c.Primary.pg {
		errs = append(errs, errors.New("models: ReadsConfig.Primary must be a PostgreSQL store (a read replica is PostgreSQL streaming replication)"))
	}
	if c.Replica == nil {
		errs = append(errs, errors.New("models: ReadsConfig.Replica is required"))
	} else if !IsPostgres(c.Replica) {
		errs = append(errs, errors.New("models: ReadsConfig.Replica must be a PostgreSQL database"))
	}
	if c.ProbeTimeout < 0 || c.Backoff < 0 {
		errs = append(errs, errors.New("models: ReadsConfig.ProbeTimeout and Backoff must not be negative"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("models: ReadsConfig.Logger is required"))
	}
	return errors.Join(errs...)
}

// Reads sends the API's reads to a streaming replica when, and only when, the
// replica has replayed every transaction the primary had committed when the
// read arrived; otherwise to the primary. A read therefore sees at least what
// the same read on the primary would have seen at its arrival: a caller
// never gets a 404 for an operation it was just handed, never sees a status
// go back (whichever process answered before), never misses a site it just
// created from its list — with no token for the client to carry.
//
// The check (a probe) is two round trips: pg_current_wal_insert_lsn() on the
// primary, then pg_last_wal_replay_lsn() on the replica compared with it.
// Concurrent reads share probes: a read joins the next probe to start (never
// one already running, which began before the read arrived and so may miss
// its caller's last commit), so under load there is at most one probe in
// flight and one batch waiting, whatever the request rate. A replica that is
// behind, down, or no longer in recovery (promoted) sends reads to the
// primary (one that cannot be reached is not probed again for Backoff); a
// primary that cannot be probed does too, so the read fails the way it would
// without a replica.
type Reads struct {
	primary, replica *Store
	timeout, backoff time.Duration
	log              *slog.Logger
	// skipUntil is when, in unix nanoseconds, the replica is probed again
	// after it could not be reached.
	skipUntil atomic.Int64

	// busy holds the one probe in flight.
	busy chan struct{}
	mu   sync.Mutex
	open *probe // the batch of reads waiting for the next probe; nil: none

	toReplica, toPrimary atomic.Uint64
	lastWarn             atomic.Int64 // unix nanoseconds of the last probe warning
}

// probe is one freshness check shared by the reads that joined it before it
// started.
type probe struct {
	done  chan struct{}
	fresh bool
}

// NewReads returns the read router over cfg's primary store and replica
// database.
func NewReads(cfg ReadsConfig) (*Reads, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = time.Second
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = 5 * time.Second
	}
	// The replica store shares the primary's clock and quota defaults; it is
	// only ever read.
	p := cfg.Primary
	replica := &Store{db: cfg.Replica, now: p.now, idempotencyTTL: p.idempotencyTTL, pg: true, quotaDefaults: p.quotaDefaults}
	return &Reads{primary: cfg.Primary, replica: replica, timeout: cfg.ProbeTimeout, backoff: cfg.Backoff, log: cfg.Logger,
		busy: make(chan struct{}, 1)}, nil
}

// Store returns the store a read arriving now must use: the replica's when
// it is fresh (see Reads), else the primary's. It waits for at most one probe
// in flight plus its own (each bounded by ProbeTimeout); when ctx ends first
// it returns the primary's.
func (r *Reads) Store(ctx context.Context) *Store {
	if r.fresh(ctx) {
		r.toReplica.Add(1)
		return r.replica
	}
	r.toPrimary.Add(1)
	return r.primary
}

// Routed returns how many reads went to the replica and to the primary since
// the router was made.
func (r *Reads) Routed() (replica, primary uint64) {
	return r.toReplica.Load(), r.toPrimary.Load()
}

// fresh reports whether the replica has replayed everything the primary had
// committed when fresh was called.
func (r *Reads) fresh(ctx context.Context) bool {
	if time.Now().UnixNano() < r.skipUntil.Load() {
		return false
	}
	r.mu.Lock()
	p := r.open
	leader := p == nil
	if leader {
		p = &probe{done: make(chan struct{})}
		r.open = p
	}
	r.mu.Unlock()
	if leader {
		// Wait out the probe in flight, close the batch (later reads form
		// the next one), then probe for every read in it. Not bound to this
		// read's ctx: the others in the batch wait for the answer too.
		r.busy <- struct{}{}
		r.mu.Lock()
		r.open = nil
		r.mu.Unlock()
		p.fresh = r.probe(context.WithoutCancel(ctx))
		<-r.busy
		close(p.done)
	}
	select {
	case <-p.done:
		return p.fresh
	case <-ctx.Done():
		return false
	}
}

// probe compares the replica's replay position with the primary's current
// WAL insert position (which covers every commit already acknowledged, with
// any synchronous_commit setting).
func (r *Reads) probe(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var lsn string
	if err := r.primary.db.QueryRowContext(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&lsn); err != nil {
		r.warn("read replica: cannot read the primary's WAL position; reads go to the primary", err)
		return false
	}
	var recovering, replayed bool
	err := r.replica.db.QueryRowContext(ctx,
		"SELECT pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn() >= ?::pg_lsn, false)", lsn).Scan(&recovering, &replayed)
	if err != nil {
		r.skipUntil.Store(time.Now().Add(r.backoff).UnixNano())
		r.warn("read replica: cannot read its replay position; reads go to the primary", err)
		return false
	}
	// A server out of recovery is a primary (a promoted standby, or a wrong
	// URL): its data may have forked from the primary's, so it is not used.
	return recovering && replayed
}

// warn logs a failed probe at most once a minute.
func (r *Reads) warn(msg string, err error) {
	now := time.Now().UnixNano()
	last := r.lastWarn.Load()
	if now-last < int64(time.Minute) || !r.lastWarn.CompareAndSwap(last, now) {
		return
	}
	r.log.Warn(msg, "error", fmt.Errorf("probe: %w", err))
}
