package models

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/uptrace/bun"
)

// HealthWriterConfig configures a HealthWriter.
type HealthWriterConfig struct {
	Store  *Store
	Logger *slog.Logger
	// MaxBatch is the most checks committed in one transaction. Default
	// DefaultHealthBatch.
	MaxBatch int
	// MaxWait is how long the first check of a batch waits for others
	// before the batch commits. Default DefaultHealthBatchWait; negative
	// means none (a batch is whatever waits when the committer is free).
	MaxWait time.Duration
	// CommitTimeout bounds one batch transaction. Default 5s.
	CommitTimeout time.Duration
}

// DefaultHealthBatch is HealthWriterConfig.MaxBatch's default: more than a
// worker's checks in flight (CHOM_WORKER_CONCURRENCY), so the whole backlog
// commits at once.
const DefaultHealthBatch = 256

// DefaultHealthBatchWait is HealthWriterConfig.MaxWait's default. Without a
// wait, batches held one or two checks at the rates a sweep runs (a few
// hundred checks/s per worker against a commit of about 2 ms), so the
// database cost per check stayed what it was; 20 ms gathers several per
// batch, and a health check is not latency-bound: it adds at most 20 ms to a
// check that took a probe's round trips.
const DefaultHealthBatchWait = 20 * time.Millisecond

// HealthWriter group-commits health checks: the checks that concurrent
// handlers record while a transaction is in flight are gathered (no timer:
// whatever waits when the committer is free forms the next batch) and written
// in one transaction — one locking read of their servers, one read of prior
// checks, one multi-row INSERT of the checks, one UPDATE of the servers, one
// INSERT of the events — instead of seven statements each.
//
// Semantics are Store.RecordHealthCheck's, check by check: each server's row
// is locked (in ID order, so batches never deadlock) while decide sees it; a
// check whose (server, key) is recorded already is a Duplicate that writes
// nothing; a status change writes its events in the same transaction. Two
// checks of one server in a batch are not merged: the later one is written
// after the batch, alone. When a batch fails as a whole, each of its checks is
// written alone through Store.RecordHealthCheck, so one bad check cannot fail
// its neighbours. On SQLite (one writer, no row locks) every check is written
// alone.
type HealthWriter struct {
	store   *Store
	log     *slog.Logger
	max     int
	wait    time.Duration
	timeout time.Duration
	in      chan *pendingCheck
	running atomic.Bool
	stopped chan struct{} // closed when Run has returned

	batches, batched atomic.Uint64
}

// Stats returns how many batch transactions committed and how many checks
// they held.
func (w *HealthWriter) Stats() (batches, checks uint64) {
	return w.batches.Load(), w.batched.Load()
}

type pendingCheck struct {
	ctx    context.Context
	check  *VPSHealthCheck
	decide func(*VPSServer) (HealthDecision, error)
	done   chan checkOutcome
	// taken is set once, by whoever writes the check: the committer, Run's
	// final drain, or the caller when Run has stopped.
	taken atomic.Bool
}

type checkOutcome struct {
	rec *HealthRecorded
	err error
}

// NewHealthWriter validates cfg; call Run to start committing. Until Run
// starts (and after it returns) each check is written alone by its caller.
func NewHealthWriter(cfg HealthWriterConfig) (*HealthWriter, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("models: HealthWriter needs a Store"))
	}
	if cfg.Logger == nil {
		errs = append(errs, errors.New("models: HealthWriter needs a Logger"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultHealthBatch
	}
	if cfg.CommitTimeout <= 0 {
		cfg.CommitTimeout = 5 * time.Second
	}
	switch {
	case cfg.MaxWait == 0:
		cfg.MaxWait = DefaultHealthBatchWait
	case cfg.MaxWait < 0:
		cfg.MaxWait = 0
	}
	return &HealthWriter{store: cfg.Store, log: cfg.Logger, max: cfg.MaxBatch, wait: cfg.MaxWait, timeout: cfg.CommitTimeout,
		in: make(chan *pendingCheck, cfg.MaxBatch), stopped: make(chan struct{})}, nil
}

// Run commits batches until ctx ends; checks still queued then are written
// one by one, and checks recorded after Run returns are written by their
// caller, so nothing submitted is dropped. Run must be called once.
func (w *HealthWriter) Run(ctx context.Context) error {
	defer close(w.stopped)
	w.running.Store(true)
	defer w.running.Store(false)
	batch := make([]*pendingCheck, 0, w.max)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			for {
				select {
				case p := <-w.in:
					if p.taken.CompareAndSwap(false, true) {
						rec, err := w.store.RecordHealthCheck(context.WithoutCancel(p.ctx), p.check, p.decide)
						p.done <- checkOutcome{rec, err}
					}
				default:
					return nil
				}
			}
		case p := <-w.in:
			if p.taken.CompareAndSwap(false, true) {
				batch = append(batch, p)
			}
		}
		var (
			timer  *time.Timer
			linger <-chan time.Time
		)
		if w.wait > 0 {
			timer = time.NewTimer(w.wait)
			linger = timer.C
		}
	fill:
		for len(batch) < w.max {
			select {
			case p := <-w.in:
				if p.taken.CompareAndSwap(false, true) {
					batch = append(batch, p)
				}
				continue
			default:
			}
			if linger == nil {
				break fill
			}
			select {
			case p := <-w.in:
				if p.taken.CompareAndSwap(false, true) {
					batch = append(batch, p)
				}
			case <-linger:
				break fill
			case <-ctx.Done():
				break fill
			}
		}
		if timer != nil {
			timer.Stop()
		}
		if len(batch) > 0 {
			w.commit(context.WithoutCancel(ctx), batch)
		}
	}
}

