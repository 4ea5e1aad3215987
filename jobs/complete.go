package jobs

import (
	"context"
	"time"

	"github.com/chomhq/chom/internal/groupcommit"
	"github.com/chomhq/chom/models"
)

// maxCompletionBatch is the most provision successes one statement
// commits. A worker runs CHOM_WORKER_CONCURRENCY jobs at once (20 by
// default), so a batch is rarely larger than that.
const maxCompletionBatch = 64

// completionCommitters is how many batches of one worker commit at once.
// It was four while a batch statement cost PostgreSQL 0.6 ms of planning:
// then, with one, every success waited for the batch ahead of it (the
// drain's traces showed the completer committing 80 % of each pass). With
// the statement prepared on a generic plan and the starts group-committed
// too (starter), one is better: batches of about 3.5 successes instead of
// 1.7, PostgreSQL's CPU per provision 1.04 -> 0.82 ms and 783 -> 953
// provisions/s, back to back over three rounds (internal/drainbench,
// N=4,000; two committers: 0.84 ms, 956/s but 705/s in one round).
const completionCommitters = 1

// completionTimeout bounds one batch's commit. The batch runs under none of
// its callers' contexts: one of them ending must not fail the others'
// successes.
const completionTimeout = 30 * time.Second

// completer group-commits the successes of the provisions running in one
// worker process (internal/groupcommit): a success that finds fewer than
// completionCommitters batches committing is committed at once, and under
// load one statement (models.CompleteProvisions) serves every provision
// that finished while the earlier batches were in flight. A batch that
// fails is completed item by item, so one bad success cannot fail its
// neighbours.
type completer struct {
	batch *groupcommit.Batcher[models.ProvisionSuccess, models.ProvisionOutcome]
}

// newCompleter returns the completer of a worker's provisions; issue says
// whether a success starts its site's first certificate issuance.
func newCompleter(store *models.Store, issue bool) (*completer, error) {
	b, err := groupcommit.New(groupcommit.Config[models.ProvisionSuccess, models.ProvisionOutcome]{
		Commit: func(ctx context.Context, items []models.ProvisionSuccess) ([]groupcommit.Result[models.ProvisionOutcome], error) {
			outs, err := store.CompleteProvisions(ctx, items, issue)
			if err != nil {
				return nil, err
			}
			res := make([]groupcommit.Result[models.ProvisionOutcome], len(outs))
			for i, o := range outs {
				res[i] = groupcommit.Result[models.ProvisionOutcome]{Value: o, Err: o.Err}
			}
			return res, nil
		},
		CommitOne: func(ctx context.Context, item models.ProvisionSuccess) (models.ProvisionOutcome, error) {
			outs, err := store.CompleteProvisions(ctx, []models.ProvisionSuccess{item}, issue)
			if err != nil {
				return models.ProvisionOutcome{Err: err}, err
			}
			return outs[0], outs[0].Err
		},
		MaxBatch:   maxCompletionBatch,
		Committers: completionCommitters,
		Timeout:    completionTimeout,
	})
	if err != nil {
		return nil, err
	}
	return &completer{batch: b}, nil
}

// complete records one provision's success (models.CompleteProvisions) and
// returns its outcome; err is set when the transaction failed (nothing was
// written for it) or a cancel was asked (models.ErrCancelRequested). A ctx
// that ends before the success is taken into a batch writes nothing and
// returns ctx's error (asynq runs the task again); once taken, it waits for
// the outcome whatever ctx does (at most completionTimeout per commit).
func (c *completer) complete(ctx context.Context, item models.ProvisionSuccess) (models.ProvisionOutcome, error) {
	out, err := c.batch.Submit(ctx, item)
	if err != nil && out.Err == nil {
		out.Err = err
	}
	return out, err
}
