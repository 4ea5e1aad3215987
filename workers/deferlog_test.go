package workers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/internal/testenv"
)

// lockedBuffer is a log sink safe for the worker's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines(t *testing.T) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, raw := range bytes.Split(bytes.TrimSpace(l.b.Bytes()), []byte("\n")) {
		if len(raw) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("%v: %s", err, raw)
		}
		out = append(out, m)
	}
	return out
}

// A task deferred N times (its server's breaker open) and then done logs, at
// info and above, exactly one "task deferred" line at info per deferred
// attempt and one "task done" for the attempt that succeeded: the task's own
// end line (logTasks) goes to debug for a deferral, so the deferral is not
// logged twice, and nothing is at warn, since a deferral is not a failure.
// It runs the worker's logTasks middleware and ErrorHandler on an asynq server
// over real Redis, rescheduled by the worker's RetryDelay.
func TestDeferredAttemptLogsOnce(t *testing.T) {
	t.Parallel()
	const deferrals = 5
	sink := &lockedBuffer{}
	log := slog.New(TaskLogHandler(slog.NewJSONHandler(sink, &slog.HandlerOptions{Level: slog.LevelInfo})))
	var attempts atomic.Int64
	done := make(chan struct{})
	handler := asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		if attempts.Add(1) <= deferrals {
			return fmt.Errorf("provision a.example: %w: %w: vps_a: open", drivers.ErrUnreachable, drivers.ErrDeferred)
		}
		close(done)
		return nil
	})
	mux := asynq.NewServeMux()
	mux.Use(logTasks(log))
	mux.Handle("test:deferred", handler)
	db := testenv.Redis(t)
	srv := asynq.NewServerFromRedisClient(db.Client(t), asynq.Config{
		Concurrency:              1,
		IsFailure:                IsFailure,
		RetryDelayFunc:           RetryDelay(20*time.Millisecond, 20*time.Millisecond, 40*time.Millisecond),
		TaskCheckInterval:        20 * time.Millisecond,
		DelayedTaskCheckInterval: 20 * time.Millisecond,
		LogLevel:                 asynq.FatalLevel,
		ShutdownTimeout:          time.Second,
		ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
			logTaskError(ctx, log, t, err)
		}),
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClientFromRedisClient(db.Client(t))
	t.Cleanup(func() { _ = client.Close() })
	if _, err := client.Enqueue(asynq.NewTask("test:deferred", nil), asynq.MaxRetry(1), asynq.TaskID("op_deferred")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("task not done after %d attempts", attempts.Load())
	}
	srv.Shutdown() // the last attempt's lines are written

	counts := map[string]int{}
	for _, l := range sink.lines(t) {
		counts[fmt.Sprint(l["level"], " ", l["msg"])]++
		if l["task_id"] != "op_deferred" {
			t.Errorf("line without the task's ID: %v", l)
		}
	}
	want := map[string]int{"INFO task deferred": deferrals, "INFO task done": 1}
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("over %d deferred attempts and one success, lines %v, want %v", deferrals, counts, want)
	}
}
