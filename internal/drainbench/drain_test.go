package drainbench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/internal/stack"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
	"github.com/chomhq/chom/workers"
)

// Environment of a worker process (the test binary run again).
const (
	envRole  = "CHOM_DRAIN_ROLE"  // "chom" or "bare": run as that worker
	envOut   = "CHOM_DRAIN_OUT"   // file the worker writes its report to at exit
	envCount = "CHOM_DRAIN_COUNT" // "1": count the database transactions
)

// Knobs of TestDrain (scripts/load/drain.sh sets them).
const (
	// EnvN is how many operations each pass drains (default 300).
	EnvN = "CHOM_DRAIN_N"
	// EnvRounds is how many timed rounds run, each a chom pass and a bare
	// pass (default 1; the script runs 3 and reports medians).
	EnvRounds = "CHOM_DRAIN_ROUNDS"
	// EnvProfile is a directory: each chom worker of the timed passes
	// writes a CPU profile there (chom-worker-*.pprof).
	EnvProfile = "CHOM_DRAIN_PROFILE_DIR"
	// EnvTrace is a directory: each chom and bare worker of the timed
	// passes writes a runtime execution trace there (chom-worker-*.trace,
	// bare-worker-*.trace), for `go tool trace -pprof=net|sync|syscall|sched`:
	// where the workers' goroutines wait off CPU.
	EnvTrace = "CHOM_DRAIN_TRACE_DIR"
	// EnvCountN is how many operations the untimed pass that counts
	// transactions drains (default min(N, 2000)).
	EnvCountN = "CHOM_DRAIN_COUNT_N"
)

// taskNoop is the task type of the bare asynq workers.
const taskNoop = "drainbench:noop"

// workerReport is what a worker process writes at exit.
type workerReport struct {
	Processed  int64    `json:"processed"`    // tasks it completed (bare) or provisions its driver ran (chom)
	LastDoneNs int64    `json:"last_done_ns"` // wall clock of its last completed task (bare)
	Counts     TxCounts `json:"counts"`
}

func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case "":
		os.Exit(m.Run())
	case "chom":
		exitWith(chomWorker())
	case "bare":
		exitWith(bareWorker())
	default:
		exitWith(fmt.Errorf("%s=%q: want chom or bare", envRole, os.Getenv(envRole)))
	}
}

func exitWith(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "drainbench worker:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// chomWorker is `chom worker` as stack.WorkerProcess builds it (the
// configuration from CHOM_* variables, the backends, stack.NewWorker and its
// job table, guard, breakers and limits), with the no-op driver given through
// the stack's test hook, and, with CHOM_DRAIN_COUNT=1, a transaction counter
// on its database handle. It runs until SIGTERM.
func chomWorker() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	c, err := stack.LoadConfig(os.Getenv)
	if err != nil {
		return err
	}
	counter := NewTxCounter()
	pool := models.PoolConfig{MaxOpenConns: c.DBMaxConns}
	if os.Getenv(envCount) == "1" {
		pool.Tracer = counter
	}
	db, err := models.Open(ctx, c.DatabaseURL, pool)
	if err != nil {
		return err
	}
	defer db.Close()
	rdb, err := queue.NewRedisClient(c.RedisURL, c.RedisPoolSize)
	if err != nil {
		return err
	}
	defer rdb.Close()
	b, err := stack.NewBackends(ctx, db, rdb, stack.BackendOptions{Quotas: c.Quotas, DomainVerification: c.DomainVerification})
	if err != nil {
		return err
	}
	if path := os.Getenv(EnvProfile); path != "" {
		f, err := os.CreateTemp(path, "chom-worker-*.pprof")
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	stopTrace, err := startTrace("chom")
	if err != nil {
		return err
	}
	defer stopTrace()
	drv := &NoopDriver{}
	log := stack.NewLogger(os.Stderr, c).With("process", "worker")
	w, err := stack.NewWorker(c, b, log, stack.Hooks{Driver: drv.Driver()})
	if err != nil {
		return err
	}
	if err := w.Run(ctx); err != nil {
		return err
	}
	return writeReport(workerReport{Processed: drv.Provisions(), Counts: counter.Counts()})
}

// bareWorker is an asynq server configured as a CHOM worker is
// (workers.New: the concurrency, queues and weights, poll intervals and
// Redis pool), whose only handler does nothing. It runs until SIGTERM.
func bareWorker() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	c, err := stack.LoadConfig(os.Getenv)
	if err != nil {
		return err
	}
	rdb, err := queue.NewRedisClient(c.RedisURL, c.RedisPoolSize)
	if err != nil {
		return err
	}
	defer rdb.Close()
	stopTrace, err := startTrace("bare")
	if err != nil {
		return err
	}
	defer stopTrace()
	var done, last atomic.Int64
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              c.Concurrency,
		Queues:                   queue.Weights(),
		RetryDelayFunc:           workers.RetryDelay(c.RetryBase, c.RetryMax, c.JobDeferDelay),
		IsFailure:                workers.IsFailure,
		ShutdownTimeout:          c.ShutdownTimeout,
		TaskCheckInterval:        250 * time.Millisecond, // workers.New's defaults
		DelayedTaskCheckInterval: time.Second,
		LogLevel:                 asynq.WarnLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(taskNoop, func(context.Context, *asynq.Task) error {
		done.Add(1)
		last.Store(time.Now().UnixNano())
		return nil
	})
	if err := srv.Start(mux); err != nil {
		return err
	}
	<-ctx.Done()
	srv.Shutdown()
	return writeReport(workerReport{Processed: done.Load(), LastDoneNs: last.Load()})
}

