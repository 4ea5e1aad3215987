package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Inspector reads the state of queues and tasks.
type Inspector struct {
	in *asynq.Inspector
	rc redis.UniversalClient
}

// NewInspector returns an Inspector over rc. Closing it does not close rc.
func NewInspector(rc redis.UniversalClient) *Inspector {
	return &Inspector{in: asynq.NewInspectorFromRedisClient(rc), rc: rc}
}

// TaskState is where a task is in its life, or TaskMissing when Redis has no
// record of it (never enqueued, expired, or lost).
type TaskState string

// Task states the reconciler acts on.
const (
	TaskMissing  TaskState = "missing"
	TaskArchived TaskState = "archived"
	TaskLive     TaskState = "live" // pending, scheduled, retry, active, aggregating
	TaskFinished TaskState = "completed"
)

// TaskState returns the state of the task with id in queue.
func (i *Inspector) TaskState(_ context.Context, queueName, id string) (TaskState, error) {
	info, err := i.in.GetTaskInfo(queueName, id)
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return TaskMissing, nil
	}
	if err != nil {
		return "", fmt.Errorf("inspect task %s: %w", id, err)
	}
	switch info.State {
	case asynq.TaskStateArchived:
		return TaskArchived, nil
	case asynq.TaskStateCompleted:
		return TaskFinished, nil
	default:
		return TaskLive, nil
	}
}

// RunArchived moves an archived task back to pending, keeping its retry count.
func (i *Inspector) RunArchived(_ context.Context, queueName, id string) error {
	if err := i.in.RunTask(queueName, id); err != nil {
		return fmt.Errorf("run archived task %s: %w", id, err)
	}
	return nil
}

// DeletePending removes a task that has not started; a task that is missing or
// already running is left alone (its job sees the operation's status instead).
func (i *Inspector) DeletePending(_ context.Context, queueName, id string) error {
	err := i.in.DeleteTask(queueName, id)
	if err == nil || errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return nil
	}
	return fmt.Errorf("delete task %s: %w", id, err)
}

// QueueDepth is the number of tasks waiting or running in one queue.
type QueueDepth struct {
	Queue     string `json:"queue"`
	Pending   int    `json:"pending"`
	Active    int    `json:"active"`
	Scheduled int    `json:"scheduled"`
	Retry     int    `json:"retry"`
	Archived  int    `json:"archived"`
	// LatencyMS is the age of the oldest pending task, in milliseconds.
	LatencyMS int64 `json:"latency_ms"`
}

// Depths returns the depth of each of CHOM's queues. A queue that has never had a
// task reports zeros.
func (i *Inspector) Depths(_ context.Context) ([]QueueDepth, error) {
	known, err := i.in.Queues()
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	var out []QueueDepth
	for _, q := range []string{QueueCritical, QueueDefault, QueueLow} {
		if !slices.Contains(known, q) {
			out = append(out, QueueDepth{Queue: q})
			continue
		}
		info, err := i.in.GetQueueInfo(q)
		if err != nil {
			return nil, fmt.Errorf("queue %s info: %w", q, err)
		}
		out = append(out, QueueDepth{Queue: q, Pending: info.Pending, Active: info.Active,
			Scheduled: info.Scheduled, Retry: info.Retry, Archived: info.Archived,
			LatencyMS: info.Latency.Milliseconds()})
	}
	return out, nil
}

// Ping checks that Redis answers within ctx.
func (i *Inspector) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := i.rc.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping redis: %w", err)
	}
	return nil
}
