package faults

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// Injected: the queue's Redis is a Redis Cluster of three masters and three
// replicas (AOF with appendfsync always, noeviction,
// cluster-require-full-coverage no, cluster-node-timeout 1000ms), and every
// process reaches it through CHOM_REDIS_URL=redis-cluster://… with the six
// nodes as seeds. First the end-to-end path runs on it: sites are created,
// their operations finish (under the per-VPS and per-tenant limits, whose
// semaphores are in the cluster too), each is announced on the operations
// channel, and a long poll is woken. Then, under a steady stream of creates
// (four clients, about 10 a second), the master of the default queue's slot
// is killed with SIGKILL. The ingress, two workers and the scheduler run
// throughout and are never restarted.
//
// Must hold: the master's replica is promoted; every process follows it by
// itself (each worker finishes tasks after the promotion, the scheduler's
// reconcile ticks keep coming, announcements and long polls still work);
// writes to the other masters' slots go on through the failover; each
// create is answered 202, or 503 during the failover (counted), never
// anything else; every 202 reaches a final state — what asynchronous
// replication dropped, the reconciler re-enqueues from the database — and
// the ledger holds. Reported: kill → promotion, kill → first operation
// finished, kill → first finished of those accepted after the kill, kill →
// last finished, against the goal of 30s.
func TestRedisClusterMasterKilled(t *testing.T) {
	t.Parallel()
	start := time.Now()
	rc := testenv.StartRedisCluster(t, testenv.RedisClusterConfig{Password: "faults-cluster-pw"})
	kitUp := time.Since(start)
	s := newStack(t, stackConfig{RedisURL: rc.URL, Env: map[string]string{
		"CHOM_RECONCILE_INTERVAL": "5s", "CHOM_RECONCILE_GRACE": "10s"}})
	sched := s.startScheduler()
	w1, w2 := s.startWorker(), s.startWorker()
	ctx := t.Context()

	// Where CHOM's keys live.
	owner := func(key string) *testenv.RedisServer {
		m, _, err := rc.Owners(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	queueKey := "asynq:{" + queue.QueueDefault + "}:pending"
	qMaster, qReplicas, err := rc.Owners(ctx, queueKey)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster kit up in %s; default queue on master %s (replica %s); critical queue on %s, low on %s, limits on %s, asynq:queues on %s, channel %s on %s",
		kitUp.Round(time.Millisecond), qMaster.Addr, qReplicas[0].Addr, owner("asynq:{critical}:pending").Addr, owner("asynq:{low}:pending").Addr,
		owner("{chom:limits}").Addr, owner("asynq:queues").Addr, queue.OperationsChannel, owner(queue.OperationsChannel).Addr)

	// A watcher of the test's own, on CHOM's cluster client, records when
	// each operation was first announced.
	wrc, err := queue.NewRedisClient(rc.URL, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = wrc.Close() })
	var (
		annMu     sync.Mutex
		announced = map[string]time.Time{}
	)
	watcher := queue.NewWatcher(wrc)
	watcher.OnChange(func(id string) {
		annMu.Lock()
		if _, ok := announced[id]; !ok {
			announced[id] = time.Now()
		}
		annMu.Unlock()
	})
	wctx, stopWatcher := context.WithCancel(ctx)
	watcherDone := make(chan struct{})
	go func() { defer close(watcherDone); watcher.Run(wctx) }()
	t.Cleanup(func() { stopWatcher(); <-watcherDone })
	notifier := queue.NewNotifier(wrc)
	if !waitFor(20*time.Second, func() bool {
		notifier.OperationChanged(ctx, "op_probe")
		annMu.Lock()
		defer annMu.Unlock()
		_, ok := announced["op_probe"]
		return ok
	}) {
		t.Fatal("the test's watcher received nothing on the cluster within 20s")
	}

	// The end-to-end path on the cluster.
	s.createSites("cluster-first", 20)
	took := s.waitSettled(60 * time.Second)
	annMu.Lock()
	for _, id := range s.acceptedIDs() {
		if _, ok := announced[id]; !ok {
			t.Errorf("operation %s finished but was never announced on %s", id, queue.OperationsChannel)
		}
	}
	annMu.Unlock()
	polls, status, waited := s.longPollCreate("cluster-poll-before.faults.example")
	t.Logf("end to end: 20 creates finished %s after the last was accepted, each announced; a long poll saw %s after %d answers in %s",
		took.Round(time.Millisecond), status, polls, waited.Round(time.Millisecond))
	if status != models.OpSucceeded {
		t.Errorf("long-polled create ended %q, want %q", status, models.OpSucceeded)
	}

	// A probe of another master: cluster-require-full-coverage no keeps the
	// slots of the masters still alive answering while one is failed.
	probeKey := ""
	for i := 0; probeKey == ""; i++ {
		if k := fmt.Sprintf("chom:faults:probe:%d", i); owner(k) != qMaster {
			probeKey = k
		}
	}
	var (
		probeOK, probeFail atomic.Int64
		probeGap           atomic.Int64 // longest time between two answered writes, ns
	)
	probeCtx, stopProbe := context.WithCancel(ctx)
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		last := time.Now()
		for probeCtx.Err() == nil {
			c, cancel := context.WithTimeout(probeCtx, 2*time.Second)
			err := wrc.Set(c, probeKey, time.Now().UnixNano(), 0).Err()
			cancel()
			if probeCtx.Err() != nil {
				return
			}
			if err != nil {
				probeFail.Add(1)
			} else {
				probeOK.Add(1)
				if gap := time.Since(last); int64(gap) > probeGap.Load() {
					probeGap.Store(int64(gap))
				}
				last = time.Now()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	// The load, as TestSentinelMasterKilled's: about 10 creates a second.
	load := s.startCreateLoad("cluster", 4)
	time.Sleep(3 * time.Second)
	before := load.n202.Load()

	qMaster.Kill(t)
	killed := time.Now()
	if !waitFor(30*time.Second, func() bool {
		role, err := rc.Role(ctx, qReplicas[0].Addr)
		return err == nil && role == "master"
	}) {
		t.Fatalf("replica %s was not promoted within 30s of its master's SIGKILL", qReplicas[0].Addr)
	}
	promoted := time.Since(killed)
	// Creates go on for as long again as the failover took, and 5s more.
	time.Sleep(promoted + 5*time.Second)
	load.halt()
	loadEnd := time.Since(killed)
	stopProbe()
	<-probeDone
	t.Logf("master %s killed with %d creates accepted under load; replica %s promoted after %s; load stopped %s after the kill",
		qMaster.Addr, before, qReplicas[0].Addr, promoted.Round(time.Millisecond), loadEnd.Round(time.Millisecond))
	load.report(s)
	t.Logf("writes to %s on another master through the failover: %d answered, %d failed, longest gap between answers %s",
		probeKey, probeOK.Load(), probeFail.Load(), time.Duration(probeGap.Load()).Round(time.Millisecond))
	if probeFail.Load() > 0 {
		t.Errorf("%d writes to a slot of a live master failed during the failover: the other masters' slots must keep answering (cluster-require-full-coverage no)",
			probeFail.Load())
	}

	settled := s.waitSettled(2 * time.Minute)
	t.Logf("all operations finished %s after the load stopped; %v", settled.Round(100*time.Millisecond), s.opCounts())

	s.checkRedisFailover(load, killed, promoted, loadEnd, []*proc{w1, w2})

	// The announcements followed the new master too.
	annMu.Lock()
	annAfter := 0
	for _, at := range announced {
		if at.After(killed.Add(promoted)) {
			annAfter++
		}
	}
	annMu.Unlock()
	polls, status, waited = s.longPollCreate("cluster-poll-after.faults.example")
	t.Logf("after the failover: %d operations announced after the promotion; a long poll saw %s after %d answers in %s",
		annAfter, status, polls, waited.Round(time.Millisecond))
	if annAfter == 0 {
		t.Error("no operation was announced after the promotion: the notifier or the watcher did not follow the cluster")
	}
	if status != models.OpSucceeded {
		t.Errorf("long-polled create after the failover ended %q, want %q", status, models.OpSucceeded)
	}
	s.waitSettled(30 * time.Second)

	// What the queue's master holds, for sizing maxmemory under noeviction.
	depth := queueDepthAt(t, rc.URL)
	node := rc.NodeClient(t, qReplicas[0].Addr)
	mem, err := node.Info(ctx, "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := node.DBSize(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the new master %s holds %d pending, %d active, %d retry tasks with every operation finished; %d keys, %s",
		qReplicas[0].Addr, depth.Pending, depth.Active, depth.Retry, keys, infoField(mem, "used_memory_human"))
	s.checkLedger()
	s.assertRunning(sched, w1, w2)
}

// longPollCreate creates a site and long-polls its operation (?wait=20s)
// until it is final; it returns how many answers that took, the final
// status and the time from the 202 to it. It fails the test on a transport
// error or an answer other than 200.
func (s *stack) longPollCreate(domain string) (polls int, status string, took time.Duration) {
	s.t.Helper()
	r, err := s.createSite(domain)
	if err != nil || r.status != http.StatusAccepted {
		s.t.Fatalf("create %s: %v %d %s", domain, err, r.status, r.body)
	}
	start := time.Now()
	var op opView
	r.json(s.t, &op)
	for polls < 10 && !models.IsTerminal(op.Status) {
		polls++
		g := s.must("GET", "/operations/"+op.ID+"?wait=20s", s.token, nil)
		if g.status != http.StatusOK {
			s.t.Fatalf("long poll of %s: %d %s", op.ID, g.status, g.body)
		}
		g.json(s.t, &op)
	}
	return polls, op.Status, time.Since(start)
}

// infoField returns the value of field in an INFO answer, or "?".
func infoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return field + " " + v
		}
	}
	return field + " ?"
}