// startTrace starts a runtime execution trace of a worker of role into
// EnvTrace's directory, when that is set; the returned function stops it.
func startTrace(role string) (func(), error) {
	dir := os.Getenv(EnvTrace)
	if dir == "" {
		return func() {}, nil
	}
	f, err := os.CreateTemp(dir, role+"-worker-*.trace")
	if err != nil {
		return nil, err
	}
	if err := trace.Start(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() { trace.Stop(); _ = f.Close() }, nil
}

func writeReport(r workerReport) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return os.WriteFile(os.Getenv(envOut), b, 0o600)
}

// pass is one drain measured: N tasks through two worker processes.
type pass struct {
	kind     string // "chom" or "bare"
	n        int
	elapsed  time.Duration
	counts   TxCounts         // chom, counted pass only
	reported int64            // processed, summed over the workers
	redis    map[string]int64 // Redis commands the pass ran, by command (INFO commandstats)
	cpu      CPUSplit         // CPU seconds the machine spent from the release to the drain's end, by process
}

func (p pass) rate() float64 { return float64(p.n) / p.elapsed.Seconds() }

// msPerOp is the CPU time of the pass's group (cpuSince's names; "" for all
// of them) in milliseconds per operation.
func (p pass) msPerOp(group string) float64 {
	c := p.cpu.Total()
	if group != "" {
		c = p.cpu[group]
	}
	return c * 1000 / float64(p.n)
}

