package queue_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/queue"
)

// announcements subscribes a Watcher to rdb and records every operation
// announced whose ID starts with prefix (the channel is shared by every
// test on the server).
type announcements struct {
	mu   sync.Mutex
	seen map[string]int
}

func watch(t *testing.T, rdb redis.UniversalClient) *announcements {
	t.Helper()
	a := &announcements{seen: map[string]int{}}
	w := queue.NewWatcher(rdb)
	w.OnChange(func(id string) {
		a.mu.Lock()
		a.seen[id]++
		a.mu.Unlock()
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

func (a *announcements) count(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen[id]
}

// until polls cond for up to 10 seconds.
func until(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// The Notifier's announcements, sent in the background and pipelined, all
// arrive, from many goroutines at once; one announced twice while waiting
// for the same pipeline is sent once or twice, never lost.
func TestNotifierAnnouncesEveryChange(t *testing.T) {
	t.Parallel()
	rdb := testenv.Redis(t).Client(t)
	got := watch(t, rdb)
	n := queue.NewNotifier(rdb)
	prefix := fmt.Sprintf("op_notify_%d_", time.Now().UnixNano())
	if !until(func() bool { n.OperationChanged(t.Context(), prefix+"probe"); return got.count(prefix+"probe") > 0 }) {
		t.Fatal("the watcher received nothing within 10s")
	}
	var wg sync.WaitGroup
	for g := range 20 {
		wg.Go(func() {
			for i := range 10 {
				id := fmt.Sprintf("%s%d", prefix, g*10+i)
				n.OperationChanged(t.Context(), id)
				n.OperationChanged(t.Context(), id)
			}
		})
	}
	wg.Wait()
	for i := range 200 {
		id := fmt.Sprintf("%s%d", prefix, i)
		if !until(func() bool { return got.count(id) > 0 }) {
			t.Fatalf("operation %s was never announced", id)
		}
	}
}

// With Redis unreachable, OperationChanged still returns (the announcement is
// lost, which only delays a poller), and announcements work again once
// Redis answers.
func TestNotifierSurvivesRedisAway(t *testing.T) {
	t.Parallel()
	db := testenv.Redis(t)
	proxy := testenv.NewProxy(t, db.Addr)
	through := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DB: db.DB, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = through.Close() })
	got := watch(t, db.Client(t))
	n := queue.NewNotifier(through)
	prefix := fmt.Sprintf("op_away_%d_", time.Now().UnixNano())
	if !until(func() bool { n.OperationChanged(t.Context(), prefix+"probe"); return got.count(prefix+"probe") > 0 }) {
		t.Fatal("the watcher received nothing within 10s")
	}
	proxy.Cut()
	for i := range 5 {
		n.OperationChanged(t.Context(), fmt.Sprintf("%slost%d", prefix, i))
	}
	proxy.Restore()
	if !until(func() bool { n.OperationChanged(t.Context(), prefix+"back"); return got.count(prefix+"back") > 0 }) {
		t.Fatal("no announcement arrived within 10s of Redis answering again")
	}
}
