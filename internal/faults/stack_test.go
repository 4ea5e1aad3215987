package faults

import (
	"bufio"
	"bytes"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/queue"
)

// chomBin is the chom binary TestMain builds for every test of the package.
var chomBin string

// raceEnabled is set when the tests run with -race (race_test.go); chom is then
// built with -race too, and a data race reported by any process fails its test.
var raceEnabled bool

// TestMain builds cmd/chom once, so that every test runs the same binary an
// operator would, as separate processes that can be killed.
func TestMain(m *testing.M) { testenv.ChomMain(m, "faults", raceEnabled, &chomBin) }

// stackConfig chooses the servers of a stack; empty URLs take a fresh schema
// and Redis database of the shared test servers.
type stackConfig struct {
	DatabaseURL string
	RedisURL    string
	// Servers is how many shared VPS servers are registered (default 2), each
	// with room for Capacity sites (default 1000).
	Servers, Capacity int
	// Env overrides or adds CHOM_* settings of every process.
	Env map[string]string
}

// stack is one CHOM installation run as subprocesses of the test: an ingress,
// workers and a scheduler on real PostgreSQL and Redis, with the local driver
// writing under root. It records every operation the API accepted, for the
// ledger.
type stack struct {
	t        *testing.T
	dbURL    string
	redisURL string
	root     string // CHOM_LOCAL_ROOT
	logDir   string
	env      []string
	db       *sql.DB // the test's own pool, for the ledger
	http     *http.Client

	api     string // http://host:port/api/v1 of the current ingress
	ingress *proc
	token   string // tenant "acme", read and write
	admin   string // tenant "platform", admin
	vps     []string

	mu       sync.Mutex
	procs    []*proc
	accepted map[string]accepted // by operation ID
}

// accepted is an operation the API answered 202 for.
type accepted struct {
	Type   string // site.provision or site.deprovision
	Domain string
	SiteID string
}

