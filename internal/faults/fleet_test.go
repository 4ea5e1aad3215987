package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/loadtest"
	"github.com/chomhq/chom/queue"
)

// totalEvents counts the usage events of tenant totals (no site_id): the
// ones billing bills.
const totalEvents = `SELECT count(*) FROM outbox_events e WHERE e.event_type = 'usage.recorded.v1'
	AND coalesce(e.data::jsonb->>'site_id', '') = ''`

// fleetScale is FLEET_SCALE (default 1): how many times longer each fault
// stays injected and the load runs around it. CI runs 1 (each fault about 5s
// down); scripts/fleet.sh runs 6.
func fleetScale(t *testing.T) int {
	t.Helper()
	v := os.Getenv("FLEET_SCALE")
	if v == "" {
		return 1
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 100 {
		t.Fatalf("FLEET_SCALE=%q: want a whole number from 1 to 100", v)
	}
	return n
}

// Injected: CHOM run the way it is deployed, each role its own process —
// two ingresses (one backup-link signing key) behind HAProxy, three workers,
// two schedulers, two relays and a billing consumer — on Redis under
// Sentinel, a three-node Kafka cluster and a PostgreSQL primary with a
// synchronous standby (multi-host URL). Under the load harness's user mix at
// the balancer's URL (fleetUsers virtual users: create a site, wait for it,
// list, read, back it up, delete it, wait; a request whose answer was lost is
// sent again with its Idempotency-Key), one of each is killed with SIGKILL in
// turn and brought back: an ingress, a scheduler, a relay, the Redis master,
// a Kafka broker, the PostgreSQL primary and a worker (the standby is promoted; the dead
// primary is not rebuilt as a standby in the test: an operator re-clones it
// with pg_basebackup, which TestPrimaryFailover's kit does not automate).
//
// Sentinel, not Redis Cluster, is the fleet's Redis: it is what
// docs/operations.md advises for the queue, and TestRedisClusterNodeKilled
// covers Cluster on its own.
//
// Must hold: every 202 reaches a final state (the harness's ledger, and the
// database's); each site has one nginx server block, one event per finished
// operation (the ledger of the fault suite); every outbox row is published to
// Kafka; every usage event the metering job wrote is billed on exactly one
// invoice line (the totals; see below), and the invoice lines are those
// events; the billing consumer reads on after the broker's return without a
// restart. Reported: the harness's report (figures, chart) with the faults
// shaded on its time axis, and per fault the requests, errors and p99 while
// it lasted and after, and the time from the kill to the first operation
// finished after it.
//
// Billing bills a tenant's totals only: a usage event with a site_id is one
// site's share of a total that has its own event (events/billing), so the
// invoice lines are compared with the total events (site_id empty).
func TestFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault suite takes minutes; skipped with -short")
	}
	began := time.Now()
	scale := fleetScale(t)
	down := time.Duration(scale) * 5 * time.Second

	sn := testenv.StartSentinel(t, testenv.SentinelConfig{Password: "fleet-data-pw", SentinelPassword: "fleet-sentinel-pw"})
	kafka := testenv.StartKafkaCluster(t, 3)
	primary := testenv.StartPostgresServer(t)
	standby := testenv.StartPostgresReplica(t, primary, testenv.PostgresReplicaConfig{Synchronous: true})
	enginesUp := time.Since(began)

	ports := []int{testenv.FreePort(t), testenv.FreePort(t)}
	s := newStack(t, stackConfig{
		DatabaseURL: testenv.MultiHostURL(primary, standby),
		RedisURL:    sn.URL,
		// Room for every create of the long run (the API allows 10000 a
		// server): capacity is not what the fleet test is about.
		Capacity: 10000,
		// Four servers: CHOM_VPS_MAX_JOBS (4) a server bounds how many
		// provisions run at once, so four make room for 16.
		Servers: 4,
		Env: map[string]string{
			"CHOM_LISTEN":              fmt.Sprintf("127.0.0.1:%d", ports[0]),
			"CHOM_BACKUP_SIGNING_KEY":  "fleet-backup-link-signing-key-0123456789abcdef",
			"CHOM_KAFKA_BROKERS":       strings.Join(kafka.Brokers(), ","),
			"CHOM_METERING_INTERVAL":   "1m",
			"CHOM_RECONCILE_INTERVAL":  "5s",
			"CHOM_RECONCILE_GRACE":     "10s",
			"CHOM_RELAY_POLL_INTERVAL": "50ms",
		},
	})
	ingresses := []*proc{s.ingress, s.startFleetIngress("ingress-2", ports[1])}
	workers := []*proc{s.startWorker(), s.startWorker(), s.startWorker()}
	scheds := []*proc{s.startScheduler(), s.startScheduler()}
	relays := []*proc{s.start("relay-1", "relay"), s.start("relay-2", "relay")}
	billing := s.start("billing-1", "billing-consumer")
	lb := testenv.StartHAProxy(t, fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1]))
	t.Logf("fleet up in %s (engines %s): haproxy %s over ingresses :%d, :%d; 3 workers, 2 schedulers, 2 relays, 1 billing consumer; redis %s; kafka %s; postgres %s, %s",
		time.Since(began).Round(100*time.Millisecond), enginesUp.Round(100*time.Millisecond), lb, ports[0], ports[1],
		queue.RedactURL(sn.URL), strings.Join(kafka.Brokers(), ","), primary.Addr, standby.Addr)

	// The load: the load harness (chom-loadtest's runner) at the balancer's
	// URL, its user mix (create, wait, list, read, backup, delete, wait) for
	// as long as the faults take; the faults start after one quiet period.
	journal := &fleetJournal{s: s}
	finish := make(chan struct{})
	runner, err := loadtest.New(loadtest.Config{BaseURL: lb, Finish: finish, Tokens: []string{s.token}, RequestTimeout: 10 * time.Second,
		OpTimeout: 3 * time.Minute, Drain: 3 * time.Minute, Think: 250 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Accepted: journal})
	if err != nil {
		t.Fatal(err)
	}
	defer runner.Close()
	// One long stage, ended (Finish) one quiet period after the last fault:
	// how long a fault takes to bring back (a Kafka node's JVM, a sync) is not
	// known in advance.
	sc := loadtest.Scenario{Name: "fleet", Purpose: "the user mix through haproxy while one of each role and engine is killed in turn",
		Stages: []loadtest.Stage{{Users: fleetUsers, Duration: 30 * time.Minute}}}
	loadDone := make(chan *loadtest.ScenarioResult, 1)
	loadStart := time.Now()
	go func() {
		res, err := runner.Run(context.WithoutCancel(t.Context()), sc, loadtest.MixUser)
		if err != nil {
			t.Errorf("load: %v", err)
		}
		loadDone <- res
	}()
	time.Sleep(down)

	type fault struct {
		name  string
		kill  func() string // kills one and says which
		bring func()        // brings it (or its replacement) back
		after func()        // once the fault's time is over; may be nil
	}
	var oldMaster *testenv.RedisServer
	var broker int
	var killedAt, kafkaBack time.Time
	faults := []fault{
		{"ingress", func() string {
			ingresses[0].signal(syscall.SIGKILL)
			ingresses[0].wait(10 * time.Second)
			return ingresses[0].name
		},
			func() { ingresses[0] = s.startFleetIngress("ingress-1b", ports[0]) }, nil},
		{"scheduler", func() string {
			scheds[0].signal(syscall.SIGKILL)
			scheds[0].wait(10 * time.Second)
			return scheds[0].name
		},
			func() { scheds[0] = s.start("scheduler-1b", "scheduler") }, nil},
		{"relay", func() string {
			relays[0].signal(syscall.SIGKILL)
			relays[0].wait(10 * time.Second)
			return relays[0].name
		},
			func() { relays[0] = s.start("relay-1b", "relay") }, nil},
		{"redis master", func() string { oldMaster = sn.Master(t); oldMaster.Kill(t); return oldMaster.Addr },
			func() { oldMaster.Start(t) }, nil}, // it rejoins as the new master's replica (the sentinels reconfigure it)
		{"kafka broker", func() string { broker, killedAt = 1, time.Now(); kafka.Kill(broker); return kafka.Addr(broker) },
			func() {
				kafka.Start(broker)
				ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
				defer cancel()
				usage := events.FullTopic(events.DefaultTopicPrefix, events.TopicUsage)
				took, err := kafka.WaitInSync(ctx, usage, "__consumer_offsets")
				if err != nil {
					t.Errorf("kafka node %d restarted but its replicas not in sync within 90s: %v", broker, err)
				}
				t.Logf("fault kafka broker: node %d restarted, its replicas in every ISR %s later", broker, took.Round(100*time.Millisecond))
				kafkaBack = time.Now()
			},
			func() {
				// The billing consumer reads on by itself (no restart): after
				// its last failed fetch it logs "fetching again" on its first
				// fetch that works (or it never failed at all).
				recovered := func() (time.Time, bool) {
					failed := billing.timesAfter("fetch failed; retrying", time.Time{})
					again := billing.timesAfter("fetching again", time.Time{})
					switch {
					case len(failed) == 0:
						return time.Time{}, true
					case len(again) == 0 || again[len(again)-1].Before(failed[len(failed)-1]):
						return time.Time{}, false
					}
					return again[len(again)-1], true
				}
				if !waitFor(30*time.Second, func() bool { _, ok := recovered(); return ok }) {
					t.Errorf("fault kafka broker: the billing consumer's fetches still failed 30s after the broker's return")
				} else if at, _ := recovered(); !at.IsZero() {
					t.Logf("fault kafka broker: the billing consumer fetching again %s after the kill (%s after the broker was back)",
						at.Sub(killedAt).Round(100*time.Millisecond), at.Sub(kafkaBack).Round(100*time.Millisecond))
				}
			}},
		{"postgres primary", func() string {
			primary.Kill(t)
			standby.Promote(t)
			return primary.Addr + " (standby " + standby.Addr + " promoted)"
		},
			func() {}, nil},
		// The worker comes last: its running tasks wait for asynq's lease
		// (about 60s, docs/operations.md), and the load's few users, whose
		// operations the killed worker may all be running (asynq hands a
		// quiet queue's tasks to the worker that asks first), would wait
		// with them through the faults after it.
		{"worker", func() string {
			workers[0].signal(syscall.SIGKILL)
			workers[0].wait(10 * time.Second)
			return workers[0].name
		},
			func() { workers[0] = s.start("worker-1b", "worker") }, nil},
	}
	var marks []loadtest.Mark
	for _, f := range faults {
		at := time.Now()
		what := f.kill()
		t.Logf("fault %s: %s killed (SIGKILL) at +%s", f.name, what, at.Sub(loadStart).Round(100*time.Millisecond))
		time.Sleep(down)
		f.bring()
		marks = append(marks, loadtest.Mark{Name: f.name, From: at, To: time.Now()})
		time.Sleep(down)
		if f.after != nil {
			f.after()
		}
	}
	close(finish)
	res := <-loadDone // the harness has waited for every operation it was given
	loadEnd := time.Now()
	// The schedulers stop (SIGTERM) so that no metering tick comes after
	// the billing ledger is read; each must exit 0.
	for _, p := range scheds {
		p.signal(syscall.SIGTERM)
		if code, ok := p.wait(15 * time.Second); !ok || code != 0 {
			t.Errorf("%s: exited %v (code %d) within 15s of SIGTERM", p.name, ok, code)
		}
	}

	// Drain: every operation finished, every outbox row published, every
	// usage event billed.
	took := s.waitSettled(3 * time.Minute)
	var unpublished int
	if !waitFor(90*time.Second, func() bool {
		unpublished = s.countRows("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")
		return unpublished == 0
	}) {
		t.Errorf("%d outbox rows still unpublished to Kafka 90s after the operations finished", unpublished)
	}
	// A metering task enqueued by the last tick may still be running: wait
	// until its events are published and billed.
	var totals, billed int
	if !waitFor(2*time.Minute, func() bool {
		totals = s.countRows(totalEvents)
		billed = s.countRows("SELECT count(*) FROM invoice_lines")
		return billed >= totals && s.countRows("SELECT count(*) FROM outbox_events WHERE published_at IS NULL") == 0
	}) {
		t.Errorf("%d of %d usage totals billed 2 min after the operations finished", billed, totals)
	}
	time.Sleep(time.Second) // a duplicate still in flight would show now

	// The report: the load harness's, with the faults marked on its time
	// axis; FLEET_REPORT_DIR (scripts/fleet.sh) keeps it.
	rep := &loadtest.Report{Started: loadStart.UTC(), Finished: time.Now().UTC(), Scale: 1, Machine: loadtest.ThisMachine(),
		Target: fmt.Sprintf("TestFleet (FLEET_SCALE=%d, each fault %s down, then %s back): haproxy over 2 ingresses, 3 workers, 2 schedulers, 2 relays, 1 billing consumer", scale, down, down),
		Marks:  marks}
	if res != nil {
		rep.Scenarios = []*loadtest.ScenarioResult{res}
		t.Logf("load through haproxy: %d users, %d requests in %.1fs (%.0f req/s), p50 %.1f ms, p99 %.1f ms, %d errors; operations p50 %.0f ms, p99 %.0f ms; ledger %d accepted, %d finished %v",
			fleetUsers, res.Overall.Requests, res.Seconds, res.Overall.Throughput, res.Overall.LatencyMS.P50, res.Overall.LatencyMS.P99,
			res.Overall.Errors.Server5xx()+res.Overall.Errors.Client4xx()+res.Overall.Errors.Timeouts+res.Overall.Errors.Connection, res.Operations.MS.P50, res.Operations.MS.P99, res.Ledger.Accepted, res.Ledger.Completed, res.Ledger.ByStatus)
		if !res.Ledger.OK() {
			t.Errorf("the load's ledger: %d accepted, %d seen finished; unfinished %v", res.Ledger.Accepted, res.Ledger.Completed, res.Ledger.Unfinished)
		}
	}
	for _, m := range rep.FigureMarks() {
		t.Logf("fault %-16s +%5.1fs → +%5.1fs: %4d requests, %3d errors, p99 ≤ %6.0f ms; 10s after: %4d requests, %3d errors, p99 ≤ %6.0f ms; first operation finished %s after the kill",
			m.Mark.Name, m.FromSecond, m.ToSecond, m.During.Requests, m.During.Errors, m.During.MaxP99,
			m.After.Requests, m.After.Errors, m.After.MaxP99, s.finishedAfter(m.Mark.From, nil, "min").Round(time.Millisecond))
	}
	dir := os.Getenv("FLEET_REPORT_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := rep.WriteFiles(dir); err != nil {
		t.Errorf("write the report: %v", err)
	}
	t.Logf("drain: every operation finished %s after the load stopped (+%s); %v",
		took.Round(100*time.Millisecond), loadEnd.Sub(loadStart).Round(100*time.Millisecond), s.opCounts())
	if err := journal.err(); err != nil {
		t.Error(err)
	}

	// The ledger: operations, sites, nginx blocks, outbox events ...
	s.checkLedger()
	// ... the archives: one file per completed backup, none of any other ...
	s.checkArchives()
	// ... and billing: one invoice line per usage total, no other line.
	usageEvents := s.countRows("SELECT count(*) FROM outbox_events WHERE event_type = 'usage.recorded.v1'")
	totals = s.countRows(totalEvents)
	records := s.countRows("SELECT count(*) FROM usage_records")
	totalRecords := s.countRows("SELECT count(*) FROM usage_records WHERE site_id = ''")
	lines := s.countRows("SELECT count(*) FROM invoice_lines")
	unbilled := s.countRows(`SELECT count(*) FROM outbox_events e WHERE e.event_type = 'usage.recorded.v1'
		AND coalesce(e.data::jsonb->>'site_id', '') = ''
		AND (SELECT count(*) FROM invoice_lines l WHERE l.event_id = e.event_id) <> 1`)
	stray := s.countRows(`SELECT count(*) FROM invoice_lines l WHERE NOT EXISTS
		(SELECT 1 FROM outbox_events e WHERE e.event_id = l.event_id AND e.event_type = 'usage.recorded.v1'
		AND coalesce(e.data::jsonb->>'site_id', '') = '')`)
	t.Logf("billing: %d usage records (%d tenant totals), %d usage events (%d totals), %d invoice lines; %d totals not billed exactly once, %d lines of no total",
		records, totalRecords, usageEvents, totals, lines, unbilled, stray)
	if totals == 0 {
		t.Error("the metering job wrote no usage total during the run (CHOM_METERING_INTERVAL=1m): nothing to bill")
	}
	if unbilled != 0 || stray != 0 || lines != totals || lines != totalRecords {
		t.Errorf("invoice lines do not equal the usage totals: %d total records, %d total events, %d lines, %d not billed once, %d stray",
			totalRecords, totals, lines, unbilled, stray)
	}
	live := slices.Concat(ingresses, workers, relays, []*proc{billing})
	s.ingress = ingresses[0]
	s.assertRunning(live...)
	t.Logf("test took %s (FLEET_SCALE=%d, each fault %s down)", time.Since(began).Round(time.Second), scale, down)
}

