package jobs

import (
	"context"
	"time"

	"github.com/chomhq/chom/internal/groupcommit"
	"github.com/chomhq/chom/models"
)

// maxStartBatch is the most provision starts one transaction commits; a
// worker runs CHOM_WORKER_CONCURRENCY jobs at once (20 by default).
const maxStartBatch = 64

// startCommitters is how many batches of starts of one worker commit at
// once. One: the starts arrive together (a worker takes its next tasks as
// the last ones finish), so one committer makes batches of a few starts
// and PostgreSQL commits once for them. Measured back to back
// (internal/drainbench, N=4,000, three rounds each): one committer cut
// PostgreSQL's CPU per provision from 1.12 to 0.91 ms and drained 832
// provisions/s against 770 for autocommitted starts; two committers made
// smaller batches and gave back most of it (1.07 ms, 783/s).
const startCommitters = 1

// startTimeout bounds one batch's transaction. The batch runs under none of
// its callers' contexts: one of them ending must not fail the others.
const startTimeout = 30 * time.Second

// starter group-commits the starts of the provisions one worker process
// runs (internal/groupcommit, models.StartProvisions): a start that finds
// fewer than startCommitters batches committing is committed at once, and
// under load one transaction serves every start that arrived while the
// earlier batches were in flight. A batch that fails is started delivery by
// delivery (models.StartProvision), so one bad start cannot fail its
// neighbours.
type starter struct {
	batch *groupcommit.Batcher[string, *models.ProvisionStart]
}

// newStarter returns the starter of a worker's provisions.
func newStarter(store *models.Store) (*starter, error) {
	b, err := groupcommit.New(groupcommit.Config[string, *models.ProvisionStart]{
		Commit: func(ctx context.Context, opIDs []string) ([]groupcommit.Result[*models.ProvisionStart], error) {
			outs, err := store.StartProvisions(ctx, opIDs, placementProgress)
			if err != nil {
				return nil, err
			}
			res := make([]groupcommit.Result[*models.ProvisionStart], len(outs))
			for i, o := range outs {
				res[i] = groupcommit.Result[*models.ProvisionStart]{Value: o.Start, Err: o.Err}
			}
			return res, nil
		},
		CommitOne: func(ctx context.Context, opID string) (*models.ProvisionStart, error) {
			return store.StartProvision(ctx, opID, placementProgress)
		},
		MaxBatch:   maxStartBatch,
		Committers: startCommitters,
		Timeout:    startTimeout,
	})
	if err != nil {
		return nil, err
	}
	return &starter{batch: b}, nil
}

// start is models.StartProvision for delivery opID, committed with the
// starts of the worker's other provisions: nil (and no error) sends the
// delivery down the step-by-step path. A ctx that ends before the start is
// taken into a batch writes nothing and returns ctx's error (asynq runs the
// task again); once taken, it waits for the outcome whatever ctx does (at
// most startTimeout per commit).
func (s *starter) start(ctx context.Context, opID string) (*models.ProvisionStart, error) {
	return s.batch.Submit(ctx, opID)
}
