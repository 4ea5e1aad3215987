package ingress

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/chomhq/chom/models"
)

// opCache keeps operations read by pollers, so that polling (the API's most
// frequent request) rarely reaches the database. A finished operation never
// changes and is kept for finishedTTL; an unfinished one for liveTTL at most, and
// it is dropped as soon as a worker announces a change (queue.Watcher), so a
// poller sees a change within liveTTL even if that announcement is lost.
//
// Each entry is kept rendered (renderedOp): its ETag and the JSON body GET
// /operations/{id} answers are computed once, when the operation is read from
// the database, so a poll answered from the cache encodes nothing.
type opCache struct {
	liveTTL, finishedTTL time.Duration
	max                  int
	now                  func() time.Time

	mu      sync.RWMutex
	entries map[string]opEntry
}

type opEntry struct {
	r       renderedOp
	expires time.Time
}

func newOpCache(liveTTL time.Duration, max int, now func() time.Time) *opCache {
	return &opCache{liveTTL: liveTTL, finishedTTL: 10 * time.Minute, max: max, now: now, entries: make(map[string]opEntry)}
}

// get returns the cached operation with id, if fresh. What it returns is
// shared with other readers: it must not be modified.
func (c *opCache) get(id string) (renderedOp, bool) {
	c.mu.RLock()
	e, ok := c.entries[id]
	c.mu.RUnlock()
	if !ok || !c.now().Before(e.expires) {
		return renderedOp{}, false
	}
	return e.r, true
}

// put remembers r, which from then on is shared: the caller must not modify
// it. When the cache is full it starts over, which is cheap and only costs
// the next reads a trip to the database.
func (c *opCache) put(r renderedOp) {
	ttl := c.liveTTL
	if r.op.Terminal() {
		ttl = c.finishedTTL
	}
	c.mu.Lock()
	if len(c.entries) >= c.max {
		clear(c.entries)
	}
	c.entries[r.op.ID] = opEntry{r: r, expires: c.now().Add(ttl)}
	c.mu.Unlock()
}

// forget drops id; the watcher calls it when a worker announces a change.
func (c *opCache) forget(id string) {
	c.mu.Lock()
	delete(c.entries, id)
	c.mu.Unlock()
}

// renderedOp is an operation with what GET /operations/{id} answers for it:
// its ETag and its JSON body (operationView, encoded as gin's c.JSON encodes
// it).
type renderedOp struct {
	op   *models.Operation
	etag string
	body []byte
}

// renderOperation encodes op's view and ETag. op is kept by the result.
func renderOperation(op *models.Operation) (renderedOp, error) {
	body, err := json.Marshal(operationView(op))
	if err != nil {
		return renderedOp{}, fmt.Errorf("ingress: encode operation %s: %w", op.ID, err)
	}
	return renderedOp{op: op, etag: operationETag(op), body: body}, nil
}