// startFleetIngress starts an ingress on a fixed port (the balancer's
// configuration names it) and waits until it answers its health check.
func (s *stack) startFleetIngress(name string, port int) *proc {
	s.t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p := s.startEnv(name, []string{"CHOM_LISTEN=" + addr}, "ingress")
	base := "http://" + addr + "/api/v1"
	if !waitFor(30*time.Second, func() bool {
		r, err := s.doAt(base, "GET", "/health", "", nil)
		return err == nil && r.status == http.StatusOK
	}) {
		s.t.Fatalf("%s did not answer on %s within 30s; its log:\n%s", name, addr, p.tail(40))
	}
	return p
}

// countRows runs a count query on the stack's database.
func (s *stack) countRows(query string) int {
	s.t.Helper()
	var n int
	if err := s.db.QueryRowContext(s.t.Context(), query).Scan(&n); err != nil {
		s.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// fleetUsers is the load's virtual users: what the fleet's three workers
// keep up with on a small machine (2 cores, every process with -race), so
// what shows is the faults' cost, not a growing backlog.
const fleetUsers = 4

// fleetJournal takes the load harness's accepted operations (one JSON line
// per Write, loadtest.Config.Accepted) into the stack's ledger of 202s.
type fleetJournal struct {
	s   *stack
	mu  sync.Mutex
	bad error
}

// Write records one accepted operation.
func (j *fleetJournal) Write(line []byte) (int, error) {
	var op loadtest.AcceptedOp
	if err := json.Unmarshal(line, &op); err != nil || op.ID == "" {
		j.mu.Lock()
		j.bad = errors.Join(j.bad, fmt.Errorf("accepted operation %q: %v", line, err))
		j.mu.Unlock()
		return len(line), nil
	}
	a := accepted{Type: op.Type, Domain: op.Domain}
	if op.Type == "site.provision" || op.Type == "site.deprovision" {
		a.SiteID = op.TargetID
	}
	j.s.mu.Lock()
	j.s.accepted[op.ID] = a
	j.s.mu.Unlock()
	return len(line), nil
}

// err is every line Write could not read.
func (j *fleetJournal) err() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.bad
}

// checkArchives holds the backup store (the fs store under the local root,
// which every process shares) against the database: every completed backup's
// archive is there and there is no archive of anything else (a backup that
// ran twice writes its one key twice; a worker killed mid-upload leaves only
// a temporary file, which is counted).
func (s *stack) checkArchives() {
	s.t.Helper()
	dir := filepath.Join(s.root, "backups")
	files := map[string]bool{}
	temps := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.HasPrefix(d.Name(), ".put-") {
			temps++
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		files[filepath.ToSlash(rel)] = true
		return err
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.t.Fatalf("archives: %v", err)
	}
	rows, err := s.db.QueryContext(s.t.Context(), "SELECT storage_key FROM site_backups WHERE status = 'completed'")
	if err != nil {
		s.t.Fatalf("completed backups: %v", err)
	}
	defer rows.Close()
	completed := map[string]bool{}
	for rows.Next() {
		var key string
		if err := rows.Scan(&key); err != nil {
			s.t.Fatal(err)
		}
		completed[key] = true
		if !files[key] {
			s.t.Errorf("completed backup %s has no archive", key)
		}
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	for key := range files {
		if !completed[key] {
			s.t.Errorf("archive %s belongs to no completed backup", key)
		}
	}
	s.t.Logf("archives: %d files for %d completed backups; %d temporary files left by killed uploads", len(files), len(completed), temps)
}
