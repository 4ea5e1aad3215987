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

// completionTimeout bounds one batch transaction. The batch runs under none
// of its callers' contexts: one of them ending must not fail the others'
// successes.
const completionTimeout = 30 * time.Second

// completer group-commits the successes of the provisions running in one
// worker process: whoever finds no transaction in flight commits what is
// queued, its own success included, and hands the lead to the first success
// that queued meanwhile, which commits the next batch, and so on until the
// queue is empty. No goroutine of its own and no timer: a lone success
// commits at once, and under load one commit (and one outbox INSERT)
// serves every provision that finished while the previous commit was in
// flight; no job commits more than one batch, so none is held by the
// others'. A batch that fails is completed item by item, so one bad
// success cannot fail its neighbours.
type completer struct {
	store *models.Store
	issue bool

	mu         sync.Mutex
	queue      []*pendingSuccess
	committing bool // a leader is committing, or the queue's head is told to
}

type pendingSuccess struct {
	item models.ProvisionSuccess
	out  chan models.ProvisionOutcome
	lead chan struct{} // this success's job commits the next batch
}

// complete records one provision's success (models.CompleteProvisions) and
// returns its outcome; err is set when the transaction failed (nothing was
// written for it). It waits for the outcome even when ctx ends (at most
// completionTimeout per batch): the success may be committing, and a
// waiter may be handed the lead.
func (c *completer) complete(ctx context.Context, item models.ProvisionSuccess) (models.ProvisionOutcome, error) {
	p := &pendingSuccess{item: item, out: make(chan models.ProvisionOutcome, 1), lead: make(chan struct{}, 1)}
	c.mu.Lock()
	c.queue = append(c.queue, p)
	if !c.committing {
		c.committing = true
		p.lead <- struct{}{}
	}
	c.mu.Unlock()
	for {
		select {
		case o := <-p.out:
			return o, o.Err
		case <-p.lead:
			c.commitNext(context.WithoutCancel(ctx))
		}
	}
}

// commitNext commits the batch at the head of the queue (the leader's own
// success first), then hands the lead on, or ends the committing when
// nothing waits.
func (c *completer) commitNext(ctx context.Context) {
	c.mu.Lock()
	n := min(len(c.queue), maxCompletionBatch)
	batch := c.queue[:n:n]
	c.queue = c.queue[n:]
	c.mu.Unlock()
	c.commit(ctx, batch)
	c.mu.Lock()
	if len(c.queue) > 0 {
		c.queue[0].lead <- struct{}{}
	} else {
		c.committing = false
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
