package faults

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chomhq/chom/internal/testenv"
)

// statusRank orders an operation's statuses: it only ever moves up.
var statusRank = map[string]int{"pending": 0, "running": 1, "succeeded": 2, "failed": 2, "cancelled": 2}

// createSiteAt posts one site to the ingress at base, with the domain as its
// Idempotency-Key, and records the operation when it is accepted.
func (s *stack) createSiteAt(base, domain string) (opView, response, error) {
	var op opView
	r, err := s.doAt(base, "POST", "/sites", s.token, map[string]string{"domain": domain, "site_type": "html"},
		"Idempotency-Key", "create-"+domain)
	if err == nil && r.status == http.StatusAccepted {
		if err := json.Unmarshal(r.body, &op); err != nil {
			return op, r, err
		}
		s.record(op, domain)
	}
	return op, r, err
}

// replicaReads counts the API reads of sites and operations a replica with
// log_statement = 'all' has run: only the ingress's read router sends
// queries there, so each one is a read the replica served.
func replicaReads(t *testing.T, replica *testenv.PostgresServer) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(replica.Dir, "server.log"))
	if err != nil {
		t.Fatalf("replica log: %v", err)
	}
	n := 0
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.Contains(line, `FROM "sites" AS "site"`) || strings.Contains(line, `FROM "operations" AS "operation"`) {
			n++
		}
	}
	return n
}

