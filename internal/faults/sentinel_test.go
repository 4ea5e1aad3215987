package faults

import (
	"testing"
	"time"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/queue"
)

// Injected: the queue's Redis runs under Sentinel (a master and a replica,
// both AOF with appendfsync always, three sentinels, quorum 2,
// down-after-milliseconds 1000), and every process reaches it through
// CHOM_REDIS_URL=redis-sentinel://… with both passwords. Under a steady
// stream of creates (four clients, about 10 a second), the master is killed with SIGKILL. The
// creates go on through the failover and for a while after it; the ingress,
// two workers and the scheduler run throughout and are never restarted.
//
// Must hold: a sentinel promotes the replica; every process follows it by
// itself (each worker finishes tasks it took from the new master, the
// scheduler's reconcile ticks keep coming); each create is answered 202, or
// 503 during the failover (counted: a 503 is a refusal, not a loss), never
// anything else; every 202 reaches a final state — what asynchronous
// replication dropped, the reconciler re-enqueues from the database — and the
// ledger holds. Reported: kill → promotion, kill → first operation finished,
// kill → first finished of those accepted after the kill, kill → last
// finished, against the goal of 30s.
func TestSentinelMasterKilled(t *testing.T) {
	t.Parallel()
	start := time.Now()
	sn := testenv.StartSentinel(t, testenv.SentinelConfig{Password: "faults-data-pw", SentinelPassword: "faults-sentinel-pw"})
	kitUp := time.Since(start)
	// The reconciler as docs/operations.md advises under Sentinel: a grace
	// over the failover's length (the ingress retries a refused enqueue that
	// long), and a pass every 5s for what the master took with it.
	s := newStack(t, stackConfig{RedisURL: sn.URL, Env: map[string]string{
		"CHOM_RECONCILE_INTERVAL": "5s", "CHOM_RECONCILE_GRACE": "10s"}})
	sched := s.startScheduler()
	w1, w2 := s.startWorker(), s.startWorker()
	s.createSites("sentinel-first", 20)
	s.waitSettled(60 * time.Second)

	// The load: four clients, about 10 creates a second.
	load := s.startCreateLoad("sentinel", 4)
	time.Sleep(3 * time.Second)
	before := load.n202.Load()

	master := sn.Master(t)
	master.Kill(t)
	killed := time.Now()
	if !waitFor(30*time.Second, func() bool {
		addr, err := sn.MasterAddr(t.Context())
		return err == nil && addr != master.Addr
	}) {
		t.Fatalf("no sentinel promoted the replica within 30s of the master's SIGKILL")
	}
	promoted := time.Since(killed)
	// Creates go on for as long again as the failover took, and 5s more.
	time.Sleep(promoted + 5*time.Second)
	load.halt()
	loadEnd := time.Since(killed)
	t.Logf("sentinel kit up in %s; master %s killed with %d creates accepted under load; promotion after %s; load stopped %s after the kill",
		kitUp.Round(time.Millisecond), master.Addr, before, promoted.Round(time.Millisecond), loadEnd.Round(time.Millisecond))
	load.report(s)

	took := s.waitSettled(2 * time.Minute)
	t.Logf("all operations finished %s after the load stopped; %v", took.Round(100*time.Millisecond), s.opCounts())
	s.checkRedisFailover(load, killed, promoted, loadEnd, []*proc{w1, w2})
	depth := queueDepthAt(t, sn.URL)
	t.Logf("the new master %s holds %d pending, %d active, %d retry tasks with every operation finished",
		sn.Master(t).Addr, depth.Pending, depth.Active, depth.Retry)
	s.checkLedger()
	s.assertRunning(sched, w1, w2)
}

// finishedAfter returns how long after t0 the first ("min") or last ("max")
// operation finished, among ids (nil: every operation finishing after t0).
func (s *stack) finishedAfter(t0 time.Time, ids []string, agg string) time.Duration {
	s.t.Helper()
	q := "SELECT " + agg + "(finished_at) FROM operations WHERE finished_at > $1"
	args := []any{t0.UTC()}
	if ids != nil {
		if len(ids) == 0 {
			return 0
		}
		q += " AND id = ANY($2)"
		args = append(args, ids)
	}
	var at *time.Time
	if err := s.db.QueryRowContext(s.t.Context(), q, args...).Scan(&at); err != nil {
		s.t.Fatalf("finish times: %v", err)
	}
	if at == nil {
		return 0
	}
	return at.Sub(t0)
}