// TestDrain accepts N site provisions (the rows the ingress writes, through
// the ingress's own group-committing models.SiteAcceptor, and their tasks),
// then lets two chom worker processes over the no-op driver drain them end
// to end, timed from the queue's release to the last operation's finish;
// then two bare asynq workers of the same concurrency drain N no-op tasks
// with the same payload, options and queue on the same Redis. Each chom pass
// checks its ledger: every operation succeeded, every site active and placed,
// one site.provisioned.v1 outbox row per operation, nothing left in the
// queue. An untimed pass with a transaction counter in the workers then
// gives the database work per provision. Figures are printed (DRAIN lines)
// and logged; nothing is asserted about speed.
func TestDrain(t *testing.T) {
	n := envInt(t, EnvN, 300)
	rounds := envInt(t, EnvRounds, 1)
	countN := envInt(t, EnvCountN, min(n, 2000))
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, bin: bin}

	var chom, bare, floor1, floorB []pass
	for r := 1; r <= rounds; r++ {
		// Alternate which goes first, so a drift of the machine's load
		// during the run does not favour one side; the floor passes
		// (floor_test.go) follow.
		order := []string{"chom", "bare"}
		if r%2 == 0 {
			order = []string{"bare", "chom"}
		}
		for _, kind := range append(order, "floor1", "floorB") {
			var p pass
			switch kind {
			case "chom":
				p = h.chomPass(n, false)
				chom = append(chom, p)
			case "bare":
				p = h.barePass(n)
				bare = append(bare, p)
			case "floor1":
				p = h.floorPass(n, 1)
				floor1 = append(floor1, p)
			default:
				p = h.floorPass(n, floorBatch)
				floorB = append(floorB, p)
			}
			line := fmt.Sprintf("DRAIN round=%d kind=%s n=%d elapsed=%v ops_per_s=%.0f load=%s cpu_ms_per_op=%s redis_per_op=%s",
				r, kind, n, p.elapsed.Round(time.Millisecond), p.rate(), loadAvg(), cpuPerOp(p.cpu, n), perOp(p.redis, n))
			t.Log(line)
			fmt.Println(line)
		}
	}
	mc, mb := median(chom), median(bare)
	summary := fmt.Sprintf("DRAIN median of %d: chom %.0f ops/s, bare asynq %.0f tasks/s, ratio %.2f (n=%d, 2 workers x concurrency %d)",
		rounds, mc, mb, mc/mb, n, workers.DefaultConcurrency)
	t.Log(summary)
	fmt.Println(summary)
	bareCPU := medianOf(bare, func(p pass) float64 { return p.msPerOp("") })
	pgCPU := func(p pass) float64 { return p.msPerOp("postgres") }
	ceiling := func(floor []pass) float64 {
		return medianOf(floor, func(f pass) float64 { return floorCeiling(bareCPU, f) })
	}
	summary = fmt.Sprintf("DRAIN floor (PostgreSQL alone writing the rows a provision changes), medians: one provision per statement %.0f provisions/s, "+
		"PostgreSQL %.2f ms per provision; %d per statement %.0f provisions/s, PostgreSQL %.2f ms; bare asynq %.2f ms per task in all; "+
		"so at most %.2f (one per statement) or %.2f (%d per statement) of bare asynq's rate on these cores, chom %.2f",
		median(floor1), medianOf(floor1, pgCPU), floorBatch, median(floorB), medianOf(floorB, pgCPU), bareCPU,
		ceiling(floor1), ceiling(floorB), floorBatch, mc/mb)
	t.Log(summary)
	fmt.Println(summary)

	p := h.chomPass(countN, true)
	per := func(v int64) float64 { return float64(v) / float64(countN) }
	line := fmt.Sprintf("DRAIN per provision (counted pass, n=%d): transactions %.2f (explicit %.2f, autocommit %.2f of which writes %.2f), commits that write %.2f, statements %.2f, rollbacks %.2f",
		countN, per(p.counts.Transactions), per(p.counts.Explicit), per(p.counts.Autocommit), per(p.counts.AutocommitWrites),
		per(p.counts.Commits()), per(p.counts.Statements), per(p.counts.Rollbacks))
	t.Log(line)
	fmt.Println(line)
	var kinds []string
	for k, v := range p.counts.Wait {
		kinds = append(kinds, fmt.Sprintf("%s %.2fms", k, float64(v)/1e6/float64(countN)))
	}
	slices.Sort(kinds)
	line = fmt.Sprintf("DRAIN per provision (counted pass): time waiting for the database by statement: %s; the pass drained at %.0f ops/s",
		strings.Join(kinds, ", "), p.rate())
	t.Log(line)
	fmt.Println(line)
	if p.counts.Transactions == 0 {
		t.Error("the counted pass counted no transaction: the counter is not attached")
	}
}

type harness struct {
	t   *testing.T
	bin string
}

