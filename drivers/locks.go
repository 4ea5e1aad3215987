package drivers

import (
	"context"
	"sync"
)

// ServerLocks serialises a driver's changes to each server within one
// process: one holder per server ID at a time (a reload of nginx must not
// interleave with another site's configuration write). The zero value is
// ready to use; it is safe for concurrent use.
type ServerLocks struct {
	mu   sync.Mutex
	sems map[string]chan struct{} // one-slot semaphore per server ID
}

// Lock waits until it holds serverID's lock, or gives up with ctx's error
// when ctx ends first. The caller must call unlock once.
func (l *ServerLocks) Lock(ctx context.Context, serverID string) (unlock func(), err error) {
	l.mu.Lock()
	if l.sems == nil {
		l.sems = map[string]chan struct{}{}
	}
	sem, ok := l.sems[serverID]
	if !ok {
		sem = make(chan struct{}, 1)
		l.sems[serverID] = sem
	}
	l.mu.Unlock()
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
