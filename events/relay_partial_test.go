package events

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/sony/gobreaker/v2"
)

// A publish call that some partitions acknowledged is progress (a broker of a
// cluster lost, its partitions moving): it must not open the circuit, which
// would stop the healthy partitions too; calls that wrote nothing must.
func TestBreakerCountsOnlyCallsThatWroteNothing(t *testing.T) {
	t.Parallel()
	lost := kafka.NotEnoughReplicas
	for _, tc := range []struct {
		name string
		err  error
		open bool
	}{
		{"partly acknowledged", fmt.Errorf("publish: %w", kafka.WriteErrors{nil, lost, nil}), false},
		{"no partition acknowledged", kafka.WriteErrors{lost, lost}, true},
		{"unreachable", errors.New("dial tcp 127.0.0.1:1: connection refused"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// The breaker of a relay, as NewRelay configures it.
			b := newBreaker(3, time.Minute, nil)
			for range 5 {
				_, _ = b.Execute(func() (struct{}, error) { return struct{}{}, tc.err })
			}
			if open := b.State() == gobreaker.StateOpen; open != tc.open {
				t.Errorf("after 5 calls failing with %v: open = %v, want %v", tc.err, open, tc.open)
			}
		})
	}
}
