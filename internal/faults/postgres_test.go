package faults

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chomhq/chom/internal/testenv"
)

// probe is one kind of request sent while PostgreSQL is down.
type probe struct {
	name   string
	method string
	path   string
	token  string
	body   any
	key    string // Idempotency-Key, when the request is a mutation
	domain string // the site a create would make
	want   int    // the status it must get
}

// probeStats collects what the probes of one kind got.
type probeStats struct {
	statuses map[int]int
	slowest  time.Duration
	total    time.Duration
	n        int
}

// Injected: the stack's PostgreSQL (its own cluster) is stopped (fast
// shutdown: connections cut, new ones refused) while the worker holds 20 hung
// jobs (see reloadGate) and the API is in use; for five seconds every route is
// called with a token the ingress has cached and with one it has never seen;
// the hang is lifted during the outage, so the jobs meet the dead database.
// PostgreSQL is then started again; no CHOM process is restarted.
//
// Must hold: while PostgreSQL is down every route that needs it answers 503
// with Retry-After within 3s (never 500, never 401 for a good token), and
// /health still answers 200; no create that got 503 left a row; the ingress
// recovers by itself as soon as PostgreSQL is back (no 5xx after the first
// success); the refused creates retried with their Idempotency-Keys are
// accepted; every operation finishes and the ledger holds; no process died.
func TestPostgresStopped(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgresServer(t)
	s := newStack(t, stackConfig{DatabaseURL: pg.URL})
	cold := strings.TrimSpace(s.run("token", "create", "--tenant", "acme", "--scope", "read,write", "--name", "cold"))
	gate := s.newReloadGate()
	gate.open()
	sched := s.startScheduler()
	w := s.startWorker()
	s.createSites("pg-first", 20)
	s.waitSettled(60 * time.Second)
	site := s.acceptedSites()[0]
	var anOp string
	for _, id := range s.acceptedIDs() {
		anOp = id
		break
	}

	gate.shut()
	s.createSites("pg-busy", 40)
	if !waitFor(30*time.Second, func() bool { return s.opCounts()["running"] >= 20 }) {
		t.Fatalf("the worker did not take 20 tasks within 30s: %v", s.opCounts())
	}
	pg.Stop(t)
	down := time.Now()

	stats := map[string]*probeStats{}
	var refused []probe // creates that got 503
	var mu sync.Mutex
	round := 0
	for time.Since(down) < 5*time.Second {
		if time.Since(down) > 2*time.Second {
			gate.open() // the hung jobs go on, into the dead database
		}
		round++
		probes := []probe{
			{name: "POST /sites", method: "POST", path: "/sites", token: s.token, want: 503},
			{name: "POST /sites (uncached token)", method: "POST", path: "/sites", token: cold, want: 503},
			{name: "GET /sites", method: "GET", path: "/sites", token: s.token, want: 503},
			{name: "GET /sites/{id}", method: "GET", path: "/sites/" + site, token: s.token, want: 503},
			{name: "DELETE /sites/{id}", method: "DELETE", path: "/sites/" + site, token: s.token, key: fmt.Sprintf("pg-delete-%d", round), want: 503},
			{name: "GET /operations/{id}", method: "GET", path: "/operations/" + anOp, token: s.token, want: 503},
			{name: "GET /operations (uncached token)", method: "GET", path: "/operations", token: cold, want: 503},
			{name: "GET /vps (admin)", method: "GET", path: "/vps", token: s.admin, want: 503},
			{name: "GET /health/detailed", method: "GET", path: "/health/detailed", want: 503},
			{name: "GET /health", method: "GET", path: "/health", want: 200},
		}
		for i := range probes[:2] {
			probes[i].domain = fmt.Sprintf("pg-down-%d-%d.faults.example", round, i)
			probes[i].key = "create-" + probes[i].domain
			probes[i].body = map[string]string{"domain": probes[i].domain, "site_type": "html"}
		}
		var wg sync.WaitGroup
		for _, p := range probes {
			wg.Go(func() {
				var headers []string
				if p.key != "" {
					headers = []string{"Idempotency-Key", p.key}
				}
				r, err := s.do(p.method, p.path, p.token, p.body, headers...)
				status := r.status
				if err != nil {
					status = -1
				}
				mu.Lock()
				defer mu.Unlock()
				st := stats[p.name]
				if st == nil {
					st = &probeStats{statuses: map[int]int{}}
					stats[p.name] = st
				}
				st.statuses[status]++
				st.n++
				st.total += r.elapsed
				st.slowest = max(st.slowest, r.elapsed)
				switch {
				case err != nil:
					t.Errorf("%s with PostgreSQL down: %v after %s", p.name, err, r.elapsed)
				case status != p.want:
					t.Errorf("%s with PostgreSQL down: %d %s, want %d", p.name, status, r.body, p.want)
				case status == 503 && r.header.Get("Retry-After") == "":
					t.Errorf("%s with PostgreSQL down: 503 without Retry-After", p.name)
				}
				if r.elapsed > 3*time.Second {
					t.Errorf("%s with PostgreSQL down took %s, want under 3s", p.name, r.elapsed)
				}
				if p.method == "POST" && p.domain != "" && status != http.StatusAccepted {
					refused = append(refused, p)
				}
			})
		}
		wg.Wait()
		time.Sleep(200 * time.Millisecond)
	}
	names := make([]string, 0, len(stats))
	for n := range stats {
		names = append(names, n)
	}
	slices.Sort(names)
	var report strings.Builder
	for _, n := range names {
		st := stats[n]
		fmt.Fprintf(&report, "\n  %-32s %v  mean %s  slowest %s", n, st.statuses,
			(st.total / time.Duration(st.n)).Round(time.Millisecond), st.slowest.Round(time.Millisecond))
	}
	t.Logf("PostgreSQL down for %s, %d rounds of requests:%s", time.Since(down).Round(100*time.Millisecond), round, report.String())

	// Nothing half-done: no refused create left a site or an operation.
	pg.Start(t)
	restarted := time.Now()
	for _, p := range refused {
		var n int
		if err := s.db.QueryRowContext(t.Context(), "SELECT count(*) FROM sites WHERE domain = $1", p.domain).Scan(&n); err != nil {
			// The test's own pool may hold connections that died with the server.
			if err := s.db.QueryRowContext(t.Context(), "SELECT count(*) FROM sites WHERE domain = $1", p.domain).Scan(&n); err != nil {
				t.Fatal(err)
			}
		}
		if n != 0 {
			t.Errorf("create of %s answered 503 but left %d site rows", p.domain, n)
		}
	}

	// The ingress recovers by itself.
	var first time.Duration
	var before []string // answers before the first success
	if !waitFor(30*time.Second, func() bool {
		r, err := s.do("GET", "/sites", s.token, nil)
		if err == nil && r.status == http.StatusOK {
			first = time.Since(restarted)
			return true
		}
		before = append(before, fmt.Sprintf("%d", r.status))
		return false
	}) {
		t.Fatalf("the API did not recover within 30s of PostgreSQL's restart; answers: %v", before)
	}
	var after []string
	for range 20 {
		for _, p := range []struct{ method, path, token string }{
			{"GET", "/sites", s.token}, {"GET", "/operations", cold}, {"GET", "/sites/" + site, s.token},
			{"GET", "/operations/" + anOp, s.token}, {"GET", "/vps", s.admin},
		} {
			r, err := s.do(p.method, p.path, p.token, nil)
			if err != nil || r.status != http.StatusOK {
				after = append(after, fmt.Sprintf("%s %s: %d %v %s", p.method, p.path, r.status, err, r.body))
			}
		}
	}
	if len(after) > 0 {
		t.Errorf("after the first success, %d requests still failed:\n  %s", len(after), strings.Join(after, "\n  "))
	}
	t.Logf("API answered 200 %s after PostgreSQL was back (answers before: %v)", first.Round(time.Millisecond), before)

	// The refused creates, retried with their keys, are accepted now.
	for _, p := range refused {
		r, err := s.createSite(p.domain)
		if err != nil || r.status != http.StatusAccepted {
			t.Errorf("retried create of %s: %d %v %s", p.domain, r.status, err, r.body)
		}
	}
	took := s.waitSettled(60 * time.Second)
	t.Logf("%d refused creates retried and accepted; all operations finished %s after the restart (%s of waiting)",
		len(refused), time.Since(restarted).Round(100*time.Millisecond), took.Round(100*time.Millisecond))
	s.checkLedger()
	s.assertRunning(sched, w)
}
