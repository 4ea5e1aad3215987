package faults

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/queue"
)

// Injected: the queue's Redis (its own redis-server, --appendonly yes
// --appendfsync always, as in production) is killed with SIGKILL while the
// worker holds 20 hung jobs (see reloadGate) and 80 more tasks wait in the
// queue; twenty sites are created while it is down; it is restarted on the
// same port and directory after a few seconds, then the hang is lifted. The
// ingress, the worker and the scheduler run throughout and are not restarted.
//
// Must hold: every create during the outage is still accepted (202: the row
// commits first) and answers quickly; after the restart the AOF gives back
// every task it acknowledged, so exactly the twenty accepted during the
// outage are enqueued again, each by the ingress's background retry (when
// Redis came back within the reconciler's grace of its refused enqueue) or
// by the reconciler, and nothing else is; every operation finishes; the
// ledger holds; no process died.
func TestRedisKilledAndRestarted(t *testing.T) {
	t.Parallel()
	rs := testenv.StartRedisServer(t, testenv.RedisServerConfig{AppendOnly: true})
	s := newStack(t, stackConfig{RedisURL: rs.URL})
	gate := s.newReloadGate()
	gate.open()
	sched := s.startScheduler()
	w := s.startWorker()
	s.createSites("aof-first", 30)
	s.waitSettled(60 * time.Second)

	gate.shut()
	s.createSites("aof-queued", 100)
	if !waitFor(30*time.Second, func() bool { return s.opCounts()["running"] >= 20 }) {
		t.Fatalf("the worker did not take 20 tasks within 30s: %v", s.opCounts())
	}
	rs.Kill(t)
	down := time.Now()
	var slowest time.Duration
	const during = 20
	outage := map[string]bool{} // operations accepted while Redis was down
	for i := range during {
		domain := fmt.Sprintf("aof-outage-%02d.faults.example", i)
		r, err := s.createSite(domain)
		if err != nil {
			t.Fatalf("POST /sites %s with Redis down: %v", domain, err)
		}
		if r.status != http.StatusAccepted {
			t.Errorf("POST /sites %s with Redis down: %d %s, want 202", domain, r.status, r.body)
		}
		var op opView
		r.json(t, &op)
		outage[op.ID] = true
		slowest = max(slowest, r.elapsed)
	}
	time.Sleep(3*time.Second - time.Since(down))
	rs.Start(t)
	t.Logf("Redis down for %s; %d creates accepted meanwhile, the slowest in %s; %v",
		time.Since(down).Round(10*time.Millisecond), during, slowest.Round(time.Millisecond), s.opCounts())
	if slowest > 3*time.Second {
		t.Errorf("a create took %s with Redis down, want under 3s", slowest)
	}

	gate.open()
	// An attempt that ended at the moment Redis was killed (most often one
	// deferred by a full per-VPS limit, handed back just after the worker's
	// PING) stays "active": asynq v0.26 retries the failed hand-back with a
	// context it has already cancelled, so only its lease recovery (30s lease,
	// 30s grace, a pass a minute) re-queues it; 1m46s is typical here. Attempts
	// ending during the outage are held until Redis answers (workers'
	// awaitRedis) and are not stranded. Allow four minutes. Nothing is lost
	// meanwhile: the ledger below still holds.
	took := s.waitSettled(4 * time.Minute)
	reenqueued := w.logValues("re-enqueued operation whose task was missing", "operation_id")
	retried := s.ingress.logValues("enqueued operation after retrying", "operation_id")
	t.Logf("all operations finished %s after Redis came back; the ingress's retry enqueued %d operations, the reconciler %d",
		took.Round(100*time.Millisecond), len(retried), len(reenqueued))
	for id := range outage {
		if !reenqueued[id] && !retried[id] {
			t.Errorf("operation %s, accepted while Redis was down, was enqueued neither by the ingress's retry nor by the reconciler", id)
		}
	}
	for id := range retried {
		if !outage[id] {
			t.Errorf("operation %s, accepted before Redis was killed, was enqueued again by the ingress's retry", id)
		}
	}
	for id := range reenqueued {
		if !outage[id] {
			t.Errorf("operation %s, enqueued before Redis was killed, had to be re-enqueued: the AOF lost its task", id)
		}
	}
	s.checkLedger()
	s.assertRunning(sched, w)
}