// Injected: the stack's ingresses (two, on one primary) read operations and
// sites through CHOM_DATABASE_READ_URL, a streaming replica whose replay is
// paused (pg_wal_replay_pause) while ten jobs it saw running finish on the
// primary and ten sites are created; then replay resumes. No process is
// restarted.
//
// Must hold: a site created through one ingress is at once found through
// the other (its operation: never a 404; the site: in the first page of the
// list); polling every operation through both ingresses in turn, no status
// ever goes back (the ten the replica last saw running must not be shown
// running once shown succeeded) and every one finishes; the replica really
// lagged (it did not hold the new operations while they were read); when the
// replica is caught up, reads really go to it (its statement log); every
// operation finishes and the ledger holds; no process died.
func TestReadReplicaLagging(t *testing.T) {
	t.Parallel()
	start := time.Now()
	primary := testenv.StartPostgresServer(t)
	replica := testenv.StartPostgresReplica(t, primary, testenv.PostgresReplicaConfig{LogStatements: true})
	s := newStack(t, stackConfig{DatabaseURL: primary.URL, Env: map[string]string{"CHOM_DATABASE_READ_URL": replica.URL}})
	apis := []string{s.api}
	in1 := s.ingress
	s.startIngress()
	apis = append(apis, s.api)
	gate := s.newReloadGate()
	gate.open()
	sched := s.startScheduler()
	w := s.startWorker()
	t.Logf("primary %s, replica %s, two ingresses, a worker and a scheduler up in %s",
		primary.Addr, replica.Addr, time.Since(start).Round(100*time.Millisecond))

	// Caught up: reads go to the replica. A read goes there only when the
	// replica has replayed everything the primary had written when the read
	// arrived, and the stack goes on writing for a moment after its
	// operations settle (the scheduler's first ticks: health checks, meters);
	// on a loaded machine the replica can trail each of those writes past
	// every read of a round. So rounds of reads repeat, for at most 60 s,
	// until the replica has served some: a read URL that is not used never
	// serves one.
	s.createSites("rr-warm", 10)
	s.waitSettled(60 * time.Second)
	before := replicaReads(t, replica)
	var startLSN string
	if err := s.db.QueryRowContext(t.Context(), "SELECT pg_current_wal_insert_lsn()::text").Scan(&startLSN); err != nil {
		t.Fatal(err)
	}
	const warmReads = 40
	served, rounds := 0, 0
	for deadline := time.Now().Add(60 * time.Second); served == 0 && time.Now().Before(deadline); {
		rounds++
		for range warmReads {
			for _, path := range []string{"/sites?limit=100", "/operations?limit=100"} {
				if r := s.must("GET", path, s.token, nil); r.status != http.StatusOK {
					t.Fatalf("GET %s: %d %s", path, r.status, r.body)
				}
			}
		}
		served = replicaReads(t, replica) - before
	}
	var walBytes int64
	if err := s.db.QueryRowContext(t.Context(), "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::pg_lsn)::bigint", startLSN).Scan(&walBytes); err != nil {
		t.Fatal(err)
	}
	t.Logf("caught up: the replica ran %d of the %d list reads of %d round(s); the primary wrote %d bytes of WAL meanwhile",
		served, 2*warmReads*rounds, rounds, walBytes)
	if served == 0 {
		t.Errorf("the replica ran none of %d list reads in 60 s after the stack settled: the read URL is not used", 2*warmReads*rounds)
	}

	// Ten jobs hang running; wait until the replica shows them running too.
	gate.shut()
	hung := s.createSites("rr-hung", 10)
	hungOps := map[string]bool{}
	var hungIDs []string
	s.mu.Lock()
	for id, a := range s.accepted {
		if slices.Contains(hung, a.Domain) {
			hungOps[id] = true
			hungIDs = append(hungIDs, id)
		}
	}
	s.mu.Unlock()
	const runningOf = "SELECT count(*) FROM operations WHERE status = 'running' AND id = ANY($1)"
	if !waitFor(30*time.Second, func() bool {
		var n int
		return primary.Scan(t, runningOf, []any{hungIDs}, &n) == nil && n == 10
	}) {
		t.Fatalf("10 jobs were not running within 30s: %v", s.opCounts())
	}
	if !waitFor(30*time.Second, func() bool {
		var n int
		return replica.Scan(t, runningOf, []any{hungIDs}, &n) == nil && n == 10
	}) {
		t.Fatal("the replica did not show the 10 hung jobs running within 30s")
	}
	replica.PauseReplay(t)
	paused := time.Now()
	t.Logf("injected: replica replay paused with 10 jobs running; they now finish on the primary, and 10 sites are created")
	gate.open()

	// Ten creates, each read back at once through the other ingress.
	var (
		mu       sync.Mutex
		problems []string
		created  []string
	)
	bad := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			domain := fmt.Sprintf("rr-lag-%03d.faults.example", i)
			via, other := apis[i%2], apis[(i+1)%2]
			op, r, err := s.createSiteAt(via, domain)
			if err != nil || r.status != http.StatusAccepted {
				bad("POST /sites %s: %d %v %s", domain, r.status, err, r.body)
				return
			}
			mu.Lock()
			created = append(created, op.ID)
			mu.Unlock()
			g, err := s.doAt(other, "GET", "/operations/"+op.ID, s.token, nil)
			if err != nil || g.status != http.StatusOK {
				bad("GET /operations/%s through the other ingress right after its 202: %d %v %s", op.ID, g.status, err, g.body)
			}
			l, err := s.doAt(other, "GET", "/sites?limit=100", s.token, nil)
			if err != nil || l.status != http.StatusOK {
				bad("GET /sites through the other ingress: %d %v %s", l.status, err, l.body)
				return
			}
			if !strings.Contains(string(l.body), `"`+op.TargetID+`"`) {
				bad("GET /sites through the other ingress right after the 202 of %s does not list site %s", domain, op.TargetID)
			}
		})
	}
	wg.Wait()

	// Poll every operation of the phase through both ingresses in turn.
	watched := slices.Collect(func(yield func(string) bool) {
		for id := range hungOps {
			if !yield(id) {
				return
			}
		}
	})
	mu.Lock()
	watched = append(watched, created...)
	mu.Unlock()
	seen := map[string]string{}
	polls := 0
	deadline := time.Now().Add(60 * time.Second)
	for len(watched) > 0 && time.Now().Before(deadline) {
		var still []string
		for _, id := range watched {
			polls++
			r, err := s.doAt(apis[polls%2], "GET", "/operations/"+id, s.token, nil)
			if err != nil || r.status != http.StatusOK {
				bad("poll of %s through ingress %d: %d %v %s", id, polls%2+1, r.status, err, r.body)
				continue
			}
			var op opView
			r.json(t, &op)
			if prev, ok := seen[id]; ok && statusRank[op.Status] < statusRank[prev] {
				bad("operation %s went back from %s to %s (ingress %d)", id, prev, op.Status, polls%2+1)
			}
			seen[id] = op.Status
			if statusRank[op.Status] < 2 {
				still = append(still, id)
			}
		}
		watched = still
		time.Sleep(50 * time.Millisecond)
	}
	if len(watched) > 0 {
		bad("%d operations not finished through the API 60s after the pause: %v", len(watched), watched)
	}
	for id := range hungOps {
		if seen[id] != "succeeded" {
			bad("hung operation %s last seen %q, want succeeded", id, seen[id])
		}
	}
	// The replica really lagged: it holds none of the new operations.
	var onReplica int
	if err := replica.Scan(t, "SELECT count(*) FROM operations WHERE id = ANY($1)", []any{created}, &onReplica); err != nil {
		t.Fatal(err)
	}
	lagged := time.Since(paused)
	t.Logf("replica paused %s: %d polls through two ingresses; the replica held %d of the %d operations created meanwhile",
		lagged.Round(100*time.Millisecond), polls, onReplica, len(created))
	if onReplica != 0 {
		t.Errorf("the paused replica holds %d of the operations created after the pause: replay was not paused", onReplica)
	}
	for i, p := range problems {
		if i == 20 {
			t.Errorf("… %d problems in all", len(problems))
			break
		}
		t.Error(p)
	}

	// Replay resumes: the replica catches up and serves reads again.
	replica.ResumeReplay(t)
	resumed := time.Now()
	if !waitFor(30*time.Second, func() bool {
		before := replicaReads(t, replica)
		if r := s.must("GET", "/sites?limit=100", s.token, nil); r.status != http.StatusOK {
			t.Fatalf("GET /sites: %d %s", r.status, r.body)
		}
		return replicaReads(t, replica) > before
	}) {
		t.Error("the replica served no read within 30s of resuming replay")
	}
	t.Logf("replay resumed: the replica served a read again after %s", time.Since(resumed).Round(time.Millisecond))
	took := s.waitSettled(60 * time.Second)
	t.Logf("all operations finished (%s of waiting)", took.Round(100*time.Millisecond))
	s.checkLedger()
	s.assertRunning(in1, sched, w)
}

