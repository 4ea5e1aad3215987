package workers

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TaskLogHandler adds the running task's IDs to lines logged with its context,
// once, and leaves every other line alone.
func TestTaskLogHandler(t *testing.T) {
	t.Parallel()
	task := context.WithValue(context.Background(), taskIDsKey{}, taskIDs{taskID: "op_1", operationID: "op_1", tenantID: "ten_1"})
	system := context.WithValue(context.Background(), taskIDsKey{}, taskIDs{taskID: "reconcile-1"})
	tests := []struct {
		name string
		log  func(l *slog.Logger)
		want map[string]any
	}{
		{"task context", func(l *slog.Logger) { l.InfoContext(task, "m") },
			map[string]any{"msg": "m", "task_id": "op_1", "operation_id": "op_1", "tenant_id": "ten_1"}},
		{"no context", func(l *slog.Logger) { l.Info("m") }, map[string]any{"msg": "m"}},
		{"other context", func(l *slog.Logger) { l.InfoContext(context.Background(), "m") }, map[string]any{"msg": "m"}},
		{"logger has tenant_id", func(l *slog.Logger) { l.With("tenant_id", "ten_1", "site_id", "s").InfoContext(task, "m") },
			map[string]any{"msg": "m", "tenant_id": "ten_1", "site_id": "s", "task_id": "op_1", "operation_id": "op_1"}},
		{"line has task_id", func(l *slog.Logger) { l.InfoContext(task, "m", "task_id", "op_1") },
			map[string]any{"msg": "m", "task_id": "op_1", "operation_id": "op_1", "tenant_id": "ten_1"}},
		{"system task", func(l *slog.Logger) { l.InfoContext(system, "m", "operation_id", "op_9") },
			map[string]any{"msg": "m", "task_id": "reconcile-1", "operation_id": "op_9"}},
		{"in a group", func(l *slog.Logger) { l.WithGroup("g").InfoContext(task, "m", "k", "v") },
			map[string]any{"msg": "m", "g": map[string]any{"k": "v"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			h := slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
				if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
					return slog.Attr{}
				}
				return a
			}})
			tc.log(slog.New(TaskLogHandler(h)))
			var got map[string]any
			if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
				t.Fatalf("%v: %s", err, buf.Bytes())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("line (-want +got):\n%s", diff)
			}
			for _, k := range []string{"task_id", "operation_id", "tenant_id"} {
				if n := bytes.Count(buf.Bytes(), []byte(`"`+k+`":`)); n > 1 {
					t.Errorf("%s appears %d times: %s", k, n, buf.Bytes())
				}
			}
		})
	}
}