func newStack(t *testing.T, cfg stackConfig) *stack {
	t.Helper()
	if testing.Short() {
		t.Skip("the fault suite takes minutes; skipped with -short")
	}
	// The shared servers are asked for even when the test has its own of one
	// kind, so that every test skips (or fails, in CI) the same way.
	dbURL, redisURL := testenv.PostgresDSN(t), testenv.Redis(t).URL
	if cfg.DatabaseURL == "" {
		cfg.DatabaseURL = dbURL
	}
	if cfg.RedisURL == "" {
		cfg.RedisURL = redisURL
	}
	if chomBin == "" {
		t.Fatal("chom was not built (TestMain)")
	}
	if cfg.Servers == 0 {
		cfg.Servers = 2
	}
	if cfg.Capacity == 0 {
		cfg.Capacity = 1000
	}
	// The local driver writes its root into config files, so only plain path
	// characters: not t.TempDir, whose name comes from the test's.
	root, err := os.MkdirTemp("", "chom-faults-vps-")
	if err != nil {
		t.Fatal(err)
	}
	logDir, err := os.MkdirTemp("", "chom-faults-logs-")
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{
		t: t, dbURL: cfg.DatabaseURL, redisURL: cfg.RedisURL, root: root, logDir: logDir,
		http:     &http.Client{Timeout: 20 * time.Second},
		accepted: make(map[string]accepted),
	}
	settings := map[string]string{
		"CHOM_DATABASE_URL": cfg.DatabaseURL,
		"CHOM_REDIS_URL":    cfg.RedisURL,
		"CHOM_LOCAL_ROOT":   root,
		"CHOM_LISTEN":       "127.0.0.1:0",
		// Parallel tests run several workers and schedulers at once: each takes
		// a free port for /metrics instead of the fixed per-process default.
		"CHOM_METRICS_LISTEN":     "127.0.0.1:0",
		"CHOM_LOG_FORMAT":         "json",
		"CHOM_LOG_LEVEL":          "info",
		"CHOM_DB_MAX_CONNS":       "8",
		"CHOM_REDIS_POOL_SIZE":    "16",
		"CHOM_WORKER_CONCURRENCY": "20",
		"CHOM_RECONCILE_INTERVAL": "2s",
		"CHOM_RECONCILE_GRACE":    "3s",
		"CHOM_RETRY_BASE":         "200ms",
		"CHOM_RETRY_MAX":          "2s",
		"CHOM_SHUTDOWN_TIMEOUT":   "2s",
		"CHOM_OPS_UI":             "false",
		"CHOM_RATE_LIMIT":         "0", // the suite floods one token on purpose
		// The scheduler's layout sweep queues a site:migrate_layout, which
		// reloads nginx, for every active site: one run while a test holds
		// the reloads (reloadGate) would hang holding its server's job slot.
		// Its tick at the scheduler's start is each test's to wait for; the
		// next one is put beyond any test's end.
		"CHOM_LAYOUT_MIGRATE_INTERVAL": periodClearOf(time.Now(), time.Hour).String(),
		"GOGC":                         "100",
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHOM_") && !strings.HasPrefix(kv, "GOGC=") {
			s.env = append(s.env, kv)
		}
	}
	maps.Copy(settings, cfg.Env)
	for k, v := range settings {
		s.env = append(s.env, k+"="+v)
	}
	s.db, err = sql.Open("pgx", cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	s.db.SetMaxOpenConns(4)
	// Cleanups run last-in first-out: processes stop before the pool closes,
	// and the logs are shown (on failure) before the directory goes.
	t.Cleanup(func() {
		_ = os.RemoveAll(root)
		// CHOM_KEEP_SERVICES=1 (see scripts/test-services.sh) keeps the logs of
		// a failed test for a post-mortem.
		if t.Failed() && os.Getenv("CHOM_KEEP_SERVICES") == "1" {
			t.Logf("logs kept in %s (CHOM_KEEP_SERVICES=1)", logDir)
			return
		}
		_ = os.RemoveAll(logDir)
	})
	t.Cleanup(func() { _ = s.db.Close() })
	t.Cleanup(s.stopAll)

	s.run("migrate", "up")
	s.token = strings.TrimSpace(s.run("token", "create", "--tenant", "acme", "--scope", "read,write", "--name", "faults"))
	s.admin = strings.TrimSpace(s.run("token", "create", "--tenant", "platform", "--scope", "admin", "--name", "faults"))
	s.startIngress()
	for i := range cfg.Servers {
		body := map[string]any{
			"hostname": fmt.Sprintf("vps%d.faults.example", i+1), "ip_address": fmt.Sprintf("192.0.2.%d", i+1),
			"provider": "local", "region": "test", "allocation": "shared", "site_capacity": cfg.Capacity,
		}
		r := s.must("POST", "/vps", s.admin, body)
		if r.status != http.StatusCreated {
			t.Fatalf("POST /vps: %d %s", r.status, r.body)
		}
		var v struct {
			ID string `json:"id"`
		}
		r.json(t, &v)
		s.vps = append(s.vps, v.ID)
	}
	return s
}

// run runs a chom command to completion and returns its standard output; it
// fails the test when the command fails.
func (s *stack) run(args ...string) string {
	s.t.Helper()
	return testenv.RunChom(s.t, chomBin, s.env, args...)
}

// proc is a chom server process (ingress, worker, scheduler) with its log.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	state   *os.ProcessState // once exited is closed
}

// start runs `chom <args>` in the background, its output in logDir/name.log.
// It is stopped (SIGTERM, then SIGKILL) when the test ends.
func (s *stack) start(name string, args ...string) *proc {
	s.t.Helper()
	return s.startEnv(name, nil, args...)
}

