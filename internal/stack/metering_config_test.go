package stack

import (
	"testing"
	"time"

	"github.com/chomhq/chom/queue"
)

func TestMeteringConfig(t *testing.T) {
	t.Parallel()
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	for _, tc := range []struct {
		name  string
		env   map[string]string
		every time.Duration
		bad   bool
	}{
		{"default", nil, time.Hour, false},
		{"daily", map[string]string{"CHOM_METERING_INTERVAL": "24h"}, 24 * time.Hour, false},
		{"too short", map[string]string{"CHOM_METERING_INTERVAL": "30s"}, 0, true},
		{"not a duration", map[string]string{"CHOM_METERING_INTERVAL": "hourly"}, 0, true},
	} {
		c, err := LoadConfig(env(tc.env))
		if tc.bad {
			if err == nil {
				t.Errorf("%s: loadConfig accepted %v", tc.name, tc.env)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		found := false
		for _, r := range Schedule(c) {
			if r.Name != "metering" {
				continue
			}
			found = r.Every == tc.every
			tick := time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC)
			task, err := r.NewTask(tick)
			if err != nil || task.Type() != queue.TypeUsageMeterSweep {
				t.Fatalf("%s: metering task = %v, %v", tc.name, task, err)
			}
			p, err := queue.DecodeUsagePeriodPayload(task.Payload())
			if err != nil || !p.PeriodStart.Equal(tick.Add(-tc.every)) || !p.PeriodEnd.Equal(tick) {
				t.Errorf("%s: the tick at %s meters %+v (%v), want the period that just ended", tc.name, tick, p, err)
			}
		}
		if !found {
			t.Errorf("%s: no metering row every %s in Schedule()", tc.name, tc.every)
		}
	}
}