// linesAfter counts the process's log lines with msg logged after t0.
func (p *proc) linesAfter(msg string, t0 time.Time) int {
	return len(p.timesAfter(msg, t0))
}

// firstAfter is when the process first logged msg after t0 (zero: never).
func (p *proc) firstAfter(msg string, t0 time.Time) time.Time {
	if at := p.timesAfter(msg, t0); len(at) > 0 {
		return at[0]
	}
	return time.Time{}
}

// timesAfter are the times of the process's log lines with msg logged after
// t0, in log order.
func (p *proc) timesAfter(msg string, t0 time.Time) []time.Time {
	var out []time.Time
	for _, l := range p.logLines() {
		if l["msg"] != msg {
			continue
		}
		ts, _ := l["time"].(string)
		if at, err := time.Parse(time.RFC3339Nano, ts); err == nil && at.After(t0) {
			out = append(out, at)
		}
	}
	return out
}

// reconcilesAfter counts the reconcile tasks the workers finished after t0.
func (s *stack) reconcilesAfter(workers []*proc, t0 time.Time) int {
	n := 0
	for _, w := range workers {
		for _, l := range w.logLines() {
			ts, _ := l["time"].(string)
			at, err := time.Parse(time.RFC3339Nano, ts)
			if err == nil && at.After(t0) && l["msg"] == "task done" && l["task_type"] == queue.TypeOperationsReconcile {
				n++
			}
		}
	}
	return n
}

// queueDepthAt returns the depth of the default queue of the Redis at url.
func queueDepthAt(t *testing.T, url string) queue.QueueDepth {
	t.Helper()
	rc, err := queue.NewRedisClient(url, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	depths, err := queue.NewInspector(rc).Depths(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range depths {
		if d.Queue == queue.QueueDefault {
			return d
		}
	}
	return queue.QueueDepth{}
}

// logSlowest logs the n operations that finished last after t0: when each
// was created, started and finished (relative to t0), its attempts, and
// whether the reconciler re-enqueued it, so a slow tail can be explained.
func (s *stack) logSlowest(t0 time.Time, reenqueued map[string]bool, n int) {
	s.t.Helper()
	rows, err := s.db.QueryContext(s.t.Context(),
		"SELECT id, created_at, started_at, finished_at, attempts FROM operations WHERE finished_at > $1 ORDER BY finished_at DESC LIMIT $2",
		t0.UTC(), n)
	if err != nil {
		s.t.Fatalf("slowest operations: %v", err)
	}
	defer rows.Close()
	rel := func(at *time.Time) string {
		if at == nil {
			return "-"
		}
		return at.Sub(t0).Round(time.Millisecond).String()
	}
	for rows.Next() {
		var id string
		var created time.Time
		var started, finished *time.Time
		var attempts int
		if err := rows.Scan(&id, &created, &started, &finished, &attempts); err != nil {
			s.t.Fatal(err)
		}
		s.t.Logf("  late: %s created %s, started %s, finished %s after the kill; %d attempts; re-enqueued: %v",
			id, rel(&created), rel(started), rel(finished), attempts, reenqueued[id])
	}
}

// latencies returns the median and the longest time from creation to finish
// of the operations created in [from, to), and how many there were.
func (s *stack) latencies(from, to time.Time) (p50, worst time.Duration, n int) {
	s.t.Helper()
	rows, err := s.db.QueryContext(s.t.Context(),
		"SELECT EXTRACT(EPOCH FROM finished_at - created_at)::float8 FROM operations WHERE created_at >= $1 AND created_at < $2 AND finished_at IS NOT NULL ORDER BY 1",
		from.UTC(), to.UTC())
	if err != nil {
		s.t.Fatalf("latencies: %v", err)
	}
	defer rows.Close()
	var ds []time.Duration
	for rows.Next() {
		var sec float64
		if err := rows.Scan(&sec); err != nil {
			s.t.Fatal(err)
		}
		ds = append(ds, time.Duration(sec*float64(time.Second)))
	}
	if len(ds) == 0 {
		return 0, 0, 0
	}
	return ds[len(ds)/2], ds[len(ds)-1], len(ds)
}
