// Package groupcommit commits together what concurrent callers submit while a
// commit is in flight: the requests of a busy API in one transaction, the
// scripts of many enqueues in one Redis pipeline. It is CHOM's one group-commit
// mechanism; the accept path (models.SiteAcceptor), the health checks
// (models.HealthWriter), the provision successes (jobs) and the enqueue
// pipeline (queue) are each a Commit function over it.
//
// The shape, whoever uses it: a caller submits an item and waits for its
// answer. The first caller that finds no commit in flight starts a committer,
// a goroutine that takes whatever waits (up to MaxBatch), commits it in one
// call, answers each item, and goes on with whatever arrived meanwhile until
// nothing waits; then it ends. So a lone item commits at once, and under load
// one commit serves every item that arrived while the previous one was in
// flight. There is no timer unless MaxWait asks for one, and no goroutine
// while idle, so a Batcher needs no Run and no Close.
package groupcommit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Result answers one item of a batch.
type Result[R any] struct {
	Value R
	Err   error
}

// Config configures a Batcher of items T answered with R.
type Config[T, R any] struct {
	// Commit commits a batch in one transaction (or pipeline) and answers
	// each item: out[i] answers batch[i], and len(out) must be len(batch).
	// An error means nothing of the batch was written; each item is then
	// committed alone with CommitOne, so one bad item cannot fail its
	// neighbours. Required.
	Commit func(ctx context.Context, batch []T) ([]Result[R], error)
	// CommitOne commits one item alone, after its batch failed as a whole.
	// Nil: the batch's error answers every item.
	CommitOne func(ctx context.Context, item T) (R, error)
	// OnBatchError, if set, is told of each batch that failed as a whole
	// (to log it) before its items are committed alone.
	OnBatchError func(size int, err error)
	// MaxBatch is the most items one commit carries. Default 256.
	MaxBatch int
	// MaxWait is how long a committer waits for MaxBatch items before it
	// commits fewer. Zero: no wait; a batch is whatever waits when the
	// committer is free.
	MaxWait time.Duration
	// Committers is how many commits may be in flight at once. Default 1.
	Committers int
	// Timeout bounds one Commit (and each CommitOne after it). Zero: the
	// batch's context bounds it alone.
	Timeout time.Duration
	// Detach lets a caller stop waiting when its context ends, even while
	// its batch commits: Submit then answers the context's error, and the
	// item may still be committed. Without it, a caller whose item a
	// committer has taken waits for the answer whatever its context does:
	// the item may be committing, and the caller must not go on before
	// knowing.
	Detach bool
}

// DefaultMaxBatch is Config.MaxBatch's default.
const DefaultMaxBatch = 256

// Batcher group-commits items; see the package comment. Its zero value is not
// usable: build one with New.
type Batcher[T, R any] struct {
	cfg Config[T, R]

	mu      sync.Mutex
	waiting []*pending[T, R]
	running int           // committers started and not yet ended
	full    chan struct{} // signalled when MaxBatch items wait (MaxWait only)
}

// pending is one submitted item. Its fields after item are guarded by the
// Batcher's mu until answer is closed.
type pending[T, R any] struct {
	ctx  context.Context
	item T
	// left is set when the caller stopped waiting before a committer took
	// the item; committers skip it.
	left   bool
	result Result[R]
	answer chan struct{} // closed once result is set
}

