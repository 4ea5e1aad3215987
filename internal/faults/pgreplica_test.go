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

	// Caught up: reads go to the replica.
	s.createSites("rr-warm", 10)
	s.waitSettled(60 * time.Second)
	before := replicaReads(t, replica)
	const warmReads = 40
	for range warmReads {
		for _, path := range []string{"/sites?limit=100", "/operations?limit=100"} {
			if r := s.must("GET", path, s.token, nil); r.status != http.StatusOK {
				t.Fatalf("GET %s: %d %s", path, r.status, r.body)
			}
		}
	}
	served := replicaReads(t, replica) - before
	t.Logf("caught up: the replica ran %d of the %d list reads", served, 2*warmReads)
	if served == 0 {
		t.Errorf("the replica ran none of %d list reads while caught up: the read URL is not used", 2*warmReads)
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
