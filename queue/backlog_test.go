package queue_test

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// An enqueue refused while Redis is away (a Sentinel failover) is retried by
// the backlog and lands once Redis answers, well before the reconciler's
// grace; one still failing after RetryFor is left to the reconciler.
func TestBacklogRetriesFailedEnqueue(t *testing.T) {
	t.Parallel()
	db := testenv.Redis(t)
	proxy := testenv.NewProxy(t, db.Addr)
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DB: db.DB, MaxRetries: -1, DialTimeout: time.Second})
	defer rdb.Close()
	direct := db.Client(t)
	insp := queue.NewInspector(direct)
	b, err := queue.NewBacklog(queue.BacklogConfig{Redis: rdb, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RetryFor: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	go b.Run(t.Context())
	state := func(id string) queue.TaskState {
		st, err := insp.TaskState(t.Context(), queue.QueueDefault, id)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}

	proxy.Cut()
	back := &models.Operation{ID: "op_backlog_back", TenantID: "ten_1", Type: models.OpTypeSiteProvision}
	if err := b.EnqueueOperation(t.Context(), back); err == nil {
		t.Fatal("enqueue with Redis cut succeeded")
	}
	time.Sleep(time.Second)
	if st := state(back.ID); st != queue.TaskMissing {
		t.Fatalf("task %s while Redis was cut: %s, want missing", back.ID, st)
	}
	proxy.Restore()
	restored := time.Now()
	deadline := restored.Add(2 * time.Second)
	for state(back.ID) == queue.TaskMissing {
		if time.Now().After(deadline) {
			t.Fatalf("the backlog did not enqueue %s within 2s of Redis answering again", back.ID)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("Redis away 1s: the refused enqueue landed %s after it answered again", time.Since(restored).Round(time.Millisecond))

	proxy.Cut()
	late := &models.Operation{ID: "op_backlog_late", TenantID: "ten_1", Type: models.OpTypeSiteProvision}
	if err := b.EnqueueOperation(t.Context(), late); err == nil {
		t.Fatal("enqueue with Redis cut succeeded")
	}
	time.Sleep(4 * time.Second) // past RetryFor
	proxy.Restore()
	time.Sleep(time.Second)
	if st := state(late.ID); st != queue.TaskMissing {
		t.Errorf("task %s, refused for longer than RetryFor: %s, want missing (left to the reconciler)", late.ID, st)
	}
}
