package queue

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// OperationsChannel is the Redis pub/sub channel on which workers announce that an
// operation changed; its message is the operation ID. It only wakes long polls
// early: a lost message delays a poller until its next database check.
const OperationsChannel = "chom:operations:changed"

// Notifier announces operation changes.
type Notifier struct{ rc redis.UniversalClient }

// NewNotifier returns a Notifier over rc.
func NewNotifier(rc redis.UniversalClient) *Notifier { return &Notifier{rc: rc} }

// OperationChanged publishes opID. Failure is ignored on purpose: the change is
// committed already, and pollers re-read the database on their own schedule.
func (n *Notifier) OperationChanged(ctx context.Context, opID string) {
	_ = n.rc.Publish(ctx, OperationsChannel, opID).Err()
}

// Watcher fans operation-change announcements out to local waiters, over a single
// Redis subscription per process.
type Watcher struct {
	rc        redis.UniversalClient
	mu        sync.Mutex
	waiters   map[string]map[chan struct{}]struct{}
	listeners []func(opID string)
}

// NewWatcher returns a Watcher; call Run to start receiving.
func NewWatcher(rc redis.UniversalClient) *Watcher {
	return &Watcher{rc: rc, waiters: make(map[string]map[chan struct{}]struct{})}
}

// Run receives announcements until ctx ends, resubscribing after Redis errors.
func (w *Watcher) Run(ctx context.Context) {
	for ctx.Err() == nil {
		sub := w.rc.Subscribe(ctx, OperationsChannel)
		ch := sub.Channel()
	recv:
		for {
			select {
			case <-ctx.Done():
				break recv
			case msg, ok := <-ch:
				if !ok {
					break recv
				}
				w.wake(msg.Payload)
			}
		}
		_ = sub.Close()
	}
}

// OnChange registers fn to be called with the ID of every announced operation
// (a cache uses it to drop stale entries). fn must be quick and must not block.
func (w *Watcher) OnChange(fn func(opID string)) {
	w.mu.Lock()
	w.listeners = append(w.listeners, fn)
	w.mu.Unlock()
}

func (w *Watcher) wake(opID string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, fn := range w.listeners {
		fn(opID)
	}
	for ch := range w.waiters[opID] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Watch returns a channel that receives when opID is announced, and a function
// that stops watching.
func (w *Watcher) Watch(opID string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	if w.waiters[opID] == nil {
		w.waiters[opID] = make(map[chan struct{}]struct{})
	}
	w.waiters[opID][ch] = struct{}{}
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		delete(w.waiters[opID], ch)
		if len(w.waiters[opID]) == 0 {
			delete(w.waiters, opID)
		}
		w.mu.Unlock()
	}
}
