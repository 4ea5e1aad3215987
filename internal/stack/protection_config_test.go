package stack

import (
	"strings"
	"testing"
	"time"
)

func TestProtectionConfig(t *testing.T) {
	t.Parallel()
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	c, err := LoadConfig(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.VPSMaxJobs != 4 || c.TenantMaxJobs != 8 || c.JobSlotLease != 30*time.Second || c.JobDeferDelay != 2*time.Second {
		t.Errorf("defaults: vps %d tenant %d lease %s delay %s", c.VPSMaxJobs, c.TenantMaxJobs, c.JobSlotLease, c.JobDeferDelay)
	}
	c, err = LoadConfig(env(map[string]string{"CHOM_VPS_MAX_JOBS": "2", "CHOM_TENANT_MAX_JOBS": "3",
		"CHOM_JOB_SLOT_LEASE": "10s", "CHOM_JOB_DEFER_DELAY": "500ms"}))
	if err != nil || c.VPSMaxJobs != 2 || c.TenantMaxJobs != 3 || c.JobSlotLease != 10*time.Second || c.JobDeferDelay != 500*time.Millisecond {
		t.Errorf("set: %v, vps %d tenant %d lease %s delay %s", err, c.VPSMaxJobs, c.TenantMaxJobs, c.JobSlotLease, c.JobDeferDelay)
	}
	for name, tt := range map[string]struct {
		kv   map[string]string
		want string
	}{
		"zero vps limit":  {map[string]string{"CHOM_VPS_MAX_JOBS": "0"}, "CHOM_VPS_MAX_JOBS"},
		"negative tenant": {map[string]string{"CHOM_TENANT_MAX_JOBS": "-1"}, "CHOM_TENANT_MAX_JOBS"},
		"lease under 1s":  {map[string]string{"CHOM_JOB_SLOT_LEASE": "500ms"}, "CHOM_JOB_SLOT_LEASE"},
		"negative delay":  {map[string]string{"CHOM_JOB_DEFER_DELAY": "-1s"}, "CHOM_JOB_DEFER_DELAY"},
		"not a number":    {map[string]string{"CHOM_VPS_MAX_JOBS": "many"}, "CHOM_VPS_MAX_JOBS"},
	} {
		_, err := LoadConfig(env(tt.kv))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v: error %v, want one naming %s", name, tt.kv, err, tt.want)
		}
	}
}