// startEnv is start with extra KEY=value settings for this process only
// (they override the stack's).
func (s *stack) startEnv(name string, extra []string, args ...string) *proc {
	s.t.Helper()
	path := filepath.Join(s.logDir, name+".log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(chomBin, args...)
	cmd.Env = append(append([]string(nil), s.env...), extra...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start chom %s: %v", strings.Join(args, " "), err)
	}
	p := &proc{name: name, cmd: cmd, logPath: path, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		close(p.exited)
	}()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p
}

// startIngress starts an ingress and points the stack's API at it once it answers.
func (s *stack) startIngress() *proc {
	s.t.Helper()
	p := s.start(fmt.Sprintf("ingress-%d", s.count("ingress")+1), "ingress")
	var addr string
	deadline := time.Now().Add(30 * time.Second)
	for addr == "" {
		for _, line := range p.logLines() {
			if line["msg"] == "ingress listening" {
				addr, _ = line["addr"].(string)
			}
		}
		if addr != "" {
			break
		}
		if !p.running() || time.Now().After(deadline) {
			s.t.Fatalf("%s did not start listening; its log:\n%s", p.name, p.tail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.api = "http://" + addr + "/api/v1"
	s.ingress = p
	if r := s.must("GET", "/health", "", nil); r.status != http.StatusOK {
		s.t.Fatalf("GET /health: %d %s", r.status, r.body)
	}
	return p
}

// startWorker starts a worker process.
func (s *stack) startWorker() *proc {
	s.t.Helper()
	return s.start(fmt.Sprintf("worker-%d", s.count("worker")+1), "worker")
}

// periodClearOf returns a period of a day or more whose next start, as the
// scheduler aligns periods (workers.Periodic: now truncated to the period,
// plus one), is at least clear after now.
func periodClearOf(now time.Time, clear time.Duration) time.Duration {
	d := 24 * time.Hour
	for now.Truncate(d).Add(d).Sub(now) < clear {
		d += time.Hour
	}
	return d
}

// startScheduler starts a scheduler process (the reconciler's clock).
func (s *stack) startScheduler() *proc {
	s.t.Helper()
	return s.start(fmt.Sprintf("scheduler-%d", s.count("scheduler")+1), "scheduler")
}

func (s *stack) count(kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, p := range s.procs {
		if strings.HasPrefix(p.name, kind+"-") {
			n++
		}
	}
	return n
}

// stopAll stops every process still running and, when the test failed, shows
// the end of every process's log.
func (s *stack) stopAll() {
	s.mu.Lock()
	procs := append([]*proc(nil), s.procs...)
	s.mu.Unlock()
	var termed []*proc
	for _, p := range procs {
		if p.running() {
			p.signal(syscall.SIGTERM)
			termed = append(termed, p)
		}
	}
	for _, p := range termed {
		// A process told to stop exits 0 within its shutdown timeout (2s).
		code, ok := p.wait(10 * time.Second)
		switch {
		case !ok:
			s.t.Errorf("%s still running 10s after SIGTERM", p.name)
			p.signal(syscall.SIGKILL)
			p.wait(10 * time.Second)
		case code != 0:
			s.t.Errorf("%s exited %d after SIGTERM at the end of the test; its last lines:\n%s", p.name, code, p.tail(3))
		}
	}
	for _, p := range procs {
		if race := p.dataRace(); race != "" {
			s.t.Errorf("%s reported a data race:\n%s", p.name, race)
		}
	}
	if s.t.Failed() {
		for _, p := range procs {
			s.t.Logf("log of %s: warnings and errors (first 40 kinds):\n%s\nlast lines:\n%s", p.name, p.notable(40), p.tail(20))
		}
	}
}

// assertRunning fails the test for each of procs, and the ingress, that has
// exited: no fault may crash a process.
func (s *stack) assertRunning(procs ...*proc) {
	s.t.Helper()
	for _, p := range append([]*proc{s.ingress}, procs...) {
		if !p.running() {
			s.t.Errorf("%s exited with code %d during the test; its log:\n%s", p.name, p.state.ExitCode(), p.tail(30))
		}
	}
}

func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func (p *proc) signal(sig syscall.Signal) { _ = p.cmd.Process.Signal(sig) }

// wait waits up to timeout for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) (code int, exited bool) {
	select {
	case <-p.exited:
		return p.state.ExitCode(), true
	case <-time.After(timeout):
		return 0, false
	}
}

// logLines returns the JSON lines of the process's log, decoded; other lines
// (a panic, asynq's own prints) are skipped.
func (p *proc) logLines() []map[string]any {
	f, err := os.Open(p.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// logValues returns the set of values of key in the log lines whose msg is msg.
func (p *proc) logValues(msg, key string) map[string]bool {
	out := map[string]bool{}
	for _, l := range p.logLines() {
		if l["msg"] == msg {
			if v, ok := l[key].(string); ok {
				out[v] = true
			}
		}
	}
	return out
}

// countLogPrefix counts the log lines whose msg starts with prefix.
func (p *proc) countLogPrefix(prefix string) int {
	n := 0
	for _, l := range p.logLines() {
		if m, ok := l["msg"].(string); ok && strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

// notable returns the first line of each kind of warning or error in the
// process's log (a kind is a message and its error), up to n kinds, with how
// many times each occurred. Per-request lines are left out: the test reports
// the answers itself.
func (p *proc) notable(n int) string {
	type kind struct {
		line  string
		count int
	}
	var kinds []*kind
	seen := map[string]*kind{}
	for _, l := range p.logLines() {
		level, _ := l["level"].(string)
		msg, _ := l["msg"].(string)
		if (level != "WARN" && level != "ERROR") || msg == "http request" {
			continue
		}
		key := msg + "|" + fmt.Sprint(l["error"])
		if k, ok := seen[key]; ok {
			k.count++
			continue
		}
		raw, _ := json.Marshal(l)
		k := &kind{line: string(raw), count: 1}
		seen[key] = k
		kinds = append(kinds, k)
	}
	var b strings.Builder
	for i, k := range kinds {
		if i == n {
			fmt.Fprintf(&b, "… %d kinds in all\n", len(kinds))
			break
		}
		fmt.Fprintf(&b, "%d× %s\n", k.count, k.line)
	}
	return b.String()
}

// dataRace returns the first data race report in the process's log, if any.
func (p *proc) dataRace() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	i := bytes.Index(b, []byte("WARNING: DATA RACE"))
	if i < 0 {
		return ""
	}
	report := b[i:]
	if j := bytes.Index(report, []byte("\n==================")); j > 0 {
		report = report[:j]
	}
	return string(report)
}

// tail returns the last n lines of the process's log.
func (p *proc) tail(n int) string { return testenv.Tail(p.logPath, n) }

// response is an HTTP answer read whole, with how long it took.
type response struct {
	status  int
	header  http.Header
	body    []byte
	elapsed time.Duration
}

func (r response) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// do sends a request to the API (path below /api/v1); body is JSON-encoded
// unless nil. headers are name, value pairs. A transport error is returned,
// not fatal: under a fault it is an observation.
func (s *stack) do(method, path, token string, body any, headers ...string) (response, error) {
	return s.doAt(s.api, method, path, token, body, headers...)
}

// doAt is do on the API at base (http://host:port/api/v1 of one ingress).
func (s *stack) doAt(base, method, path, token string, body any, headers ...string) (response, error) {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return response{}, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		return response{}, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	start := time.Now()
	res, err := s.http.Do(req)
	if err != nil {
		return response{elapsed: time.Since(start)}, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: raw, elapsed: time.Since(start)}, err
}

// must is do, failing the test on a transport error.
func (s *stack) must(method, path, token string, body any, headers ...string) response {
	s.t.Helper()
	r, err := s.do(method, path, token, body, headers...)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// opView is the part of an operation the suite reads.
type opView struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Status   string `json:"status"`
	TargetID string `json:"target_id"`
}

// createSite posts one site with the domain as its Idempotency-Key and
// records the operation when it is accepted.
func (s *stack) createSite(domain string) (response, error) {
	siteType := "php"
	if len(domain)%2 == 0 {
		siteType = "html"
	}
	r, err := s.do("POST", "/sites", s.token, map[string]string{"domain": domain, "site_type": siteType},
		"Idempotency-Key", "create-"+domain)
	if err == nil && r.status == http.StatusAccepted {
		var op opView
		if err := json.Unmarshal(r.body, &op); err != nil {
			return r, err
		}
		s.record(op, domain)
	}
	return r, err
}

// deleteSite deletes a site and records the operation when it is accepted.
func (s *stack) deleteSite(siteID string) (response, error) {
	r, err := s.do("DELETE", "/sites/"+siteID, s.token, nil, "Idempotency-Key", "delete-"+siteID)
	if err == nil && r.status == http.StatusAccepted {
		var op opView
		if err := json.Unmarshal(r.body, &op); err != nil {
			return r, err
		}
		s.record(op, "")
	}
	return r, err
}

func (s *stack) record(op opView, domain string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accepted[op.ID] = accepted{Type: op.Type, Domain: domain, SiteID: op.TargetID}
}

// createSites posts n sites named <prefix>-NNN.faults.example from 16
// concurrent clients and fails the test unless every one is accepted.
func (s *stack) createSites(prefix string, n int) []string {
	s.t.Helper()
	domains := make([]string, n)
	for i := range domains {
		domains[i] = fmt.Sprintf("%s-%03d.faults.example", prefix, i)
	}
	s.parallel(len(domains), func(i int) error {
		r, err := s.createSite(domains[i])
		if err != nil {
			return err
		}
		if r.status != http.StatusAccepted {
			return fmt.Errorf("POST /sites %s: %d %s", domains[i], r.status, r.body)
		}
		return nil
	})
	return domains
}

// parallel runs fn(0..n-1) on 16 goroutines and fails the test with the
// errors it returned.
func (s *stack) parallel(n int, fn func(i int) error) {
	s.t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		next = make(chan int)
	)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(errs) > 10 {
		errs = append(errs[:10], fmt.Errorf("… %d errors in all", len(errs)))
	}
	if err := errors.Join(errs...); err != nil {
		s.t.Fatal(err)
	}
}

// acceptedIDs returns the IDs of the accepted operations.
func (s *stack) acceptedIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.accepted))
	for id := range s.accepted {
		ids = append(ids, id)
	}
	return ids
}

// acceptedSites returns the site IDs of the accepted creates.
func (s *stack) acceptedSites() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for _, a := range s.accepted {
		if a.Type == "site.provision" {
			ids = append(ids, a.SiteID)
		}
	}
	return ids
}

// taskState returns the state of an operation's task in Redis (live,
// completed, archived, missing), or the error reading it.
func (s *stack) taskState(opID string) string {
	rc, err := queue.NewRedisClient(s.redisURL, 1)
	if err != nil {
		return "error: " + err.Error()
	}
	defer rc.Close()
	st, err := queue.NewInspector(rc).TaskState(s.t.Context(), queue.QueueDefault, opID)
	if err != nil {
		return "error: " + err.Error()
	}
	return string(st)
}

// layoutTasksLive returns how many of the sites' site:migrate_layout tasks
// are queued or running.
func (s *stack) layoutTasksLive(siteIDs []string) int {
	s.t.Helper()
	rc, err := queue.NewRedisClient(s.redisURL, 1)
	if err != nil {
		s.t.Fatalf("redis: %v", err)
	}
	defer rc.Close()
	in := queue.NewInspector(rc)
	n := 0
	for _, id := range siteIDs {
		st, err := in.TaskState(s.t.Context(), queue.QueueLow, "migrate-layout:"+id)
		if err != nil {
			s.t.Fatalf("layout task of %s: %v", id, err)
		}
		if st == queue.TaskLive {
			n++
		}
	}
	return n
}

// opCounts returns how many operations are in each status.
func (s *stack) opCounts() map[string]int {
	s.t.Helper()
	out := map[string]int{}
	rows, err := s.db.QueryContext(s.t.Context(), "SELECT status, count(*) FROM operations GROUP BY status")
	if err != nil {
		s.t.Fatalf("count operations: %v", err)
	}
	defer rows.Close()
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			s.t.Fatal(err)
		}
		out[st] = n
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// vpsHealth returns server vpsID's recorded health status ("" when it
// cannot be read).
func (s *stack) vpsHealth(vpsID string) string {
	s.t.Helper()
	var st string
	if err := s.db.QueryRowContext(s.t.Context(), "SELECT health_status FROM vps_servers WHERE id = $1", vpsID).Scan(&st); err != nil {
		s.t.Logf("read health of %s: %v", vpsID, err)
		return ""
	}
	return st
}

// idsWithStatus returns the IDs of the operations in status.
func (s *stack) idsWithStatus(status string) []string {
	s.t.Helper()
	rows, err := s.db.QueryContext(s.t.Context(), "SELECT id FROM operations WHERE status = $1 ORDER BY id", status)
	if err != nil {
		s.t.Fatalf("list %s operations: %v", status, err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			s.t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// reloadGate injects a hung reload on every server of a stack: it makes each
// server's nginx/reload-requested a named pipe, which the local driver opens for
// writing at the end of every provision and deprovision (its stand-in for
// `nginx -s reload`). While the gate is shut no process reads the pipe, so that
// open blocks, and the job hangs with all of the site's files written — a
// long job that cannot finish, as on a server whose reload never returns.
// Opening the gate holds the pipe open for reading, so every open succeeds.
type reloadGate struct {
	t     *testing.T
	paths []string
	mu    sync.Mutex
	held  []*os.File
}

// newReloadGate makes the pipes, shut. The gate is opened when the test ends,
// so that no process stays stuck.
func (s *stack) newReloadGate() *reloadGate {
	s.t.Helper()
	g := &reloadGate{t: s.t}
	for _, id := range s.vps {
		dir := filepath.Join(s.root, id, "nginx")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			s.t.Fatal(err)
		}
		path := filepath.Join(dir, "reload-requested")
		if err := syscall.Mkfifo(path, 0o644); err != nil {
			s.t.Fatalf("mkfifo %s: %v", path, err)
		}
		g.paths = append(g.paths, path)
	}
	s.t.Cleanup(func() {
		g.open()
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, f := range g.held {
			_ = f.Close()
		}
	})
	return g
}

// open lets every reload through until shut is called.
func (g *reloadGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.held) > 0 {
		return
	}
	for _, p := range g.paths {
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			g.t.Errorf("open reload gate %s: %v", p, err)
			continue
		}
		g.held = append(g.held, f)
	}
}

// shut makes every later reload hang until open is called.
func (g *reloadGate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, f := range g.held {
		_ = f.Close()
	}
	g.held = nil
}

// hungJobs counts the running operations whose job has written all of its
// site's files and hangs at the reload step (provision progress 82: placement
// 10 plus 90% of the driver's 80).
func (s *stack) hungJobs() int {
	s.t.Helper()
	var n int
	err := s.db.QueryRowContext(s.t.Context(),
		"SELECT count(*) FROM operations WHERE status = 'running' AND op_type = 'site.provision' AND progress >= 82").Scan(&n)
	if err != nil {
		s.t.Fatalf("count hung jobs: %v", err)
	}
	return n
}

// waitFor polls cond every 100ms until it holds or timeout passes; it reports
// whether it held.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitSettled waits until no operation is pending or running and returns how
// long that took. On timeout it fails the test, naming each unfinished
// operation with its attempts and the state of its task in Redis.
func (s *stack) waitSettled(timeout time.Duration) time.Duration {
	s.t.Helper()
	start := time.Now()
	settled := waitFor(timeout, func() bool {
		c := s.opCounts()
		return c["pending"]+c["running"] == 0
	})
	if !settled {
		s.t.Fatalf("operations still unfinished after %s:\n%s", timeout, s.describeUnfinished())
	}
	return time.Since(start)
}

// TestPeriodClearOf checks the stack's layout interval against the
// scheduler's own alignment, over three days of start times.
func TestPeriodClearOf(t *testing.T) {
	start := time.Date(2026, 12, 4, 22, 0, 0, 0, time.UTC)
	for now := start; now.Before(start.Add(72 * time.Hour)); now = now.Add(7*time.Minute + 13*time.Second) {
		d := periodClearOf(now, time.Hour)
		if d < 24*time.Hour {
			t.Fatalf("at %s: period %s, want at least a day", now, d)
		}
		if next := now.Truncate(d).Add(d); next.Sub(now) < time.Hour {
			t.Fatalf("at %s: period %s starts again at %s, within the hour", now, d, next)
		}
	}
}
