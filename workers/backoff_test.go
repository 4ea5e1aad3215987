package workers_test

import (
	"errors"
	"testing"
	"time"

	"github.com/chomhq/chom/workers"
)

// Backoff waits at least base/2, never more than base/2 + max, and its ceiling
// doubles per attempt until max.
func TestBackoffBounds(t *testing.T) {
	t.Parallel()
	base, maxDelay := 100*time.Millisecond, 3*time.Second
	f := workers.Backoff(base, maxDelay)
	for n := 0; n < 40; n++ {
		ceiling := min(base<<min(n, 20), maxDelay)
		var longest time.Duration
		for i := 0; i < 200; i++ {
			d := f(n, errors.New("x"), nil)
			if d < base/2 || d > base/2+ceiling {
				t.Fatalf("attempt %d: delay %s outside [%s, %s]", n, d, base/2, base/2+ceiling)
			}
			longest = max(longest, d)
		}
		if n >= 3 && longest < base/2+ceiling/2 {
			t.Errorf("attempt %d: longest of 200 delays %s; jitter not spread to the ceiling %s", n, longest, ceiling)
		}
	}
}