// New validates cfg and returns a Batcher.
func New[T, R any](cfg Config[T, R]) (*Batcher[T, R], error) {
	var errs []error
	if cfg.Commit == nil {
		errs = append(errs, errors.New("groupcommit: Config.Commit is required"))
	}
	if cfg.MaxBatch < 0 || cfg.Committers < 0 || cfg.MaxWait < 0 || cfg.Timeout < 0 {
		errs = append(errs, fmt.Errorf("groupcommit: negative MaxBatch (%d), Committers (%d), MaxWait (%s) or Timeout (%s)",
			cfg.MaxBatch, cfg.Committers, cfg.MaxWait, cfg.Timeout))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.Committers == 0 {
		cfg.Committers = 1
	}
	return &Batcher[T, R]{cfg: cfg, full: make(chan struct{}, 1)}, nil
}

// Submit queues item for the next commit and returns its answer. A context
// that has ended already, or ends before a committer takes the item, answers
// its error and nothing is committed. Once taken, the caller waits for the
// commit (unless Config.Detach), which runs detached from any one caller's
// cancellation but keeps the values of the context that started its
// committer.
func (b *Batcher[T, R]) Submit(ctx context.Context, item T) (R, error) {
	var zero R
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	p := &pending[T, R]{ctx: ctx, item: item, answer: make(chan struct{})}
	b.mu.Lock()
	b.enqueue(ctx, p)
	b.mu.Unlock()
	select {
	case <-p.answer:
		return p.result.Value, p.result.Err
	case <-ctx.Done():
	}
	b.mu.Lock()
	select {
	case <-p.answer:
		b.mu.Unlock()
		return p.result.Value, p.result.Err
	default:
	}
	taken := true
	for _, w := range b.waiting {
		if w == p {
			taken = false
			break
		}
	}
	if !taken {
		p.left = true
		b.mu.Unlock()
		return zero, ctx.Err()
	}
	b.mu.Unlock()
	if b.cfg.Detach {
		return zero, ctx.Err()
	}
	<-p.answer
	return p.result.Value, p.result.Err
}

// Send queues item for the next commit and returns at once: nobody waits
// for its answer, which is dropped, and a failed commit is not retried
// item by item unless Config.CommitOne says how. It is for what is best
// effort, an announcement that only wakes someone early: the caller goes
// on while the item is sent with whatever else is waiting. ctx's values
// reach the commit; its cancellation does not. An item still waiting when
// the process exits is lost.
func (b *Batcher[T, R]) Send(ctx context.Context, item T) {
	ctx = context.WithoutCancel(ctx)
	p := &pending[T, R]{ctx: ctx, item: item, answer: make(chan struct{})}
	b.mu.Lock()
	b.enqueue(ctx, p)
	b.mu.Unlock()
}

// enqueue adds p to the queue and starts a committer if fewer than
// Config.Committers run. b.mu is held.
func (b *Batcher[T, R]) enqueue(ctx context.Context, p *pending[T, R]) {
	b.waiting = append(b.waiting, p)
	if len(b.waiting) >= b.cfg.MaxBatch {
		select {
		case b.full <- struct{}{}:
		default:
		}
	}
	if b.running < b.cfg.Committers {
		b.running++
		go b.commitLoop(context.WithoutCancel(ctx))
	}
}

// Pending returns how many items wait for a committer and how many
// committers are running; both zero when the Batcher is idle.
func (b *Batcher[T, R]) Pending() (waiting, committers int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.waiting {
		if !p.left {
			waiting++
		}
	}
	return waiting, b.running
}

// commitLoop commits batches until nothing waits, then ends.
func (b *Batcher[T, R]) commitLoop(ctx context.Context) {
	for {
		batch, more := b.take()
		if !more {
			return
		}
		if len(batch) > 0 {
			b.commit(ctx, batch)
		}
	}
}

// take removes the next batch from the queue, after waiting up to MaxWait
// for it to fill. more is false (and the committer counted out) when nothing
// waits; the batch is empty when every item it took had been left by its
// caller.
func (b *Batcher[T, R]) take() (batch []*pending[T, R], more bool) {
	b.mu.Lock()
	if len(b.waiting) == 0 {
		b.running--
		b.mu.Unlock()
		return nil, false
	}
	short := len(b.waiting) < b.cfg.MaxBatch
	b.mu.Unlock()
	if short && b.cfg.MaxWait > 0 {
		t := time.NewTimer(b.cfg.MaxWait)
		select {
		case <-b.full:
		case <-t.C:
		}
		t.Stop()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for n < len(b.waiting) && len(batch) < b.cfg.MaxBatch {
		p := b.waiting[n]
		n++
		if !p.left {
			batch = append(batch, p)
		}
	}
	clear(b.waiting[:n])
	b.waiting = b.waiting[n:]
	if len(b.waiting) < b.cfg.MaxBatch {
		select {
		case <-b.full: // a signal for items this batch took
		default:
		}
	}
	if len(b.waiting) == 0 {
		b.waiting = nil // let the backing array go
	}
	return batch, true // empty when every item taken had left
}

// commit commits one batch and answers each of its items.
func (b *Batcher[T, R]) commit(ctx context.Context, batch []*pending[T, R]) {
	items := make([]T, len(batch))
	for i, p := range batch {
		items[i] = p.item
	}
	cctx, cancel := b.bound(ctx)
	out, err := b.cfg.Commit(cctx, items)
	cancel()
	if err == nil && len(out) != len(batch) {
		err = fmt.Errorf("groupcommit: Commit answered %d items of %d", len(out), len(batch))
	}
	if err == nil {
		for i, p := range batch {
			b.answer(p, out[i])
		}
		return
	}
	if b.cfg.OnBatchError != nil {
		b.cfg.OnBatchError(len(batch), err)
	}
	for _, p := range batch {
		if b.cfg.CommitOne == nil {
			b.answer(p, Result[R]{Err: err})
			continue
		}
		cctx, cancel := b.bound(ctx)
		v, err := b.cfg.CommitOne(cctx, p.item)
		cancel()
		b.answer(p, Result[R]{Value: v, Err: err})
	}
}

func (b *Batcher[T, R]) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if b.cfg.Timeout > 0 {
		return context.WithTimeout(ctx, b.cfg.Timeout)
	}
	return context.WithCancel(ctx)
}

func (b *Batcher[T, R]) answer(p *pending[T, R], r Result[R]) {
	b.mu.Lock()
	p.result = r
	close(p.answer)
	b.mu.Unlock()
}
