package integration

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// The layout sweep the scheduler enqueues reaches every active site (and no
// deleted one) through the production worker: each gets a site:migrate_layout
// run, which finds a freshly provisioned site already current. A second
// sweep within the task's retention (an hour) queues nothing new: each site's
// migration keeps its task ID, completed.
func TestLayoutSweepReachesEveryActiveSite(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{})
		var ids []string
		for _, d := range []string{"one.layout.example", "two.layout.example", "gone.layout.example"} {
			op := s.createSite(s.tokenA, d, "php")
			if done := s.waitOp(s.tokenA, op.ID); done.Status != models.OpSucceeded {
				t.Fatalf("provision %s: %s", d, done.Status)
			}
			ids = append(ids, op.TargetID)
		}
		del := accepted(t, s.do("DELETE", "/api/v1/sites/"+ids[2], s.tokenA, nil))
		if done := s.waitOp(s.tokenA, del.ID); done.Status != models.OpSucceeded {
			t.Fatalf("deprovision: %s", done.Status)
		}
		layout, sweep := s.kit.Worker.Layout, s.kit.Worker.LayoutSweep
		n, err := sweep.Sweep(context.Background())
		if err != nil || n != 2 {
			t.Fatalf("sweep: %d sites, %v; want the 2 active ones", n, err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			migrated, current := layout.Counts()
			if migrated+current == 2 {
				if migrated != 0 {
					t.Errorf("%d sites migrated, want 0 (provisioned with the current layout)", migrated)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after 20s %d migrated, %d current; want 2 runs", migrated, current)
			}
			time.Sleep(50 * time.Millisecond)
		}
		second := time.Now()
		if n, err := sweep.Sweep(context.Background()); err != nil || n != 2 {
			t.Fatalf("second sweep: %d, %v", n, err)
		}
		insp := asynq.NewInspectorFromRedisClient(s.workerRedis)
		for _, id := range ids[:2] {
			info, err := insp.GetTaskInfo(queue.QueueLow, "migrate-layout:"+id)
			if err != nil {
				t.Fatalf("task of %s: %v", id, err)
			}
			if info.State != asynq.TaskStateCompleted || !info.CompletedAt.Before(second) {
				t.Errorf("task of %s after the second sweep: %s, completed %s; want the first run's, completed", id, info.State, info.CompletedAt)
			}
		}
		if _, err := insp.GetTaskInfo(queue.QueueLow, "migrate-layout:"+ids[2]); err == nil {
			t.Errorf("the deleted site got a layout migration")
		}
	})
}
