package stack

import (
	"testing"
	"time"

	"github.com/chomhq/chom/jobs"
)

func TestHealthConfig(t *testing.T) {
	t.Parallel()
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	c, err := LoadConfig(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.HealthInterval != time.Minute || c.HealthHysteresis != 3 || c.HealthCheckTimeout != 10*time.Second ||
		c.HealthRetention != 24*time.Hour || c.HealthThresholds != jobs.DefaultHealthThresholds() {
		t.Errorf("defaults: %+v", c)
	}
	rows := Schedule(c)
	found := false
	for _, r := range rows {
		if r.Name == "health_sweep" {
			found = r.Every == time.Minute
			task, err := r.NewTask(time.Unix(0, 0))
			if err != nil || task.Type() != "vps:health_sweep" {
				t.Errorf("health_sweep task = %v, %v", task, err)
			}
		}
	}
	if !found {
		t.Error("no health_sweep row every CHOM_HEALTH_INTERVAL in Schedule()")
	}
	for name, kv := range map[string]map[string]string{
		"degraded above unhealthy":   {"CHOM_HEALTH_DISK_PERCENT_DEGRADED": "96"},
		"percent over 100":           {"CHOM_HEALTH_MEM_PERCENT_UNHEALTHY": "101"},
		"timeout not below interval": {"CHOM_HEALTH_INTERVAL": "5s", "CHOM_HEALTH_CHECK_TIMEOUT": "5s"},
		"bad hysteresis":             {"CHOM_HEALTH_HYSTERESIS": "0"},
	} {
		if _, err := LoadConfig(env(kv)); err == nil {
			t.Errorf("%s: %v accepted", name, kv)
		}
	}
}
