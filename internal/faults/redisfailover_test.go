package faults

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// redisFailoverGoal is how soon after a queue Redis master's death every
// operation accepted before and during the failover should have finished
// (issue 11), under Sentinel or on a Cluster.
const redisFailoverGoal = 30 * time.Second

// createLoad is a steady stream of site creates from a few clients, each
// posting one every 400ms or so (four clients: about 10 a second, under what
// two workers finish, so what shows after a fault is its cost, not a
// backlog). Every answer is counted: 202 (with when it came), 503 (a refusal,
// not a loss), anything else or a transport error (a failure of the test).
type createLoad struct {
	stop                     atomic.Bool
	wg                       sync.WaitGroup
	seq                      atomic.Int64
	n202, n503, nOther, nErr atomic.Int64

	mu         sync.Mutex
	acceptedAt map[string]time.Time // operation ID → when its 202 came
	otherSeen  []string
}

// startCreateLoad starts clients posting creates of <prefix>-load-NNNN domains.
func (s *stack) startCreateLoad(prefix string, clients int) *createLoad {
	l := &createLoad{acceptedAt: map[string]time.Time{}}
	for range clients {
		l.wg.Go(func() {
			for !l.stop.Load() {
				domain := fmt.Sprintf("%s-load-%04d.faults.example", prefix, l.seq.Add(1))
				r, err := s.createSite(domain)
				switch {
				case err != nil:
					l.nErr.Add(1)
					l.note(fmt.Sprintf("%s: %v", domain, err))
				case r.status == http.StatusAccepted:
					l.n202.Add(1)
					var op opView
					_ = json.Unmarshal(r.body, &op) // createSite decoded it already
					l.mu.Lock()
					l.acceptedAt[op.ID] = time.Now()
					l.mu.Unlock()
				case r.status == http.StatusServiceUnavailable:
					l.n503.Add(1)
				default:
					l.nOther.Add(1)
					l.note(fmt.Sprintf("%s: %d %s", domain, r.status, r.body))
				}
				time.Sleep(400 * time.Millisecond)
			}
		})
	}
	return l
}

func (l *createLoad) note(s string) {
	l.mu.Lock()
	l.otherSeen = append(l.otherSeen, s)
	l.mu.Unlock()
}

// halt stops the clients and waits for their last requests.
func (l *createLoad) halt() {
	l.stop.Store(true)
	l.wg.Wait()
}

// report logs the answers counted and fails the test for each answer that
// was neither 202 nor 503. Call it after halt.
func (l *createLoad) report(s *stack) {
	s.t.Logf("creates under load: %d accepted (202), %d refused (503), %d other answers, %d transport errors",
		l.n202.Load(), l.n503.Load(), l.nOther.Load(), l.nErr.Load())
	for _, o := range l.otherSeen {
		s.t.Errorf("create answered neither 202 nor 503: %s", o)
	}
}

// accepted returns the IDs of the operations whose 202 came when keep says.
func (l *createLoad) accepted(keep func(at time.Time) bool) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []string
	for id, at := range l.acceptedAt {
		if keep(at) {
			ids = append(ids, id)
		}
	}
	return ids
}

