package workers_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/sony/gobreaker/v2"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/breaker"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/workers"
)

// downProvisioner is a fake server that is unreachable while down is set; it
// counts the calls that reached it.
type downProvisioner struct {
	down  atomic.Bool
	calls atomic.Int64
}

func (d *downProvisioner) Provision(context.Context, drivers.SiteSpec, drivers.ProgressFunc) (drivers.Result, error) {
	d.calls.Add(1)
	if d.down.Load() {
		return drivers.Result{}, fmt.Errorf("dial 192.0.2.1:22: i/o timeout: %w", drivers.ErrUnreachable)
	}
	return drivers.Result{DocumentRoot: "/srv/a"}, nil
}

func (d *downProvisioner) Deprovision(context.Context, drivers.SiteSpec) error { return nil }

func TestIsFailure(t *testing.T) {
	t.Parallel()
	open := fmt.Errorf("%w: %w: vps_a: %w", drivers.ErrUnreachable, drivers.ErrDeferred, gobreaker.ErrOpenState)
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"open breaker", fmt.Errorf("provision a.example: %w", open), false},
		{"busy limit", fmt.Errorf("limits: busy: %w", drivers.ErrDeferred), false},
		{"unreachable server (a real dial)", fmt.Errorf("dial: %w", drivers.ErrUnreachable), true},
		{"other error", errors.New("boom"), true},
		{"success", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := workers.IsFailure(tt.err); got != tt.want {
				t.Errorf("IsFailure(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
	d := workers.RetryDelay(time.Minute, time.Hour, 100*time.Millisecond)
	for range 100 {
		if got := d(5, open, nil); got < 50*time.Millisecond || got >= 150*time.Millisecond {
			t.Fatalf("deferred delay %s outside [50ms, 150ms)", got)
		}
		if got := d(5, errors.New("boom"), nil); got < 30*time.Second {
			t.Fatalf("failure delay %s is not the backoff", got)
		}
	}
}

// TestOpenBreakerBurnsNoRetry runs a task on an asynq server on real Redis
// against a server that is down: the first real failures open the breaker,
// then the task is rescheduled many times through the open breaker with its
// retry count unchanged, and it succeeds once the server is back and the
// breaker closes.
func TestOpenBreakerBurnsNoRetry(t *testing.T) {
	t.Parallel()
	db := testenv.Redis(t)
	reg, err := breaker.New(breaker.Config{Failures: 2, OpenTimeout: 400 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	fake := &downProvisioner{}
	fake.down.Store(true)
	p := reg.WrapProvisioner(fake)

	var (
		mu       sync.Mutex
		attempts []int // retry count seen by each attempt that met the open breaker
		finalRC  = -1
	)
	done := make(chan struct{})
	handler := asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		rc, _ := asynq.GetRetryCount(ctx)
		_, err := p.Provision(ctx, drivers.SiteSpec{ID: "site_a", TenantID: "ten_a", Server: drivers.Server{ID: "vps_a"}}, nil)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
			finalRC = rc
			close(done)
		case errors.Is(err, gobreaker.ErrOpenState):
			attempts = append(attempts, rc)
		}
		return err
	})
	srv := asynq.NewServerFromRedisClient(db.Client(t), asynq.Config{
		Concurrency:              1,
		IsFailure:                workers.IsFailure,
		RetryDelayFunc:           workers.RetryDelay(20*time.Millisecond, 20*time.Millisecond, 40*time.Millisecond),
		TaskCheckInterval:        20 * time.Millisecond,
		DelayedTaskCheckInterval: 20 * time.Millisecond,
		LogLevel:                 asynq.FatalLevel,
		ShutdownTimeout:          time.Second,
	})
	if err := srv.Start(handler); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	client := asynq.NewClientFromRedisClient(db.Client(t))
	t.Cleanup(func() { _ = client.Close() })
	if _, err := client.Enqueue(asynq.NewTask("test:provision", nil), asynq.MaxRetry(5)); err != nil {
		t.Fatal(err)
	}

	// Wait for several reschedules through the open breaker.
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(attempts)
		mu.Unlock()
		if n >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d attempts met the open breaker", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fake.down.Store(false)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("task did not succeed after the server came back")
	}
	mu.Lock()
	defer mu.Unlock()
	// The two real failures that opened the breaker count (retry 0 and 1);
	// every open-breaker attempt after them sees the same count, and half-open
	// probes that fail while the server is down may add one each.
	first := attempts[0]
	for i, rc := range attempts {
		if rc < first || rc > first+1+len(attempts)/8 {
			t.Fatalf("attempt %d through the open breaker saw retry count %d (first %d): retries were burned: %v", i, rc, first, attempts)
		}
	}
	if first != 2 {
		t.Errorf("first open-breaker attempt saw retry count %d, want 2 (the two real failures)", first)
	}
	if finalRC >= 5 {
		t.Errorf("succeeded at retry %d of 5", finalRC)
	}
	t.Logf("%d reschedules through the open breaker, retry counts %v; inner calls %d; succeeded at retry %d",
		len(attempts), attempts, fake.calls.Load(), finalRC)
}
