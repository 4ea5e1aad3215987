package stack

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// The retention settings: their defaults, what is refused, and that the
// scheduler's operations_prune row is there exactly when something is pruned.
func TestRetentionConfig(t *testing.T) {
	t.Parallel()
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	rows := func(c Config) []string {
		var names []string
		for _, p := range Schedule(c) {
			names = append(names, p.Name)
		}
		return names
	}
	c, err := LoadConfig(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.OperationRetention != 30*24*time.Hour || c.AuditRetention != 400*24*time.Hour || c.OperationPruneEvery != time.Hour {
		t.Errorf("defaults: operations %s, audit %s, every %s", c.OperationRetention, c.AuditRetention, c.OperationPruneEvery)
	}
	if !slices.Contains(rows(c), "operations_prune") {
		t.Errorf("schedule rows %v lack operations_prune", rows(c))
	}
	c, err = LoadConfig(env(map[string]string{"CHOM_OPERATION_RETENTION": "0", "CHOM_AUDIT_RETENTION": "0"}))
	if err != nil || slices.Contains(rows(c), "operations_prune") {
		t.Errorf("both 0 (keep everything): %v, rows %v; want no operations_prune row", err, rows(c))
	}
	for name, tt := range map[string]struct {
		kv   map[string]string
		want string
	}{
		"operations 1 day":       {map[string]string{"CHOM_OPERATION_RETENTION": "24h"}, "CHOM_OPERATION_RETENTION"},
		"audit shorter":          {map[string]string{"CHOM_AUDIT_RETENTION": "240h"}, "CHOM_AUDIT_RETENTION"},
		"audit pruned, ops kept": {map[string]string{"CHOM_OPERATION_RETENTION": "0"}, "CHOM_AUDIT_RETENTION"},
		"prune every 10s":        {map[string]string{"CHOM_OPERATION_PRUNE_INTERVAL": "10s"}, "CHOM_OPERATION_PRUNE_INTERVAL"},
		"negative operations":    {map[string]string{"CHOM_OPERATION_RETENTION": "-1h"}, "CHOM_OPERATION_RETENTION"},
	} {
		_, err := LoadConfig(env(tt.kv))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v: error %v, want one naming %s", name, tt.kv, err, tt.want)
		}
	}
}
