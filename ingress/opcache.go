package ingress

import (
	"sync"
	"time"

	"github.com/chomhq/chom/models"
)

// opCache keeps operations read by pollers, so that polling (the API's most
// frequent request) rarely reaches the database. A finished operation never
// changes and is kept for finishedTTL; an unfinished one for liveTTL at most, and
// it is dropped as soon as a worker announces a change (queue.Watcher), so a
// poller sees a change within liveTTL even if that announcement is lost.
type opCache struct {
	liveTTL, finishedTTL time.Duration
	max                  int
	now                  func() time.Time

	mu      sync.RWMutex
	entries map[string]opEntry
}

type opEntry struct {
	op      models.Operation
	expires time.Time
}

func newOpCache(liveTTL time.Duration, max int, now func() time.Time) *opCache {
	return &opCache{liveTTL: liveTTL, finishedTTL: 10 * time.Minute, max: max, now: now, entries: make(map[string]opEntry)}
}

// get returns a copy of the cached operation with id, if fresh.
func (c *opCache) get(id string) (*models.Operation, bool) {
	c.mu.RLock()
	e, ok := c.entries[id]
	c.mu.RUnlock()
	if !ok || !c.now().Before(e.expires) {
		return nil, false
	}
	op := e.op
	return &op, true
}

// put remembers op. When the cache is full it starts over, which is cheap and
// only costs the next reads a trip to the database.
func (c *opCache) put(op *models.Operation) {
	ttl := c.liveTTL
	if op.Terminal() {
		ttl = c.finishedTTL
	}
	c.mu.Lock()
	if len(c.entries) >= c.max {
		clear(c.entries)
	}
	c.entries[op.ID] = opEntry{op: *op, expires: c.now().Add(ttl)}
	c.mu.Unlock()
}

// forget drops id; the watcher calls it when a worker announces a change.
func (c *opCache) forget(id string) {
	c.mu.Lock()
	delete(c.entries, id)
	c.mu.Unlock()
}
