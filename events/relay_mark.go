package events

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// markFlushTimeout bounds how long a leader that stops waits for the marks of
// the rows Kafka already acknowledged; rows left unmarked are published again
// by the next leader (duplicates, never a loss).
const markFlushTimeout = 5 * time.Second

// markSplit is how many statements, each on a pool connection of its own,
// mark one publish call's rows at once, when it has at least markSplitMin
// rows: a mark is the costliest statement of a row's trip (an UPDATE writes a
// new version of the row and its index entries), and one statement keeps one
// database core busy.
const (
	markSplit    = 2
	markSplitMin = 256
)

// errMarkerClosed is returned by submit after close: a bug in the leader.
var errMarkerClosed = errors.New("marker closed")

// marker marks acknowledged rows published in the background, so the leader
// reads and publishes its next rows while the database records the last ones.
// Marks go through the store's pool, not the lease's session, which stays free
// for the leader's reads: marking rows Kafka acknowledged is true whoever holds
// the lease (see models.Store.MarkOutboxPublished).
//
// One publish call is marked at a time (in up to markSplit statements) and
// none waits: submit returns once the marker has taken the IDs, which it does
// when the previous call's mark is done. So the mark of
// one publish call overlaps the Kafka write of the next, and a leader whose
// marks are slow (a locked row, a starved database) is held back by one call
// rather than running ahead of the database; the rows its reads skip (see
// outstanding) are those of two calls at most. The first failure stops the
// marker: the rows it could not mark stay unpublished, and the leader gives up
// the lease (errMark), so its successor publishes them again.
type marker struct {
	mark  func(context.Context, []int64) error
	queue chan []int64
	done  chan struct{}
	// failed is closed with err set when a mark fails.
	failed chan struct{}
	cancel context.CancelFunc

	mu sync.Mutex
	// pending are the IDs submitted and not yet marked, in submission order.
	pending []int64
	err     error
	closed  bool
}

// newMarker starts a marker that marks with mark. Its marks outlive ctx's
// cancellation (close flushes them, for at most markFlushTimeout), not its values.
func newMarker(ctx context.Context, mark func(context.Context, []int64) error) *marker {
	mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m := &marker{mark: mark, queue: make(chan []int64), done: make(chan struct{}),
		failed: make(chan struct{}), cancel: cancel}
	go m.loop(mctx)
	return m
}

// submit hands the marker the IDs of rows Kafka acknowledged. It waits while
// the previous mark runs, and returns the marker's error once a mark
// has failed, or ctx's.
func (m *marker) submit(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return errMarkerClosed
	}
	if m.err != nil {
		err := m.err
		m.mu.Unlock()
		return err
	}
	m.pending = append(m.pending, ids...)
	m.mu.Unlock()
	select {
	case m.queue <- ids:
		return nil
	case <-m.failed:
		return m.failure()
	case <-ctx.Done():
		// The rows stay pending, so the leader's remaining reads (there are
		// none: it is stopping) skip them; the next leader republishes them.
		return ctx.Err()
	}
}

// outstanding returns a copy of the IDs submitted and not yet marked: rows
// the leader's reads must skip, since they are published but may still look
// unpublished.
func (m *marker) outstanding() []int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.pending)
}

// failure returns the error of the mark that failed, nil while none has.
func (m *marker) failure() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// close stops taking IDs and waits until those submitted are marked, for at
// most markFlushTimeout; then it abandons them (cancelling the mark running).
func (m *marker) close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	m.mu.Unlock()
	close(m.queue)
	t := time.NewTimer(markFlushTimeout)
	defer t.Stop()
	select {
	case <-m.done:
	case <-t.C:
		m.cancel()
		<-m.done
	}
	m.cancel()
}

// loop marks the submitted IDs, one call at a time, until the queue is closed
// or a mark fails.
func (m *marker) loop(ctx context.Context) {
	defer close(m.done)
	for ids := range m.queue {
		if err := m.markSplit(ctx, ids); err != nil {
			m.mu.Lock()
			m.err = err
			m.mu.Unlock()
			close(m.failed)
			return
		}
		m.mu.Lock()
		// Calls are marked in the order they were submitted, so the marked IDs
		// lead pending.
		m.pending = slices.Delete(m.pending, 0, len(ids))
		m.mu.Unlock()
	}
}

// markSplit marks ids in up to markSplit statements at once, of consecutive
// IDs each, and returns the first error.
func (m *marker) markSplit(ctx context.Context, ids []int64) error {
	n := 1
	if len(ids) >= markSplitMin {
		n = markSplit
	}
	if n == 1 {
		return m.mark(ctx, ids)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	size := (len(ids) + n - 1) / n
	for i := range n {
		part := ids[min(i*size, len(ids)):min((i+1)*size, len(ids))]
		wg.Go(func() { errs[i] = m.mark(ctx, part) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