// RecordHealthCheck is Store.RecordHealthCheck, group-committed with the
// checks other goroutines record meanwhile. It waits for the batch's commit
// even when ctx ends once the check is submitted: the caller must not go on
// before knowing whether it was written.
func (w *HealthWriter) RecordHealthCheck(ctx context.Context, check *VPSHealthCheck,
	decide func(v *VPSServer) (HealthDecision, error)) (*HealthRecorded, error) {
	if !w.store.pg || !w.running.Load() {
		return w.store.RecordHealthCheck(ctx, check, decide)
	}
	if check.VPSID == "" || check.CheckKey == "" {
		return nil, errors.New("record health check: VPSID and CheckKey are required")
	}
	req := &pendingCheck{ctx: ctx, check: check, decide: decide, done: make(chan checkOutcome, 1)}
	select {
	case w.in <- req:
	case <-w.stopped:
		return w.store.RecordHealthCheck(ctx, check, decide)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case out := <-req.done:
		return out.rec, out.err
	case <-w.stopped:
		if req.taken.CompareAndSwap(false, true) {
			return w.store.RecordHealthCheck(context.WithoutCancel(ctx), check, decide) // queued after the final drain
		}
		out := <-req.done
		return out.rec, out.err
	}
}

// commit writes one batch and answers each of its checks.
func (w *HealthWriter) commit(ctx context.Context, batch []*pendingCheck) {
	var live, later []*pendingCheck
	seen := make(map[string]bool, len(batch))
	for _, p := range batch {
		switch {
		case p.ctx.Err() != nil:
			p.done <- checkOutcome{nil, p.ctx.Err()} // the caller left before anything was written
		case seen[p.check.VPSID]:
			later = append(later, p) // a second check of a server: after this one, alone
		default:
			seen[p.check.VPSID] = true
			live = append(live, p)
		}
	}
	if len(live) > 0 {
		cctx, cancel := context.WithTimeout(ctx, w.timeout)
		outcomes, err := w.store.recordHealthChecks(cctx, live)
		cancel()
		if err != nil {
			w.log.Warn("batched health checks failed; writing them one by one", "size", len(live), "error", err)
			later = append(live, later...)
		} else {
			w.batches.Add(1)
			w.batched.Add(uint64(len(live)))
			for i, p := range live {
				p.done <- outcomes[i]
			}
		}
	}
	for _, p := range later {
		rec, err := w.store.RecordHealthCheck(ctx, p.check, p.decide)
		p.done <- checkOutcome{rec, err}
	}
}

