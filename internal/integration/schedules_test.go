package integration

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/models"
)

// scheduleOps lists the tenant's backup.create operations, newest first.
func (s *stack) scheduleOps(t *testing.T) []ingress.OperationView {
	t.Helper()
	var ops ingress.Page[ingress.OperationView]
	r := s.do("GET", "/api/v1/operations?type="+models.OpTypeBackupCreate, s.tokenA, nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET operations: %d %s", r.status, r.body)
	}
	r.json(t, &ops)
	return ops.Data
}

// putSchedule PUTs a daily files schedule on siteID and returns it.
func (s *stack) putSchedule(t *testing.T, siteID string) models.BackupSchedule {
	t.Helper()
	r := s.do("PUT", "/api/v1/sites/"+siteID+"/backup-schedule", s.tokenA, `{"frequency":"daily","keep":2,"type":"files"}`)
	if r.status != http.StatusOK {
		t.Fatalf("PUT schedule: %d %s", r.status, r.body)
	}
	var sc models.BackupSchedule
	r.json(t, &sc)
	return sc
}

// A new schedule is due at once: with a worker and no scheduler (so no
// backup:schedules tick will ever come), PUT /sites/{id}/backup-schedule
// leads to its first backup, one backup.create operation made by the
// schedule, finished within 10 seconds. The schedule's next run moves one
// period on; PUT again (same frequency) books nothing more.
func TestNewScheduleBacksUpAtOnce(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{})
		s.needBackups()
		op := s.createSite(s.tokenA, "due-now.example", "html")
		if done := s.waitOp(s.tokenA, op.ID); done.Status != models.OpSucceeded {
			t.Fatalf("provision %s", done.Status)
		}
		put := time.Now()
		sc := s.putSchedule(t, op.TargetID)
		if min := put.Add(23 * time.Hour); sc.NextRunAt.Before(min) {
			t.Errorf("schedule's next run %s, want a day after the first backup booked at PUT (%s)", sc.NextRunAt, put)
		}

		var backup ingress.OperationView
		deadline := put.Add(10 * time.Second)
		for {
			if ops := s.scheduleOps(t); len(ops) == 1 && models.IsTerminal(ops[0].Status) {
				backup = ops[0]
				break
			} else if len(ops) > 1 {
				t.Fatalf("%d backup operations for one new schedule, want 1: %+v", len(ops), ops)
			}
			if time.Now().After(deadline) {
				t.Fatalf("no finished backup 10s after PUT of a new schedule: %+v", s.scheduleOps(t))
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("first scheduled backup finished %s after PUT", time.Since(put).Round(time.Millisecond))
		if backup.Status != models.OpSucceeded {
			t.Fatalf("first scheduled backup %s: %+v", backup.Status, backup)
		}
		b := s.backup(t, s.tokenA, backup.TargetID)
		if b.ScheduleID == nil || *b.ScheduleID != sc.ID || b.Status != models.BackupStatusCompleted {
			t.Fatalf("backup %+v, want completed and made by schedule %s", b, sc.ID)
		}

		// Replacing the schedule (same frequency) is not a new one: nothing more is booked.
		s.putSchedule(t, op.TargetID)
		time.Sleep(300 * time.Millisecond)
		if n := s.count("operations", "op_type = ?", models.OpTypeBackupCreate); n != 1 {
			t.Fatalf("%d backup operations after a second PUT, want 1", n)
		}
	})
}

// A new schedule's first backup is not lost when Redis is down at PUT: its
// operation is committed pending and the reconciler enqueues it. And a site
// busy with another mutation at PUT keeps the schedule due (no operation) for
// the next sweep, and the PUT still answers 200.
func TestNewScheduleRedisDownOrSiteBusy(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{})
		s.needBackups()
		op := s.createSite(s.tokenA, "due-later.example", "html")
		if done := s.waitOp(s.tokenA, op.ID); done.Status != models.OpSucceeded {
			t.Fatalf("provision %s", done.Status)
		}
		s.proxy.Cut()
		s.putSchedule(t, op.TargetID)
		s.proxy.Restore()
		ops := s.scheduleOps(t)
		if len(ops) != 1 || ops[0].Status != models.OpPending {
			t.Fatalf("after PUT with Redis down: %+v, want one pending backup.create", ops)
		}
		rep, err := s.reconciler.Run(context.Background())
		if err != nil || rep.Enqueued != 1 {
			t.Fatalf("reconciler = %+v, %v; want the backup enqueued", rep, err)
		}
		if done := s.waitOp(s.tokenA, ops[0].ID); done.Status != models.OpSucceeded {
			t.Fatalf("first scheduled backup %s", done.Status)
		}

		// Busy: a deprovision holds the site's lock (committed with Redis cut,
		// so it stays pending and holds it).
		other := s.createSite(s.tokenA, "busy-sched.example", "html")
		if done := s.waitOp(s.tokenA, other.ID); done.Status != models.OpSucceeded {
			t.Fatalf("provision %s", done.Status)
		}
		s.proxy.Cut()
		accepted(t, s.do("DELETE", "/api/v1/sites/"+other.TargetID, s.tokenA, nil))
		sc := s.putSchedule(t, other.TargetID)
		s.proxy.Restore()
		if n := s.count("operations", "op_type = ?", models.OpTypeBackupCreate); n != 1 {
			t.Fatalf("%d backup operations, want 1: a busy site's schedule books nothing at PUT", n)
		}
		if sc.NextRunAt.After(time.Now()) {
			t.Fatalf("busy site's schedule next run %s, want still due", sc.NextRunAt)
		}
	})
}
