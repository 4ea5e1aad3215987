package workers

import (
	"context"
	"errors"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/metrics"
)

// ObserveTasks is the asynq middleware that records each task attempt in m: its
// queue (asynq.GetQueueName), type, duration and outcome (failed when the
// handler returned an error, whether asynq then retries it or not; deferred when
// the error wraps drivers.ErrDeferred: put off, no retry spent). New installs
// it first when Config.Metrics is set, so it times everything after it.
func ObserveTasks(m *metrics.Metrics) asynq.MiddlewareFunc {
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