// workerEnv is the environment of a worker process: production settings but
// the log level, and per-server and per-tenant limits that never bind (they
// defer, not fail, and the figure wanted is the workers' pace, not the
// limits'; their Redis round trips still happen).
func (h *harness) workerEnv(dsn, redisURL, root string) []string {
	env := []string{
		"CHOM_DATABASE_URL=" + dsn, "CHOM_REDIS_URL=" + redisURL, "CHOM_LOCAL_ROOT=" + root,
		"CHOM_LOG_LEVEL=warn", "CHOM_VPS_MAX_JOBS=100000", "CHOM_TENANT_MAX_JOBS=100000",
	}
	for _, kv := range os.Environ() {
		// Everything else of the test's environment but CHOM_* settings,
		// which the worker must take from the list above or the defaults.
		if len(kv) < 5 || kv[:5] != "CHOM_" {
			env = append(env, kv)
		}
	}
	for _, name := range []string{EnvProfile, EnvTrace} {
		if dir := os.Getenv(name); dir != "" {
			env = append(env, name+"="+dir)
		}
	}
	return env
}

// proc is a running worker process.
type proc struct {
	role string
	cmd  *exec.Cmd
	out  string
	done chan error
}

func (h *harness) start(role string, env []string, count bool) *proc {
	h.t.Helper()
	out := filepath.Join(h.t.TempDir(), "report.json")
	cmd := exec.Command(h.bin, "-test.run=^$")
	cmd.Env = append(env, envRole+"="+role, envOut+"="+out)
	if count {
		cmd.Env = append(cmd.Env, envCount+"=1", EnvProfile+"=", EnvTrace+"=") // timed passes only
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	p := &proc{role: role, cmd: cmd, out: out, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	h.t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// stop ends the process with SIGTERM and returns its report.
func (p *proc) stop(t *testing.T) workerReport {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("%s worker: %v", p.role, err)
		}
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Fatal("worker did not stop within 60s of SIGTERM")
	}
	b, err := os.ReadFile(p.out)
	if err != nil {
		t.Fatal(err)
	}
	var r workerReport
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// release starts two workers of role on a paused queue, waits until both
// have registered with Redis, and unpauses the queue: the returned time is
// the start of the drain, and the sample the machine's CPU time at it.
func (h *harness) release(role string, env []string, rdb redis.UniversalClient, count bool) ([]*proc, time.Time, CPUSample) {
	h.t.Helper()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	procs := []*proc{h.start(role, env, count), h.start(role, env, count)}
	if !waitFor(60*time.Second, func() bool {
		s, err := insp.Servers()
		return err == nil && len(s) == len(procs)
	}) {
		h.t.Fatalf("%s workers did not register with Redis within 60s", role)
	}
	cpu, err := SampleCPU()
	if err != nil {
		h.t.Fatal(err)
	}
	start := time.Now()
	if err := insp.UnpauseQueue(queue.QueueDefault); err != nil {
		h.t.Fatal(err)
	}
	return procs, start, cpu
}

// cpuSince is the CPU time the machine spent since before, split into the
// worker processes procs, PostgreSQL, Redis, this harness and the rest;
// taken before the workers stop, so their servers' backends still run.
func (h *harness) cpuSince(before CPUSample, procs []*proc) CPUSplit {
	h.t.Helper()
	now, err := SampleCPU()
	if err != nil {
		h.t.Fatal(err)
	}
	workerPIDs := map[int]bool{}
	for _, p := range procs {
		workerPIDs[p.cmd.Process.Pid] = true
	}
	self := os.Getpid()
	return now.Split(before, func(pid int, name string) string {
		switch {
		case workerPIDs[pid]:
			return "workers"
		case pid == self:
			return "harness"
		case name == "postgres":
			return "postgres"
		case name == "redis-server":
			return "redis"
		default:
			return "other"
		}
	})
}

// cpuPerOp formats a pass's CPU split as milliseconds per operation: the
// total, then each group, the largest first.
func cpuPerOp(c CPUSplit, n int) string {
	keys := slices.Collect(maps.Keys(c))
	slices.SortFunc(keys, func(a, b string) int { return cmp.Compare(c[b], c[a]) })
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s:%.2f", k, c[k]*1000/float64(n)))
	}
	return fmt.Sprintf("%.2f(%s)", c.Total()*1000/float64(n), strings.Join(parts, ","))
}

// queueLeft is how many tasks of the default queue are not finished: pending,
// active, scheduled or waiting for a retry (asynq's keys, read directly: the
// inspector's queue info samples memory and costs more than the wait).
func queueLeft(ctx context.Context, rdb redis.UniversalClient) (int64, error) {
	pipe := rdb.Pipeline()
	k := "asynq:{" + queue.QueueDefault + "}:"
	cmds := []interface{ Val() int64 }{
		pipe.LLen(ctx, k+"pending"), pipe.LLen(ctx, k+"active"), pipe.ZCard(ctx, k+"scheduled"), pipe.ZCard(ctx, k+"retry"),
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return 0, err
	}
	var sum int64
	for _, c := range cmds {
		sum += c.Val()
	}
	return sum, nil
}

// setup is a fresh PostgreSQL schema and Redis database with the queue
// paused, and an SQL handle and store on them.
func (h *harness) setup() (dsn string, db *bun.DB, store *models.Store, rdb redis.UniversalClient, redisURL string) {
	h.t.Helper()
	ctx := h.t.Context()
	dsn = testenv.PostgresDSN(h.t)
	db, err := models.Open(ctx, dsn, models.PoolConfig{MaxOpenConns: 8})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = db.Close() })
	if _, err := models.MigrateUp(ctx, db); err != nil {
		h.t.Fatal(err)
	}
	if store, err = models.New(models.Config{DB: db}); err != nil {
		h.t.Fatal(err)
	}
	r := testenv.Redis(h.t)
	rdb = r.Client(h.t)
	if err := asynq.NewInspectorFromRedisClient(rdb).PauseQueue(queue.QueueDefault); err != nil {
		h.t.Fatal(err)
	}
	return dsn, db, store, rdb, r.URL
}

