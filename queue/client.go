package queue

import (
	"context"
	"errors"
	"fmt"
	neturl "net/url"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/chomhq/chom/models"
)

// RedisOptions parses a Redis URL into connection options: redis://,
// rediss:// and redis-socket:// as asynq.ParseRedisURI reads them,
// redis-sentinel:// as SentinelOptions documents and redis-cluster:// as
// ClusterOptions does (CHOM's own parsers). Every Redis client of a process
// (asynq's client, server, inspector and scheduler, the limits, the
// notifier, asynqmon) is built from these, so under Sentinel each one follows
// the master through a failover, and on a cluster each one follows the slot
// map. Its error
// names the URL with the password redacted and never wraps the parser's own
// error, whose text may quote the URL whole (net/url's does).
func RedisOptions(url string) (asynq.RedisConnOpt, error) {
	var (
		opt asynq.RedisConnOpt
		err error
	)
	switch {
	case strings.HasPrefix(url, "redis-sentinel:"):
		opt, err = parseSentinelURL(url)
	case strings.HasPrefix(url, "redis-cluster:"):
		opt, err = parseClusterURL(url)
	default:
		opt, err = asynq.ParseRedisURI(url)
	}
	if err != nil {
		return nil, fmt.Errorf("queue: parse redis URL %s: %s", RedactURL(url), redactedCause(err))
	}
	return opt, nil
}

// RedactURL is a Redis URL of any form RedisOptions reads, for a message or
// a log line: its password (and a Sentinel URL's parameters but master, a
// cluster URL's query) replaced by xxxxx, its host list kept.
func RedactURL(url string) string {
	switch {
	case strings.HasPrefix(url, "redis-sentinel:"):
		return redactSentinelURL(url)
	case strings.HasPrefix(url, "redis-cluster:"):
		return redactClusterURL(url)
	default:
		return models.RedactURL(url)
	}
}

// redactedCause is err's text without the URL a *url.Error carries.
func redactedCause(err error) string {
	var ue *neturl.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// NewRedisClient opens a Redis client from a URL. It is shared by the enqueuer,
// the inspector, the notifier and, in workers, the asynq server. poolSize bounds
// its connections (per node on a cluster; 0 keeps go-redis's default of 10 per
// CPU): an ingress enqueues a whole committed batch at once, and too small a
// pool queues those enqueues.
func NewRedisClient(url string, poolSize int) (redis.UniversalClient, error) {
	opt, err := RedisOptions(url)
	if err != nil {
		return nil, err
	}
	if poolSize > 0 {
		switch o := opt.(type) {
		case asynq.RedisClientOpt:
			o.PoolSize = poolSize
			opt = o
		case SentinelOptions:
			opt = o.withPoolSize(poolSize)
		case ClusterOptions:
			opt = o.withPoolSize(poolSize) // per node
		}
	}
	rc, ok := opt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, fmt.Errorf("queue: unsupported redis options %T", opt)
	}
	return rc, nil
}

// Enqueuer puts operation tasks on the queue. Enqueues made at the same time
// share a Redis round trip: asynq's client runs its enqueue script (EVALSHA)
// through a scriptPipe, which sends the scripts of concurrent callers in one
// pipeline (see scriptPipe); each task is still enqueued by asynq's own script
// with asynq's own encoding, and each caller gets its own task's result.
type Enqueuer struct {
	client *asynq.Client
}

// NewEnqueuer returns an Enqueuer over rc. Closing it does not close rc.
func NewEnqueuer(rc redis.UniversalClient) *Enqueuer {
	return &Enqueuer{client: asynq.NewClientFromRedisClient(newScriptPipe(rc, maxPipeline))}
}

// EnqueueOperation enqueues the task of op. A task with that ID already queued (or
// kept after finishing) means the work is already there: it returns nil.
func (e *Enqueuer) EnqueueOperation(ctx context.Context, op *models.Operation) error {
	task, _, err := TaskForOperation(op)
	if err != nil {
		return err
	}
	return e.Enqueue(ctx, task)
}

// Enqueue enqueues task, treating a task-ID or uniqueness conflict as success.
func (e *Enqueuer) Enqueue(ctx context.Context, task *asynq.Task, opts ...asynq.Option) error {
	_, err := e.client.EnqueueContext(ctx, task, opts...)
	if err == nil || errors.Is(err, asynq.ErrTaskIDConflict) || errors.Is(err, asynq.ErrDuplicateTask) {
		return nil
	}
	return fmt.Errorf("enqueue %s: %w", task.Type(), err)
}
