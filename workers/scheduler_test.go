package workers_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/workers"
)

// Two schedulers running the same table enqueue each period's tick once: the
// second one's enqueue is a task-ID conflict.
func TestTwoSchedulersEnqueueEachTickOnce(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	opt := asynq.RedisClientOpt{Addr: mr.Addr()}
	const every = 300 * time.Millisecond
	table := []workers.Periodic{{Name: "tick", Every: every, NewTask: func(period time.Time) (*asynq.Task, error) {
		return asynq.NewTask("test:tick", []byte(period.UTC().Format(time.RFC3339Nano)), asynq.Queue("low")), nil
	}}}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	start := time.Now()
	for range 2 {
		s, err := workers.NewScheduler(workers.SchedulerConfig{Redis: opt, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Table: table})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = s.Run(ctx) }()
	}
	time.Sleep(5*every + every/2)
	cancel()
	wg.Wait()
	periods := 0
	for p := start.Truncate(every); p.Before(time.Now()); p = p.Add(every) {
		periods++
	}

	insp := asynq.NewInspector(opt)
	defer insp.Close()
	tasks, err := insp.ListPendingTasks("low", asynq.PageSize(100))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, ti := range tasks {
		if !strings.HasPrefix(ti.ID, "periodic:tick:") {
			t.Errorf("task ID %q, want periodic:tick:<unix>", ti.ID)
		}
		period, err := time.Parse(time.RFC3339Nano, string(ti.Payload))
		if err != nil {
			t.Fatal(err)
		}
		if want := workers.PeriodicTaskID("tick", period); ti.ID != want {
			t.Errorf("task ID %q, want %q", ti.ID, want)
		}
		seen[string(ti.Payload)]++
	}
	for payload, n := range seen {
		if n != 1 {
			t.Errorf("period %s enqueued %d times, want once", payload, n)
		}
	}
	// Two schedulers, one task per period: as many tasks as periods began while
	// they ran. The last one may have begun as they stopped, and on a loaded
	// machine a late wake-up can start in the next period (the missed one is
	// then skipped, never doubled), so allow two fewer, never more.
	if len(tasks) > periods || len(tasks) < periods-2 {
		t.Errorf("%d tasks for %d periods, want one per period", len(tasks), periods)
	}
}

// A table row without a name, a period or a builder is refused at start-up.
func TestSchedulerConfigValidate(t *testing.T) {
	t.Parallel()
	_, err := workers.NewScheduler(workers.SchedulerConfig{Table: []workers.Periodic{{}, {}}})
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"Redis is required", "Logger is required", "Name is required", "Every must be positive", "NewTask is required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