// checkRedisFailover reports and checks what a queue Redis master's death
// (killed at killed, its replica promoted after promoted, the load stopped
// after loadEnd) cost, once every operation is final:
//   - the timeline from the kill (promotion, first operation finished, first
//     finished of those accepted after the kill, last finished of those
//     accepted before the promotion, against redisFailoverGoal, last of all)
//     and accept-to-finish latency before the kill, during the failover and
//     after it;
//   - the enqueues the ingress saw refused, each of which its backlog must
//     have retried, and what the reconciler re-enqueued;
//   - that every worker finished tasks and the scheduler's reconcile ticks
//     kept coming after the promotion: each followed the new master by itself.
func (s *stack) checkRedisFailover(load *createLoad, killed time.Time, promoted, loadEnd time.Duration, workers []*proc) {
	t := s.t
	t.Helper()
	promotedAt := killed.Add(promoted)
	afterKill := load.accepted(func(at time.Time) bool { return at.After(killed) })
	upToPromotion := load.accepted(func(at time.Time) bool { return at.Before(promotedAt) })
	firstAny := s.finishedAfter(killed, nil, "min")
	firstNew := s.finishedAfter(killed, afterKill, "min")
	lastOld := s.finishedAfter(killed, upToPromotion, "max")
	last := s.finishedAfter(killed, nil, "max")
	t.Logf("timeline from the kill: promotion %s; first operation finished %s; first of the %d accepted after the kill finished %s; "+
		"last of the %d accepted before the promotion finished %s (goal: within %s); last of all finished %s (the load ran until %s)",
		promoted.Round(time.Millisecond), firstAny.Round(time.Millisecond), len(afterKill), firstNew.Round(time.Millisecond),
		len(upToPromotion), lastOld.Round(time.Millisecond), redisFailoverGoal, last.Round(time.Millisecond), loadEnd.Round(time.Millisecond))
	// Accept-to-finish latency of the load's creates: before the kill, during
	// the failover, and after it, so the cost is seen against the baseline.
	loadStart := killed.Add(-3 * time.Second)
	for _, w := range []struct {
		name     string
		from, to time.Time
	}{
		{"before the kill", loadStart, killed},
		{"kill to promotion", killed, promotedAt},
		{"after the promotion", promotedAt, killed.Add(loadEnd)},
	} {
		p50, worst, n := s.latencies(w.from, w.to)
		t.Logf("  creates accepted %s: %d, accept to finish p50 %s, max %s", w.name, n, p50.Round(time.Millisecond), worst.Round(time.Millisecond))
	}
	if len(afterKill) == 0 {
		t.Error("no create was accepted after the kill: the ingress did not keep accepting through the failover")
	}
	if lastOld > redisFailoverGoal {
		t.Errorf("the last operation accepted before the promotion finished %s after the master's death, want within %s",
			lastOld.Round(time.Millisecond), redisFailoverGoal)
	}

	// What the failover cost: tasks the reconciler had to put back because
	// the new master never got them (asynchronous replication, or an
	// enqueue that failed during the failover and left the row pending).
	reenqueued := map[string]bool{}
	for _, w := range workers {
		for id := range w.logValues("re-enqueued operation whose task was missing", "operation_id") {
			reenqueued[id] = true
		}
	}
	lostBefore := 0 // accepted (and enqueued) before the kill: lost with the master
	load.mu.Lock()
	for id := range reenqueued {
		if at, ok := load.acceptedAt[id]; ok && at.Before(killed) {
			lostBefore++
		}
	}
	load.mu.Unlock()
	// Enqueues the ingress saw refused during the failover: its backlog must
	// have put each back as soon as the new master answered, none left to
	// the reconciler's grace and pass.
	refused := s.ingress.logValues("enqueue failed; retried in the background, then by the reconciler", "operation_id")
	retried := s.ingress.logValues("enqueued operation after retrying", "operation_id")
	for id := range refused {
		if !retried[id] {
			t.Errorf("operation %s: its enqueue was refused during the failover and the ingress did not retry it (reconciler: %v)", id, reenqueued[id])
		}
	}
	t.Logf("enqueues refused during the failover: %d, retried by the ingress once the new master answered: %d; the reconciler re-enqueued %d operations (%d accepted before the kill: their task lost with the master)",
		len(refused), len(retried), len(reenqueued), lostBefore)
	s.logSlowest(killed, reenqueued, 5)

	// Every process followed the new master by itself.
	for _, w := range workers {
		if n := w.linesAfter("task done", promotedAt); n == 0 {
			t.Errorf("%s finished no task after the promotion: it did not follow the new master", w.name)
		}
	}
	if n := s.reconcilesAfter(workers, promotedAt); n == 0 {
		t.Errorf("no reconcile task ran after the promotion: the scheduler did not follow the new master")
	}
}