// Injected: FLUSHALL on the queue's Redis while the worker holds hung jobs
// (see reloadGate) and the other tasks wait in the queue, pending or
// deferred by the per-server job limit: every task, lease and retention
// record is gone. A second worker starts once the operations are
// past the reconciler's grace (3s), and the hang is lifted after the
// reconciler has run.
//
// Must hold: the reconciler (enqueued by the scheduler every 2s) rebuilds the
// queue from the database — the pending operations and the running ones
// whose tasks vanished — so an operation may run twice at once, in two
// workers; every operation finishes, and the ledger holds: still one site,
// one server block and one event each.
func TestRedisFlushed(t *testing.T) {
	t.Parallel()
	rs := testenv.StartRedisServer(t, testenv.RedisServerConfig{AppendOnly: true})
	s := newStack(t, stackConfig{RedisURL: rs.URL})
	gate := s.newReloadGate()
	gate.open()
	sched := s.startScheduler()
	w1 := s.startWorker()
	s.createSites("flush-first", 30)
	s.waitSettled(60 * time.Second)

	gate.shut()
	s.createSites("flush", 60)
	created := time.Now()
	if !waitFor(30*time.Second, func() bool { return s.opCounts()["running"] >= 20 }) {
		t.Fatalf("the worker did not take 20 tasks within 30s: %v", s.opCounts())
	}
	rc := rs.Client(t)
	depth := queueDepth(t, rc.Options().Addr)
	if err := rc.FlushAll(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	flushed := time.Now()
	// A task waits as pending, or deferred by a job limit (scheduled or
	// retry): the flush loses both alike. Which one the 40 are in depends
	// on how fast the worker took them; a fast worker has deferred all of
	// them by now.
	waiting := depth.Pending + depth.Scheduled + depth.Retry
	t.Logf("FLUSHALL with %d tasks waiting in Redis (%d pending, %d scheduled, %d retry) and %d active; %v",
		waiting, depth.Pending, depth.Scheduled, depth.Retry, depth.Active, s.opCounts())
	if waiting == 0 {
		t.Fatal("no task was waiting at the flush: the fault was not injected")
	}
	// Every slot of the first worker is held by a hung job, and the reconcile
	// task needs a slot too: the second worker must find every operation past
	// the reconciler's grace on its first run, for its own slots fill up with
	// re-enqueued jobs that hang as well.
	time.Sleep(time.Until(created.Add(4 * time.Second)))
	w2 := s.startWorker()
	// Let the reconciler find the running operations too, then lift the hang.
	reenqueued := func() int {
		ids := w1.logValues("re-enqueued operation whose task was missing", "operation_id")
		for id := range w2.logValues("re-enqueued operation whose task was missing", "operation_id") {
			ids[id] = true
		}
		return len(ids)
	}
	if !waitFor(20*time.Second, func() bool { return reenqueued() >= 60 }) {
		t.Errorf("the reconciler re-enqueued %d of the 60 unfinished operations within 20s", reenqueued())
	}
	gate.open()
	s.waitSettled(60 * time.Second)
	t.Logf("all operations finished %s after the flush", time.Since(flushed).Round(100*time.Millisecond))
	s.checkLedger()
	s.assertRunning(sched, w1, w2)
}

// queueDepth returns the depth of the default queue of the Redis at addr.
func queueDepth(t *testing.T, addr string) queue.QueueDepth {
	t.Helper()
	return queueDepthAt(t, "redis://"+addr+"/0")
}
