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

	"github.com/chomhq/chom/internal/groupcommit"
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

// HealthWriter group-commits health checks (internal/groupcommit): the checks
// that concurrent handlers record within MaxWait of each other, or while a
// transaction is in flight, are written in one transaction — one locking read
// of their servers, one read of prior checks, one multi-row INSERT of the
// checks, one UPDATE of the servers, one INSERT of the events — instead of
// seven statements each.
//
// Semantics are Store.RecordHealthCheck's, check by check: each server's row
// is locked (in ID order, so batches never deadlock) while decide sees it; a
// check whose (server, key) is recorded already is a Duplicate that writes
// nothing; a status change writes its events in the same transaction. Two
// checks of one server in a batch are not merged: the later one is written
// after the batch, alone. When a batch fails as a whole, each of its checks is
// written alone through Store.RecordHealthCheck, so one bad check cannot fail
// its neighbours. On SQLite (one writer, no row locks) every check is written
// alone. It needs no Run and no Close: a committer runs only while checks
// wait.
type HealthWriter struct {
	store *Store
	batch *groupcommit.Batcher[*pendingCheck, *HealthRecorded]

	batches, batched atomic.Uint64
}

// Stats returns how many batch transactions committed and how many checks
// they held.
func (w *HealthWriter) Stats() (batches, checks uint64) {
	return w.batches.Load(), w.batched.Load()
}

// pendingCheck is one check waiting for its batch.
type pendingCheck struct {
	ctx    context.Context
	check  *VPSHealthCheck
	decide func(*VPSServer) (HealthDecision, error)
}

type checkOutcome struct {
	rec *HealthRecorded
	err error
}

// NewHealthWriter validates cfg and returns a HealthWriter.
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
	w := &HealthWriter{store: cfg.Store}
	var err error
	w.batch, err = groupcommit.New(groupcommit.Config[*pendingCheck, *HealthRecorded]{
		Commit: w.commit,
		CommitOne: func(ctx context.Context, p *pendingCheck) (*HealthRecorded, error) {
			return w.store.RecordHealthCheck(ctx, p.check, p.decide)
		},
		OnBatchError: func(size int, err error) {
			cfg.Logger.Warn("batched health checks failed; writing them one by one", "size", size, "error", err)
		},
		MaxBatch: cfg.MaxBatch, MaxWait: cfg.MaxWait, Timeout: cfg.CommitTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("models: HealthWriter: %w", err)
	}
	return w, nil
}

// RecordHealthCheck is Store.RecordHealthCheck, group-committed with the
// checks other goroutines record meanwhile. It waits for the batch's commit
// even when ctx ends once its batch has taken the check: the caller must not
// go on before knowing whether it was written.
func (w *HealthWriter) RecordHealthCheck(ctx context.Context, check *VPSHealthCheck,
	decide func(v *VPSServer) (HealthDecision, error)) (*HealthRecorded, error) {
	if !w.store.pg {
		return w.store.RecordHealthCheck(ctx, check, decide)
	}
	if check.VPSID == "" || check.CheckKey == "" {
		return nil, errors.New("record health check: VPSID and CheckKey are required")
	}
	return w.batch.Submit(ctx, &pendingCheck{ctx: ctx, check: check, decide: decide})
}

// commit writes one batch and answers each of its checks; an error means the
// batch transaction wrote nothing (its checks are then written one by one).
func (w *HealthWriter) commit(ctx context.Context, batch []*pendingCheck) ([]groupcommit.Result[*HealthRecorded], error) {
	res := make([]groupcommit.Result[*HealthRecorded], len(batch))
	var live, later []int // indexes in batch
	seen := make(map[string]bool, len(batch))
	for i, p := range batch {
		switch {
		case p.ctx.Err() != nil:
			res[i].Err = p.ctx.Err() // the caller left before anything was written
		case seen[p.check.VPSID]:
			later = append(later, i) // a second check of a server: after this one, alone
		default:
			seen[p.check.VPSID] = true
			live = append(live, i)
		}
	}
	if len(live) > 0 {
		checks := make([]*pendingCheck, len(live))
		for j, i := range live {
			checks[j] = batch[i]
		}
		outcomes, err := w.store.recordHealthChecks(ctx, checks)
		if err != nil {
			return nil, err
		}
		w.batches.Add(1)
		w.batched.Add(uint64(len(live)))
		for j, i := range live {
			res[i] = groupcommit.Result[*HealthRecorded]{Value: outcomes[j].rec, Err: outcomes[j].err}
		}
	}
	for _, i := range later {
		rec, err := w.store.RecordHealthCheck(ctx, batch[i].check, batch[i].decide)
		res[i] = groupcommit.Result[*HealthRecorded]{Value: rec, Err: err}
	}
	return res, nil
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
