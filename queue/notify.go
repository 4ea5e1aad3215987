package queue

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chomhq/chom/internal/groupcommit"
)

// OperationsChannel is the Redis pub/sub channel on which workers announce that an
// operation changed; its message is the operation ID. It only wakes long polls
// early: a lost message delays a poller until its next database check.
const OperationsChannel = "chom:operations:changed"

// Notifier announces operation changes. An announcement is sent in the
// background: OperationChanged returns at once, and the announcements made
// while a pipeline is in flight go together in the next (internal/groupcommit),
// one round trip for many, each operation once. A worker announces every
// operation it starts and finishes; waiting for each PUBLISH cost a round
// trip, two per provision, for a message whose loss only delays a poller.
type Notifier struct {
	rc    redis.UniversalClient
	batch *groupcommit.Batcher[string, struct{}]
}

// notifyTimeout bounds one pipeline of announcements.
const notifyTimeout = 5 * time.Second

// NewNotifier returns a Notifier over rc. It needs no Run and no Close: a
// goroutine sends only while announcements wait.
func NewNotifier(rc redis.UniversalClient) *Notifier {
	n := &Notifier{rc: rc}
	b, err := groupcommit.New(groupcommit.Config[string, struct{}]{Commit: n.publish, Timeout: notifyTimeout})
	if err != nil {
		// The configuration above is constant and valid; New refuses only
		// a missing Commit or a negative number.
		panic(fmt.Sprintf("queue: notifier: %v", err))
	}
	n.batch = b
	return n
}

// OperationChanged announces opID. It does not wait: the change is
// committed already, a failure to announce it is ignored on purpose, and
// pollers re-read the database on their own schedule.
func (n *Notifier) OperationChanged(ctx context.Context, opID string) {
	n.batch.Send(ctx, opID)
}

// publish sends one PUBLISH per distinct operation of batch, pipelined.
func (n *Notifier) publish(ctx context.Context, batch []string) ([]groupcommit.Result[struct{}], error) {
	pipe := n.rc.Pipeline()
	seen := make(map[string]bool, len(batch))
	for _, id := range batch {
		if !seen[id] {
			seen[id] = true
			pipe.Publish(ctx, OperationsChannel, id)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("announce %d operations: %w", len(seen), err)
	}
	return make([]groupcommit.Result[struct{}], len(batch)), nil
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
