package queue_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// TaskKinds names each task type with the queue its constructor really puts
// it on: every constructor's task is enqueued (on an in-process Redis, the one
// `chom dev` runs on) and the queue asynq reports is compared with the list.
func TestTaskKinds(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	c := asynq.NewClient(asynq.RedisClientOpt{Addr: mr.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	must := func(task *asynq.Task, err error) *asynq.Task {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return task
	}
	tasks := []*asynq.Task{
		queue.NewReconcileTask(),
		must(queue.NewHealthSweepTask(now, time.Minute)),
		must(queue.NewHealthCheckTask("vps_1", now, time.Minute)),
		must(queue.NewUsageMeterSweepTask(now, time.Hour)),
		must(queue.NewUsageMeterTask(queue.UsageMeterPayload{TenantID: "ten_0123456789abcdef0123456789abcdef", PeriodStart: now.Add(-time.Hour), PeriodEnd: now})),
		queue.NewBackupPruneTask(),
		queue.NewBackupSchedulesTask(),
		must(queue.NewSiteMigrateLayoutTask("site_0123456789abcdef0123456789abcdef")),
		queue.NewSiteMigrateLayoutSweepTask(),
		queue.NewCertificateRenewSweepTask(time.Hour),
		queue.NewOperationsPruneTask(),
	}
	for _, opType := range []string{models.OpTypeSiteProvision, models.OpTypeSiteDeprovision, models.OpTypeVPSHealthCheck,
		models.OpTypeBackupCreate, models.OpTypeBackupRestore, models.OpTypeBackupDelete, models.OpTypeDomainVerify, models.OpTypeCertificateIssue} {
		task, _, err := queue.TaskForOperation(&models.Operation{ID: "op_" + opType, TenantID: "ten_1", Type: opType})
		if err != nil {
			t.Fatal(err)
		}
		tasks = append(tasks, task)
	}
	var got []queue.TaskKind
	for _, task := range tasks {
		info, err := c.EnqueueContext(t.Context(), task)
		if err != nil {
			t.Fatalf("enqueue %s: %v", task.Type(), err)
		}
		got = append(got, queue.TaskKind{Type: info.Type, Queue: info.Queue})
	}
	slices.SortFunc(got, func(a, b queue.TaskKind) int {
		if a.Type != b.Type {
			return strings.Compare(a.Type, b.Type)
		}
		return strings.Compare(a.Queue, b.Queue)
	})
	got = slices.Compact(got)
	if diff := cmp.Diff(got, queue.TaskKinds()); diff != "" {
		t.Errorf("TaskKinds (-constructors +list):\n%s", diff)
	}
}