// pollEvery is how often the harness looks whether a drain is over.
const pollEvery = 100 * time.Millisecond

const (
	tenants = 8
	servers = 20
)

// chomPass drains n site provisions with two chom workers and checks the
// ledger; with count, the workers count their transactions.
func (h *harness) chomPass(n int, count bool) pass {
	t := h.t
	ctx := t.Context()
	dsn, db, store, rdb, redisURL := h.setup()
	tenantIDs, _ := h.seed(ctx, store, n)
	ops := h.accept(ctx, store, rdb, tenantIDs, n)

	env := h.workerEnv(dsn, redisURL, t.TempDir())
	before := commandStats(t, rdb)
	procs, start, cpu0 := h.release("chom", env, rdb, count)
	if !waitFor(10*time.Minute, func() bool {
		var left int
		err := db.NewSelect().Model((*models.Operation)(nil)).Where("status IN (?, ?)", models.OpPending, models.OpRunning).
			ColumnExpr("count(*)").Scan(ctx, &left)
		return err == nil && left == 0
	}) {
		t.Fatalf("chom workers did not finish %d operations within 10 minutes", n)
	}
	var last time.Time
	if err := db.NewSelect().Model((*models.Operation)(nil)).ColumnExpr("max(finished_at)").Scan(ctx, &last); err != nil {
		t.Fatal(err)
	}
	p := pass{kind: "chom", n: n, elapsed: last.Sub(start), redis: diffStats(before, commandStats(t, rdb)), cpu: h.cpuSince(cpu0, procs)}
	for _, pr := range procs {
		r := pr.stop(t)
		p.reported += r.Processed
		p.counts = addCounts(p.counts, r.Counts)
	}
	h.checkLedger(ctx, db, rdb, ops, p)
	return p
}

