package workers

import (
	"context"
	"log/slog"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/queue"
)

// taskIDs are the identifiers of the task a context runs, for its log lines.
type taskIDs struct {
	taskID, operationID, tenantID string
}

type taskIDsKey struct{}

// withTaskIDs returns ctx carrying the IDs of task t: its asynq task ID and,
// for an operation task, the operation and tenant of its payload.
func withTaskIDs(ctx context.Context, t *asynq.Task) context.Context {
	var ids taskIDs
	ids.taskID, _ = asynq.GetTaskID(ctx)
	if p, err := queue.DecodeOperationPayload(t.Payload()); err == nil {
		ids.operationID, ids.tenantID = p.OperationID, p.TenantID
	}
	return context.WithValue(ctx, taskIDsKey{}, ids)
}

// TaskLogHandler wraps next so that every line logged with the context of a
// running task (the *Context methods of slog, or Log) carries task_id and, for
// an operation task, operation_id and tenant_id: the job's lines, the driver's
// and the worker's own, with no logger threaded through by hand. A key the
// line or its logger already has (the driver's tenant_id, say) is not added
// twice; after WithGroup nothing is added (the keys would land in the group).
// Lines logged without a task's context pass through unchanged. Every process
// builds its logger with it (cmd/chom newLogger).
func TaskLogHandler(next slog.Handler) slog.Handler {
	return &taskLogHandler{next: next}
}

type taskLogHandler struct {
	next    slog.Handler
	has     map[string]bool // top-level keys added by WithAttrs
	grouped bool
}

func (h *taskLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *taskLogHandler) Handle(ctx context.Context, r slog.Record) error {
	ids, ok := ctx.Value(taskIDsKey{}).(taskIDs)
	if !ok || h.grouped {
		return h.next.Handle(ctx, r)
	}
	present := map[string]bool{}
	r.Attrs(func(a slog.Attr) bool { present[a.Key] = true; return true })
	var add []slog.Attr
	for _, kv := range [...][2]string{{"task_id", ids.taskID}, {"operation_id", ids.operationID}, {"tenant_id", ids.tenantID}} {
		if kv[1] != "" && !present[kv[0]] && !h.has[kv[0]] {
			add = append(add, slog.String(kv[0], kv[1]))
		}
	}
	if len(add) > 0 {
		r = r.Clone()
		r.AddAttrs(add...)
	}
	return h.next.Handle(ctx, r)
}

func (h *taskLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := &taskLogHandler{next: h.next.WithAttrs(as), grouped: h.grouped, has: make(map[string]bool, len(h.has)+len(as))}
	for k := range h.has {
		n.has[k] = true
	}
	if !h.grouped {
		for _, a := range as {
			n.has[a.Key] = true
		}
	}
	return n
}

func (h *taskLogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &taskLogHandler{next: h.next.WithGroup(name), has: h.has, grouped: true}
}
