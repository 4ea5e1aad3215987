package testenv

import (
	"context"
	"sync"
	"testing"
	"time"
)

// RunInBackground runs run in a goroutine until the returned stop is called or
// the test ends. stop cancels run's context and waits for it to return: an error
// from run, or a run that has not returned within 30s, fails the test. stop may
// be called more than once. The context outlives t.Context() so run is not cut
// off before the test's own cleanups have stopped it.
func RunInBackground(tb testing.TB, name string, run func(ctx context.Context) error) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.WithoutCancel(tb.Context()))
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					tb.Errorf("%s Run: %v", name, err)
				}
			case <-time.After(30 * time.Second):
				tb.Errorf("%s did not stop within 30s", name)
			}
		})
	}
	tb.Cleanup(stop)
	return stop
}
