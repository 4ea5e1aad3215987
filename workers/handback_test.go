package workers

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// A result is handed to asynq at once while Redis answers; with Redis gone
// it is held until Redis is back (and the handler's error passes through
// unchanged); an ending context stops the wait.
func TestAwaitRedis(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	failed := errors.New("provision failed")
	var stopRedis bool
	h := awaitRedis(rdb, log)(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		if stopRedis {
			mr.Close() // Redis dies while the attempt runs
		}
		return failed
	}))
	task := asynq.NewTask("site:provision", nil)

	start := time.Now()
	if err := h.ProcessTask(t.Context(), task); !errors.Is(err, failed) {
		t.Fatalf("error %v, want the handler's", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("held %v with Redis up, want no wait", d)
	}

	stopRedis = true
	const down = 600 * time.Millisecond
	go func() {
		time.Sleep(down)
		if err := mr.Restart(); err != nil {
			t.Error(err)
		}
	}()
	start = time.Now()
	if err := h.ProcessTask(t.Context(), task); !errors.Is(err, failed) {
		t.Fatalf("error %v, want the handler's", err)
	}
	waited := time.Since(start)
	if waited < down {
		t.Errorf("result handed back after %v, before Redis returned (%v)", waited, down)
	}
	if err := rdb.Ping(t.Context()).Err(); err != nil {
		t.Errorf("Redis after the wait: %v", err)
	}

	// Redis gone for good: the attempt's context ending ends the wait.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	_ = h.ProcessTask(ctx, task)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("held %v after the context ended, want the wait to stop with it", d)
	}
}
