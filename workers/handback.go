package workers

import (
	"context"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// How awaitRedis waits: each PING may take pingTimeout, they come every
// pingEvery, and an attempt's result is held at most holdMax (asynq's task
// lease is 30s; once it is gone, asynq cancels the attempt's context, which
// ends the wait sooner).
const (
	pingTimeout = time.Second
	pingEvery   = 200 * time.Millisecond
	holdMax     = 30 * time.Second
)

// awaitRedis holds a finished attempt's result until the queue's Redis
// answers a PING, then hands it to asynq.
//
// asynq v0.26 moves a finished task out of "active" with one Redis call
// (done, retry, archive); when that call fails because Redis is unreachable
// just then, asynq retries it with a context it has already cancelled, so
// every retry fails and the task stays "active" until its lease recovery, a
// minute and a half or more later (TestRedisKilledAndRestarted measured
// 1m46s). Held here, the attempt still counts as running: asynq's heartbeater
// renews its lease as soon as Redis is back, and the hand-back then meets a
// live Redis. Nothing else changes: while Redis is down no new task can be
// dequeued, so a held slot delays nobody. If Redis stays away past the lease,
// asynq cancels ctx and the task goes to lease recovery as before.
func awaitRedis(rdb redis.UniversalClient, log *slog.Logger) asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			err := next.ProcessTask(ctx, t)
			waitForRedis(ctx, rdb, log, holdMax)
			return err
		})
	}
}

// waitForRedis returns as soon as rdb answers a PING, ctx ends or limit passes.
func waitForRedis(ctx context.Context, rdb redis.UniversalClient, log *slog.Logger, limit time.Duration) {
	if ping(ctx, rdb) == nil {
		return
	}
	start := time.Now()
	log.WarnContext(ctx, "queue Redis unreachable as the attempt ended; holding its result until Redis answers")
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(pingEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			log.WarnContext(ctx, "attempt's context ended while Redis was unreachable; asynq's lease recovery takes the task",
				"waited", time.Since(start).Round(time.Millisecond).String())
			return
		case <-deadline.C:
			log.WarnContext(ctx, "Redis still unreachable; handing the result to asynq anyway",
				"waited", time.Since(start).Round(time.Millisecond).String())
			return
		case <-tick.C:
			if ping(ctx, rdb) == nil {
				log.InfoContext(ctx, "queue Redis answers again; handing the result to asynq",
					"waited", time.Since(start).Round(time.Millisecond).String())
				return
			}
		}
	}
}

func ping(ctx context.Context, rdb redis.UniversalClient) error {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	return rdb.Ping(ctx).Err()
}
