package jobs

import (
	"context"
	"sync"
	"time"

	"github.com/chomhq/chom/models"
)

// maxCompletionBatch is the most provision successes one transaction
// commits. A worker runs CHOM_WORKER_CONCURRENCY jobs at once (20 by
// default), so a batch is rarely larger than that.
const maxCompletionBatch = 64

// maxCommitsInFlight is how many batches of one worker commit at once. With
// one, every success waited for the batch ahead of it to reach the disk
// (fsync of the WAL, the larger part of a commit) before its own could
// start: the drain's traces showed the completer committing 80 % of the
// time and each success waiting 40 ms for it. PostgreSQL flushes the WAL of
// concurrent commits together, so a few batches in flight share a flush
// instead of queueing for one each; each holds one database connection
// (CHOM_DB_MAX_CONNS, 40 by default) for one statement.
const maxCommitsInFlight = 4

// completionTimeout bounds one batch transaction. The batch runs under none
// of its callers' contexts: one of them ending must not fail the others'
// successes.
const completionTimeout = 30 * time.Second

// completer group-commits the successes of the provisions running in one
// worker process: a success that finds fewer than maxCommitsInFlight
// batches committing commits itself at once; one that finds them all busy
// queues, and the first batch to finish hands what queued meanwhile (up to
// maxCompletionBatch) to the oldest waiter, whose job commits it, and so
// on until the queue is empty. No goroutine of its own and no timer: a
// lone success commits at once, and under load one statement serves every
// provision that finished while the earlier ones were in flight; no job
// commits more than one batch, so none is held by the others'. A batch that
// fails is completed item by item, so one bad success cannot fail its
// neighbours.
type completer struct {
	store *models.Store
	issue bool

	mu      sync.Mutex
	queue   []*pendingSuccess
	leaders int // batches committing, or handed to a waiter that will commit them
}

type pendingSuccess struct {
	item models.ProvisionSuccess
	out  chan models.ProvisionOutcome
	lead chan []*pendingSuccess // the batch this success's job commits (it is first in it)
}

// complete records one provision's success (models.CompleteProvisions) and
// returns its outcome; err is set when the transaction failed (nothing was
// written for it). It waits for the outcome even when ctx ends (at most
// completionTimeout per batch): the success may be committing, and a
// waiter may be handed a batch to commit.
func (c *completer) complete(ctx context.Context, item models.ProvisionSuccess) (models.ProvisionOutcome, error) {
	p := &pendingSuccess{item: item, out: make(chan models.ProvisionOutcome, 1), lead: make(chan []*pendingSuccess, 1)}
	c.mu.Lock()
	c.queue = append(c.queue, p)
	if c.leaders < maxCommitsInFlight {
		// Fewer batches in flight than allowed means nothing queued
		// before p: the batch is p alone.
		c.leaders++
		p.lead <- c.take()
	}
	c.mu.Unlock()
	for {
		select {
		case o := <-p.out:
			return o, o.Err
		case batch := <-p.lead:
			c.commitAndHandOn(context.WithoutCancel(ctx), batch)
		}
	}
}

// take removes the batch at the head of the queue and returns it; c.mu is
// held.
func (c *completer) take() []*pendingSuccess {
	n := min(len(c.queue), maxCompletionBatch)
	batch := c.queue[:n:n]
	c.queue = c.queue[n:]
	return batch
}

// commitAndHandOn commits batch, then hands the batch queued meanwhile to
// its oldest success's job, or gives up its place in flight when nothing
// waits.
func (c *completer) commitAndHandOn(ctx context.Context, batch []*pendingSuccess) {
	c.commit(ctx, batch)
	c.mu.Lock()
	if len(c.queue) > 0 {
		next := c.take()
		next[0].lead <- next
	} else {
		c.leaders--
	}
	c.mu.Unlock()
}

// commit writes batch in one transaction, or each item alone when that
// fails, and hands every item its outcome.
func (c *completer) commit(ctx context.Context, batch []*pendingSuccess) {
	ctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	items := make([]models.ProvisionSuccess, len(batch))
	for i, p := range batch {
		items[i] = p.item
	}
	if len(items) > 1 {
		if outs, err := c.store.CompleteProvisions(ctx, items, c.issue); err == nil {
			for i, p := range batch {
				p.out <- outs[i]
			}
			return
		}
	}
	for i, p := range batch {
		outs, err := c.store.CompleteProvisions(ctx, items[i:i+1], c.issue)
		if err != nil {
			p.out <- models.ProvisionOutcome{Err: err}
			continue
		}
		p.out <- outs[0]
	}
}
