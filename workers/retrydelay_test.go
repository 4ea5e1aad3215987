package workers

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/chomhq/chom/drivers"
)

// waitUntil is a deferral that names when it may run again.
type waitUntil struct{ at time.Time }

func (w waitUntil) Error() string      { return "budget spent" }
func (w waitUntil) Unwrap() error      { return drivers.ErrDeferred }
func (w waitUntil) RetryAt() time.Time { return w.at }

// TestRetryDelayHonoursRetryAt: a deferral with a time (a CA's rate limit, a
// spent issuance budget) waits until then, not the short deferral delay; a
// time already near or past falls back to the deferral delay; a failure
// with a RetryAt method that is not a deferral still backs off.
func TestRetryDelayHonoursRetryAt(t *testing.T) {
	t.Parallel()
	const deferDelay = 10 * time.Second
	delay := RetryDelay(time.Second, time.Minute, deferDelay)
	hour := fmt.Errorf("issue: %w", waitUntil{at: time.Now().Add(time.Hour)})
	if d := delay(3, hour, nil); d < 59*time.Minute || d > time.Hour {
		t.Errorf("a deferral until an hour from now waits %s", d)
	}
	past := waitUntil{at: time.Now().Add(-time.Minute)}
	if d := delay(3, past, nil); d < deferDelay/2 || d >= 3*deferDelay/2 {
		t.Errorf("a deferral whose time has passed waits %s, want the deferral delay", d)
	}
	plain := errors.New("boom")
	if d := delay(0, plain, nil); d > time.Minute {
		t.Errorf("a failure waits %s, want the backoff", d)
	}
}
