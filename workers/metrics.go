package workers

import (
	"context"
	"errors"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/metrics"
	"github.com/chomhq/chom/queue"
)

// ObserveTasks is the asynq middleware that records each task attempt in m: its
// queue (asynq.GetQueueName), type, duration and outcome (failed when the
// handler returned an error, whether asynq then retries it or not; deferred when
// the error wraps drivers.ErrDeferred: put off, no retry spent). New installs
// it first when Config.Metrics is set, so it times everything after it.
//
// It also creates, at zero, the job series of every task kind of the queue
// package (queue.TaskKinds: each type on its queue, with the succeeded, failed
// and deferred statuses), so a worker's /metrics has them from start-up, before
// any task ran; a type this worker has no handler for keeps its zeros.
func ObserveTasks(m *metrics.Metrics) asynq.MiddlewareFunc {
	m.InitJobs(jobKinds())
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			start := time.Now()
			err := next.ProcessTask(ctx, t)
			q, _ := asynq.GetQueueName(ctx)
			if errors.Is(err, drivers.ErrDeferred) {
				m.ObserveDeferred(q, t.Type(), time.Since(start))
			} else {
				m.ObserveJob(q, t.Type(), time.Since(start), err)
			}
			return err
		})
	}
}

// jobKinds converts queue.TaskKinds for metrics, which imports no CHOM package.
func jobKinds() []metrics.JobKind {
	kinds := queue.TaskKinds()
	out := make([]metrics.JobKind, len(kinds))
	for i, k := range kinds {
		out[i] = metrics.JobKind{Queue: k.Queue, Type: k.Type}
	}
	return out
}