// recordHealthChecks is RecordHealthCheck for checks of distinct servers in
// one transaction. It returns one outcome per check; an error means nothing
// was written.
func (s *Store) recordHealthChecks(ctx context.Context, batch []*pendingCheck) ([]checkOutcome, error) {
	now := s.nowUTC()
	ids := make([]string, 0, len(batch))
	keys := make([]string, 0, len(batch))
	for _, p := range batch {
		if p.check.CheckedAt.IsZero() {
			p.check.CheckedAt = now
		}
		p.check.CheckedAt = p.check.CheckedAt.UTC().Truncate(time.Microsecond)
		ids = append(ids, p.check.VPSID)
		if !slices.Contains(keys, p.check.CheckKey) {
			keys = append(keys, p.check.CheckKey)
		}
	}
	slices.Sort(ids)
	var out []checkOutcome
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		out = make([]checkOutcome, len(batch))
		var servers []VPSServer
		if err := tx.NewSelect().Model(&servers).Where("id IN (?)", bun.In(ids)).OrderExpr("id").For("UPDATE").Scan(ctx); err != nil {
			return fmt.Errorf("lock %d servers: %w", len(ids), err)
		}
		byID := make(map[string]*VPSServer, len(servers))
		for i := range servers {
			byID[servers[i].ID] = &servers[i]
		}
		var prior []VPSHealthCheck
		if err := tx.NewSelect().Model(&prior).Where("vps_id IN (?) AND check_key IN (?)", bun.In(ids), bun.In(keys)).Scan(ctx); err != nil {
			return fmt.Errorf("look up prior health checks: %w", err)
		}
		priorOf := make(map[[2]string]*VPSHealthCheck, len(prior))
		for i := range prior {
			priorOf[[2]string{prior[i].VPSID, prior[i].CheckKey}] = &prior[i]
		}
		var (
			rows   []*VPSHealthCheck
			write  []int // indexes in batch of rows
			decs   []HealthDecision
			events []OutboxEvent
		)
		for i, p := range batch {
			v := byID[p.check.VPSID]
			if v == nil {
				out[i].err = notFound(sql.ErrNoRows, "vps", p.check.VPSID)
				continue
			}
			if pc := priorOf[[2]string{p.check.VPSID, p.check.CheckKey}]; pc != nil {
				out[i].rec = &HealthRecorded{Before: v, Check: pc, Duplicate: true}
				continue
			}
			d, err := p.decide(v)
			if err != nil {
				out[i].err = err
				continue
			}
			p.check.StatusAfter = d.Next.Status
			rows, write, decs = append(rows, p.check), append(write, i), append(decs, d)
		}
		if len(rows) == 0 {
			return nil
		}
		var inserted []struct {
			ID    int64  `bun:"id"`
			VPSID string `bun:"vps_id"`
		}
		if err := tx.NewInsert().Model(&rows).On("CONFLICT DO NOTHING").Returning("id, vps_id").Scan(ctx, &inserted); err != nil {
			return fmt.Errorf("insert %d health checks: %w", len(rows), err)
		}
		newID := make(map[string]int64, len(inserted))
		for _, r := range inserted {
			newID[r.VPSID] = r.ID
		}
		upd := make([]VPSServer, 0, len(rows))
		for k, i := range write {
			p, d, v := batch[i], decs[k], byID[batch[i].check.VPSID]
			id, ok := newID[p.check.VPSID]
			if !ok {
				// Recorded meanwhile by a writer that holds no row lock: as
				// RecordHealthCheck, a duplicate, read back after the commit.
				out[i].err = errDuplicateCheck
				continue
			}
			p.check.ID = id
			n := *v
			n.HealthStatus, n.HealthCandidate, n.HealthStreak = d.Next.Status, d.Next.Candidate, d.Next.Streak
			n.HealthCheckedAt, n.HealthReason = &p.check.CheckedAt, p.check.Reason
			if d.Next.Status != v.HealthStatus {
				n.UpdatedAt = now
			}
			if d.PinHostKey != "" && v.HostKey == "" {
				n.HostKey = d.PinHostKey
			}
			upd = append(upd, n)
			events = append(events, d.Events...)
			out[i].rec = &HealthRecorded{Before: v, Check: p.check}
		}
		if len(upd) > 0 {
			if _, err := tx.NewUpdate().Model(&upd).Column("health_status", "health_candidate", "health_streak",
				"health_checked_at", "health_reason", "updated_at", "host_key").Bulk().Exec(ctx); err != nil {
				return fmt.Errorf("update health of %d servers: %w", len(upd), err)
			}
		}
		return s.insertEvents(ctx, tx, events, now)
	})
	if err != nil {
		return nil, err
	}
	for i, p := range batch {
		if errors.Is(out[i].err, errDuplicateCheck) {
			prior, err := s.HealthCheckByKey(ctx, p.check.VPSID, p.check.CheckKey)
			out[i] = checkOutcome{err: err}
			if err == nil {
				out[i].rec = &HealthRecorded{Check: prior, Duplicate: true}
			}
		}
	}
	return out, nil
}
