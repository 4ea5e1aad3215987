package faults

import (
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// Injected: the only worker is killed with SIGKILL mid-provision. Thirty
// sites are provisioned first; then every server's reload is made to hang (see
// reloadGate) and 200 more sites are accepted, and the kill comes once a
// provision on each server has written all of its files and waits at the
// reload step, with the other provisions running behind it. The hang is lifted
// and a new worker starts at once.
//
// Must hold: the operations that were running when the worker died are run
// again once asynq's lease on their tasks has expired (30 s, then found by the
// recoverer, which looks every minute), every accepted operation finishes,
// and the ledger holds: one site, one nginx server block and one
// site.provisioned.v1 event per create, site_count equal to the sites bound —
// the half-done provisions were neither lost nor done twice.
func TestWorkerKilledMidProvision(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackConfig{})
	gate := s.newReloadGate()
	gate.open()
	s.startScheduler()
	w1 := s.startWorker()
	s.createSites("kill-first", 30)
	s.waitSettled(60 * time.Second)
	warm := s.acceptedSites()
	// The scheduler's layout sweep at its start enqueues a site:migrate_layout
	// for every site active by then, which reloads nginx too: one still to
	// run when the gate shuts hangs at the reload holding its server's job
	// slot, and no provision reaches the reload step on that server. Let them
	// finish first (the sweep's next tick is beyond the test: newStack).
	if !waitFor(60*time.Second, func() bool { return s.layoutTasksLive(warm) == 0 }) {
		t.Fatalf("%d layout migrations of the first sites still queued or running after 60s", s.layoutTasksLive(warm))
	}

	gate.shut()
	const n = 200
	s.createSites("kill", n)
	if !waitFor(60*time.Second, func() bool { return s.hungJobs() == len(s.vps) }) {
		t.Fatalf("no provision reached the reload step on every server within 60s: %v", s.opCounts())
	}
	w1.signal(syscall.SIGKILL)
	killed := time.Now()
	if _, ok := w1.wait(10 * time.Second); !ok {
		t.Fatal("worker did not die of SIGKILL")
	}
	running := s.idsWithStatus("running")
	t.Logf("killed %s with %d operations running (%d of them at the reload step): %v",
		w1.name, len(running), len(s.vps), s.opCounts())
	if len(running) < len(s.vps) {
		t.Fatalf("%d operations running when the worker was killed, want at least %d", len(running), len(s.vps))
	}

	gate.open()
	w2 := s.startWorker()
	took := s.waitSettled(100 * time.Second)
	t.Logf("all %d operations finished %s after the kill (%s after %s started)",
		n+30, time.Since(killed).Round(100*time.Millisecond), took.Round(100*time.Millisecond), w2.name)
	l := s.checkLedger()
	attempts := map[string]int{}
	for _, o := range l.ops {
		attempts[o.ID] = o.Attempts
	}
	for _, id := range running {
		if attempts[id] < 2 {
			t.Errorf("operation %s was running when the worker died but has %d attempt(s)", id, attempts[id])
		}
	}
	if !w2.running() {
		t.Errorf("%s exited:\n%s", w2.name, w2.tail(20))
	}
}

// Injected: SIGTERM to the only worker during long jobs: forty sites are
// provisioned, then every server's reload is made to hang (see reloadGate)
// while 150 creates and 40 deletes arrive, and the worker is told to stop
// with CHOM_SHUTDOWN_TIMEOUT=2s while its jobs hang. The hang is then lifted
// and a new worker starts.
//
// Must hold: the worker exits 0 soon after the shutdown timeout; the tasks it
// could not finish went back to the queue (each unfinished operation has a
// live task in Redis, none is lost or archived); the next worker finishes
// everything at once, without waiting for a lease to expire; the ledger holds
// for creates and deletes alike.
func TestWorkerTerminatedDuringWork(t *testing.T) {
	t.Parallel()
	// Limits that never bind: the test counts the tasks running at SIGTERM by
	// their operations, and a job deferred by a full per-VPS limit has a
	// running operation but no running task (TestVPSUnreachable and
	// workers/limits test the limits).
	s := newStack(t, stackConfig{Env: map[string]string{"CHOM_VPS_MAX_JOBS": "1000", "CHOM_TENANT_MAX_JOBS": "1000"}})
	gate := s.newReloadGate()
	gate.open()
	s.startScheduler()
	w1 := s.startWorker()
	s.createSites("term-old", 40)
	s.waitSettled(60 * time.Second)
	olds := s.acceptedSites()

	gate.shut()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.createSites("term-new", 150)
	}()
	s.parallel(len(olds), func(i int) error {
		r, err := s.deleteSite(olds[i])
		if err != nil {
			return err
		}
		if r.status != http.StatusAccepted {
			return fmt.Errorf("DELETE /sites/%s: %d %s", olds[i], r.status, r.body)
		}
		return nil
	})
	<-done
	if !waitFor(60*time.Second, func() bool { return s.opCounts()["running"] >= 20 }) {
		t.Fatalf("the worker did not take 20 tasks within 60s: %v", s.opCounts())
	}
	running := s.idsWithStatus("running")
	w1.signal(syscall.SIGTERM)
	termed := time.Now()
	code, exited := w1.wait(15 * time.Second)
	stopped := time.Since(termed)
	if !exited {
		t.Fatalf("worker still running 15s after SIGTERM with CHOM_SHUTDOWN_TIMEOUT=2s:\n%s", w1.tail(20))
	}
	if code != 0 {
		t.Errorf("worker exited %d after SIGTERM, want 0:\n%s", code, w1.tail(20))
	}
	requeued := w1.countLogPrefix("Quitting worker")
	t.Logf("worker exited %d %s after SIGTERM with %d tasks running; %d re-queued at the timeout; %v",
		code, stopped.Round(10*time.Millisecond), len(running), requeued, s.opCounts())
	if stopped > 2*time.Second+6*time.Second {
		t.Errorf("worker took %s to stop, want about the 2s shutdown timeout", stopped)
	}
	if requeued != len(running) {
		t.Errorf("%d tasks re-queued at the shutdown timeout, want the %d that were running", requeued, len(running))
	}
	for _, id := range s.idsWithStatus("running") {
		if st := s.taskState(id); st != "live" {
			t.Errorf("operation %s is running but its task is %s after a graceful stop", id, st)
		}
	}

	gate.open()
	w2 := s.startWorker()
	took := s.waitSettled(30 * time.Second)
	t.Logf("all operations finished %s after %s started", took.Round(100*time.Millisecond), w2.name)
	s.checkLedger()
}