// accept records n site creations spread over the tenants, as the ingress
// does (SiteAcceptor, then one enqueue per operation), and returns the
// operation IDs.
func (h *harness) accept(ctx context.Context, store *models.Store, rdb redis.UniversalClient, tenantIDs []string, n int) []string {
	t := h.t
	acc, err := models.NewSiteAcceptor(models.SiteAcceptorConfig{Store: store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	enq := queue.NewEnqueuer(rdb)
	ids := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	for range 64 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				tenant := tenantIDs[i%len(tenantIDs)]
				a, err := acc.CreateSite(ctx, models.CreateSiteParams{
					Accept: models.Accept{TenantID: tenant, Actor: "drainbench", RequestID: fmt.Sprintf("req-%d", i)},
					Domain: fmt.Sprintf("s%d.drain.example", i), SiteType: "php", PHPVersion: "8.3",
				})
				if err == nil && a.Held {
					err = fmt.Errorf("site %d held for domain verification", i)
				}
				if err == nil {
					err = enq.EnqueueOperation(ctx, a.Operation)
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
				ids[i] = a.Operation.ID
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("accept: %v", err)
	default:
	}
	return ids
}

// checkLedger checks what a chom pass must leave: every operation succeeded
// with progress 100, every site active on a server with its document root,
// the servers' site counts equal to the sites placed, one site.provisioned.v1
// outbox row per operation and no other, and no task left unfinished,
// retried or archived.
func (h *harness) checkLedger(ctx context.Context, db *bun.DB, rdb redis.UniversalClient, ops []string, p pass) {
	t := h.t
	n := len(ops)
	count := func(q *bun.SelectQuery) int {
		t.Helper()
		c, err := q.Count(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return int(c)
	}
	if got := count(db.NewSelect().Model((*models.Operation)(nil)).Where("status = ? AND progress = 100", models.OpSucceeded).
		Where("op_type = ?", models.OpTypeSiteProvision)); got != n {
		t.Errorf("ledger: %d provisions succeeded with progress 100, want %d", got, n)
	}
	if got := count(db.NewSelect().Model((*models.Site)(nil)).Where("status = ? AND vps_id IS NOT NULL AND document_root <> '' AND operation_id IS NULL",
		models.SiteStatusActive)); got != n {
		t.Errorf("ledger: %d sites active and placed, want %d", got, n)
	}
	var placed int
	if err := db.NewSelect().Model((*models.VPSServer)(nil)).ColumnExpr("coalesce(sum(site_count), 0)").Scan(ctx, &placed); err != nil {
		t.Fatal(err)
	}
	if placed != n {
		t.Errorf("ledger: servers count %d sites, want %d", placed, n)
	}
	var rows []models.OutboxEvent
	if err := db.NewSelect().Model(&rows).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	perOp := map[string]int{}
	for _, r := range rows {
		if r.Type != events.TypeSiteProvisioned {
			t.Errorf("ledger: outbox row of type %s, want only %s", r.Type, events.TypeSiteProvisioned)
			continue
		}
		perOp[r.EventID]++
	}
	for _, id := range ops {
		if c := perOp[events.StableID(events.TypeSiteProvisioned, id)]; c != 1 {
			t.Errorf("ledger: operation %s has %d site.provisioned.v1 rows, want 1", id, c)
			break
		}
	}
	if len(rows) != n {
		t.Errorf("ledger: %d outbox rows, want %d", len(rows), n)
	}
	if left, err := queueLeft(ctx, rdb); err != nil || left != 0 {
		t.Errorf("ledger: %d tasks left in the queue (%v)", left, err)
	}
	if a, err := rdb.ZCard(ctx, "asynq:{"+queue.QueueDefault+"}:archived").Result(); err != nil || a != 0 {
		t.Errorf("ledger: %d tasks archived (%v)", a, err)
	}
	if p.reported < int64(n) {
		t.Errorf("ledger: the drivers ran %d provisions, want at least %d", p.reported, n)
	}
}

// barePass drains n no-op tasks with two bare asynq workers: each task has
// the payload, options and queue of a site:provision task.
func (h *harness) barePass(n int) pass {
	t := h.t
	ctx := t.Context()
	dsn, _, _, rdb, redisURL := h.setup()
	client := asynq.NewClientFromRedisClient(rdb)
	spec := queue.TaskSpec{}
	if _, s, err := queue.SpecFor(models.OpTypeSiteProvision); err == nil {
		spec = s
	} else {
		t.Fatal(err)
	}
	tenant := models.NewID(models.PrefixTenant)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 64 {
		wg.Go(func() {
			for int(next.Add(1)) <= n {
				id := models.NewID(models.PrefixOperation)
				payload, err := json.Marshal(queue.OperationPayload{OperationID: id, TenantID: tenant})
				if err == nil {
					_, err = client.EnqueueContext(ctx, asynq.NewTask(taskNoop, payload, asynq.TaskID(id), asynq.Queue(spec.Queue),
						asynq.MaxRetry(spec.MaxRetry), asynq.Timeout(spec.Timeout), asynq.Retention(queue.Retention)))
				}
				if err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	env := h.workerEnv(dsn, redisURL, t.TempDir())
	before := commandStats(t, rdb)
	procs, start, cpu0 := h.release("bare", env, rdb, false)
	if !waitFor(10*time.Minute, func() bool {
		left, err := queueLeft(ctx, rdb)
		return err == nil && left == 0
	}) {
		t.Fatalf("bare workers did not finish %d tasks within 10 minutes", n)
	}
	p := pass{kind: "bare", n: n, redis: diffStats(before, commandStats(t, rdb)), cpu: h.cpuSince(cpu0, procs)}
	var last int64
	for _, pr := range procs {
		r := pr.stop(t)
		p.reported += r.Processed
		last = max(last, r.LastDoneNs)
	}
	p.elapsed = time.Unix(0, last).Sub(start)
	if p.reported != int64(n) {
		t.Errorf("bare workers completed %d tasks, want %d", p.reported, n)
	}
	return p
}

// commandStats is how many times the Redis server ran each command so far
// (INFO commandstats: server-wide, so the harness's own few polls are in it).
func commandStats(t *testing.T, rdb redis.UniversalClient) map[string]int64 {
	t.Helper()
	info, err := rdb.Info(t.Context(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for line := range strings.Lines(info) {
		// cmdstat_evalsha:calls=12,usec=...
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
		if v, err := strconv.ParseInt(calls, 10, 64); err == nil {
			out[strings.TrimPrefix(name, "cmdstat_")] = v
		}
	}
	return out
}

func diffStats(before, after map[string]int64) map[string]int64 {
	d := map[string]int64{}
	for k, v := range after {
		if v-before[k] > 0 {
			d[k] = v - before[k]
		}
	}
	return d
}

// perOp formats commands per operation, the most frequent first, those
// below 0.05 per operation left out.
func perOp(m map[string]int64, n int) string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int { return cmp.Compare(m[b], m[a]) })
	var parts []string
	var total int64
	for _, k := range keys {
		total += m[k]
		if v := float64(m[k]) / float64(n); v >= 0.05 {
			parts = append(parts, fmt.Sprintf("%s:%.2f", k, v))
		}
	}
	return fmt.Sprintf("%.2f(%s)", float64(total)/float64(n), strings.Join(parts, ","))
}

func addCounts(a, b TxCounts) TxCounts {
	wait := maps.Clone(a.Wait)
	if wait == nil {
		wait = map[string]int64{}
	}
	for k, v := range b.Wait {
		wait[k] += v
	}
	return TxCounts{Transactions: a.Transactions + b.Transactions, Explicit: a.Explicit + b.Explicit,
		Autocommit: a.Autocommit + b.Autocommit, AutocommitWrites: a.AutocommitWrites + b.AutocommitWrites,
		Statements: a.Statements + b.Statements, Rollbacks: a.Rollbacks + b.Rollbacks, Wait: wait}
}

// median is the median rate of ps.
func median(ps []pass) float64 { return medianOf(ps, pass.rate) }

// medianOf is the median of f over ps.
func medianOf(ps []pass, f func(pass) float64) float64 {
	r := make([]float64, len(ps))
	for i, p := range ps {
		r[i] = f(p)
	}
	slices.SortFunc(r, cmp.Compare)
	if len(r)%2 == 1 {
		return r[len(r)/2]
	}
	return (r[len(r)/2-1] + r[len(r)/2]) / 2
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return v
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil || len(b) < 14 {
		return "?"
	}
	var a, b5, c float64
	if _, err := fmt.Sscanf(string(b), "%f %f %f", &a, &b5, &c); err != nil {
		return "?"
	}
	return fmt.Sprintf("%.2f/%.2f/%.2f", a, b5, c)
}

// waitFor polls cond every pollEvery until it holds or timeout passes. The
// end of a drain is read afterwards from what the workers recorded, so the
// poll only finds that it ended; it is slow enough to cost the servers
// nothing measurable.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollEvery)
	}
}
