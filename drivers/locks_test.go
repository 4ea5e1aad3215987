package drivers_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chomhq/chom/drivers"
)

// One holder per server at a time, servers independent of each other, and a
// waiter gives up when its context ends.
func TestServerLocks(t *testing.T) {
	var locks drivers.ServerLocks
	ctx := t.Context()
	var inside, most atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			unlock, err := locks.Lock(ctx, "vps_a")
			if err != nil {
				t.Error(err)
				return
			}
			n := inside.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(2 * time.Millisecond)
			inside.Add(-1)
			unlock()
		})
	}
	wg.Wait()
	if most.Load() != 1 {
		t.Errorf("%d holders of one server's lock at once, want 1", most.Load())
	}

	unlock, err := locks.Lock(ctx, "vps_a")
	if err != nil {
		t.Fatal(err)
	}
	other, err := locks.Lock(ctx, "vps_b")
	if err != nil {
		t.Fatalf("another server's lock: %v", err)
	}
	other()
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := locks.Lock(short, "vps_a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Lock of a held server with an ending context: %v, want DeadlineExceeded", err)
	}
	unlock()
	if again, err := locks.Lock(ctx, "vps_a"); err != nil {
		t.Errorf("Lock after unlock: %v", err)
	} else {
		again()
	}
}