// Injected: the stack (two ingresses, a worker, a scheduler) runs on a
// multi-host URL (primary, then its synchronous standby;
// target_session_attrs=read-write) under a steady load of site creates from
// 8 clients; the primary is killed (SIGKILL of the postmaster and every
// backend: a lost machine) and the standby promoted at once (pg_ctl
// promote), as an operator or a failover manager would. No CHOM process is
// restarted; a client whose create is refused (503, or a dropped connection)
// retries it with the same Idempotency-Key, as the API asks.
//
// Must hold: every process carries on by itself (a 202 from each ingress
// after the failover, operations finished by the worker after it); every
// operation a client was given a 202 for exists on the promoted standby
// (synchronous replication: nothing committed is lost) and reaches a final
// state; the ledger holds; no process died. Reported: the time from the kill
// to the promotion, to the first 202, to a 202 from each ingress, and to the
// first operation finished after the failover.
func TestPrimaryFailover(t *testing.T) {
	t.Parallel()
	primary := testenv.StartPostgresServer(t)
	standby := testenv.StartPostgresReplica(t, primary, testenv.PostgresReplicaConfig{Synchronous: true})
	url := testenv.MultiHostURL(primary, standby)
	s := newStack(t, stackConfig{DatabaseURL: url})
	apis := []string{s.api}
	in1 := s.ingress
	s.startIngress()
	apis = append(apis, s.api)
	sched := s.startScheduler()
	w := s.startWorker()
	s.createSites("fo-warm", 10)
	s.waitSettled(60 * time.Second)

	type outcome struct {
		sent    time.Time // when the request was sent
		at      time.Time // when its answer came
		ingress int
		status  int // -1: transport error
	}
	var (
		mu         sync.Mutex
		outcomes   []outcome
		lastBefore = map[int]string{} // client → last operation accepted before the kill
		killedAt   time.Time
		stop       = make(chan struct{})
		wg         sync.WaitGroup
	)
	const clients = 4
	for c := range clients {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				domain := fmt.Sprintf("fo-%d-%04d.faults.example", c, n)
				// Retry the create with its key until it is accepted (even
				// once told to stop: a create refused after its commit
				// reached the database must end accepted, for the ledger).
				began := time.Now()
				for {
					via := (c + n) % 2
					sent := time.Now()
					op, r, err := s.createSiteAt(apis[via], domain)
					status := r.status
					if err != nil {
						status = -1
					}
					mu.Lock()
					outcomes = append(outcomes, outcome{sent: sent, at: time.Now(), ingress: via, status: status})
					if status == http.StatusAccepted && killedAt.IsZero() {
						lastBefore[c] = op.ID
					}
					mu.Unlock()
					if status == http.StatusAccepted {
						// About 20 creates a second in all: enough to be
						// mid-commit at the kill, little enough to settle fast.
						time.Sleep(200 * time.Millisecond)
						break
					}
					if status != http.StatusServiceUnavailable && status != -1 {
						t.Errorf("create %s through ingress %d during failover: %d %s (want 202, or 503 to retry)", domain, via+1, status, r.body)
					}
					if time.Since(began) > 60*time.Second {
						t.Errorf("create %s not accepted within 60s of retries", domain)
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
	}
	time.Sleep(2 * time.Second)

	// The times count from the moment the postmaster and every backend are
	// gone: until then a backend with an open connection may still commit.
	primary.Kill(t)
	mu.Lock()
	killedAt = time.Now()
	mu.Unlock()
	t.Logf("injected: primary %s killed (SIGKILL) under load; promoting standby %s", primary.Addr, standby.Addr)
	standby.Promote(t)
	promoted := time.Since(killedAt)
	t.Logf("the standby's log of its promotion:\n%s", promotionLog(t, standby))

	// Run until both ingresses have accepted after the failover, then 2s more.
	recoveredBy := func() (first time.Duration, per [2]time.Duration, ok bool) {
		mu.Lock()
		defer mu.Unlock()
		for _, o := range outcomes {
			// Only requests sent after the kill: one in flight then may
			// have committed just before it.
			if o.status != http.StatusAccepted || !o.sent.After(killedAt) {
				continue
			}
			d := o.at.Sub(killedAt)
			if first == 0 || d < first {
				first = d
			}
			if per[o.ingress] == 0 || d < per[o.ingress] {
				per[o.ingress] = d
			}
		}
		return first, per, per[0] > 0 && per[1] > 0
	}
	if !waitFor(60*time.Second, func() bool { _, _, ok := recoveredBy(); return ok }) {
		close(stop)
		wg.Wait()
		t.Fatalf("the ingresses did not both accept a create within 60s of the kill")
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	first, per, _ := recoveredBy()
	// Between the kill and the promotion no database takes writes: a 202
	// for a request sent after the kill but answered before the standby
	// chose its new timeline (the first step of a promotion; its log has
	// millisecond timestamps) would be a write to something else.
	newTimeline := standbyLogTime(t, standby, "selected new timeline ID")
	mu.Lock()
	for _, o := range outcomes {
		if o.status == http.StatusAccepted && o.sent.After(killedAt) && o.at.Before(newTimeline.Add(-time.Millisecond)) {
			t.Errorf("a create sent %s after the kill was accepted %s after it, before the standby chose its new timeline (%s after the kill)",
				o.sent.Sub(killedAt), o.at.Sub(killedAt), newTimeline.Sub(killedAt))
		}
	}
	mu.Unlock()

	var (
		refused, dropped, accepted int
	)
	for _, o := range outcomes {
		switch {
		case o.status == http.StatusAccepted:
			accepted++
		case o.status == -1:
			dropped++
		default:
			refused++
		}
	}
	took := s.waitSettled(90 * time.Second)
	var workerBack time.Duration
	var finishedAfter *time.Time
	if err := s.db.QueryRowContext(t.Context(), "SELECT min(finished_at) FROM operations WHERE finished_at > $1", killedAt.Add(promoted)).Scan(&finishedAfter); err != nil {
		t.Fatal(err)
	}
	if finishedAfter == nil {
		t.Error("no operation finished after the promotion: the worker did not carry on")
	} else {
		workerBack = finishedAfter.Sub(killedAt)
	}
	writable := standbyLogTime(t, standby, "database system is ready to accept connections").Sub(killedAt)
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	t.Logf("failover, from the kill: the standby took writes after %s (its log; pg_ctl promote --wait returned after %s); "+
		"first 202 after %s (%s after the standby took writes); ingress-1 after %s, ingress-2 after %s; "+
		"the worker finished an operation after %s; load: %d creates accepted, %d answers 503, %d dropped connections; all settled %s later",
		ms(writable), ms(promoted), ms(first), ms(first-writable), ms(per[0]), ms(per[1]),
		ms(workerBack), accepted, refused, dropped, took.Round(100*time.Millisecond))

	// Nothing committed is lost: the last create each client had accepted
	// before the kill is on the promoted standby (the ledger checks every one).
	var onStandby int
	ids := slices.Collect(func(yield func(string) bool) {
		for _, id := range lastBefore {
			if !yield(id) {
				return
			}
		}
	})
	if err := standby.Scan(t, "SELECT count(*) FROM operations WHERE id = ANY($1)", []any{ids}, &onStandby); err != nil {
		t.Fatal(err)
	}
	t.Logf("the last create each client had accepted before the kill: %d of %d on the promoted standby", onStandby, len(ids))
	if onStandby != len(ids) {
		t.Errorf("%d of the %d operations accepted last before the kill are missing after the failover", len(ids)-onStandby, len(ids))
	}
	s.checkLedger()
	s.assertRunning(in1, sched, w)
}

// standbyLogTime returns the time of the last line of the standby's server
// log that contains what (its log_line_prefix starts with %m: milliseconds,
// UTC); it fails the test when there is none.
func standbyLogTime(t *testing.T, standby *testenv.PostgresServer, what string) time.Time {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(standby.Dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	var at time.Time
	for line := range strings.SplitSeq(string(b), "\n") {
		if !strings.Contains(line, what) || len(line) < 27 {
			continue
		}
		ts, err := time.Parse("2006-01-02 15:04:05.000 MST", line[:27])
		if err != nil {
			t.Fatalf("standby log line %q: %v", line, err)
		}
		at = ts
	}
	if at.IsZero() {
		t.Fatalf("the standby's log has no line with %q", what)
	}
	return at
}

// promotionLog returns the lines of a promoted standby's server log that
// tell how the promotion went, with their timestamps.
func promotionLog(t *testing.T, standby *testenv.PostgresServer) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(standby.Dir, "server.log"))
	if err != nil {
		return err.Error()
	}
	var out []string
	for line := range strings.SplitSeq(string(b), "\n") {
		for _, k := range []string{"promote", "could not connect", "terminating walreceiver", "selected new timeline",
			"archive recovery complete", "redo done", "checkpoint", "ready to accept"} {
			if strings.Contains(line, k) {
				out = append(out, "  "+line)
				break
			}
		}
	}
	if len(out) > 20 {
		out = append(out[:10], append([]string{"  …"}, out[len(out)-10:]...)...)
	}
	return strings.Join(out, "\n")
}
