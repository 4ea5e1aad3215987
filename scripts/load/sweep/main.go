// Command sweep measures the health sweep end to end: for each fleet size N it
// starts a simulated fleet of N SSH servers (internal/fleetsim, in a process
// of its own so its CPU is measured apart), registers them as VPS rows with
// their host keys in a fresh PostgreSQL database, runs two `chom worker`
// processes (the binary built with -tags pprof), enqueues the sweep's tick as
// the scheduler does, and measures from the tick to the last check recorded
// (the database polled every 250 ms until the period has N checks). Each
// sweep after the first is warm: the workers' pooled SSH connections are
// reused (when the check lands on the worker that holds one).
//
// It prints, per sweep: the sweep time and checks/s; CPU per check of the
// workers (from /proc), split by where it goes (the workers' CPU profiles
// over the sweep, by call stack: SSH handshake, SSH transport crypto, the
// probe command and HTTP GET, the handler, asynq/Redis client, database
// client, GC and runtime), of the PostgreSQL and Redis servers and of the
// simulated fleet; the fleet's share of the 2 cores; and, after the cold
// sweep, the workers' memory per pooled connection (RSS and Go heap growth
// over the connections dialled). It checks the ledger of every period: each
// server exactly one check.
//
//	go run ./scripts/load/sweep -chom /tmp/chom -db postgres://… -redis redis://…/0 -n 1000,10000
//
// scripts/load/sweep.sh builds the binary, starts the servers and runs it.
// With -serve-fleet N it is instead the fleet process (internal use).
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/fleetsim"
	"github.com/chomhq/chom/internal/fleetsim/e2e"
	"github.com/chomhq/chom/models"
)

func main() {
	serve := flag.Int("serve-fleet", 0, "internal: serve a fleet of this size (the fleet process)")
	out := flag.String("fleet-out", "", "internal: where the fleet process writes its servers")
	first := flag.Int("fleet-first", 0, "internal: the fleet process's first server index")
	clientKey := flag.String("fleet-key", "", "internal: the client key file the fleet process accepts")
	chom := flag.String("chom", "", "chom binary built with -tags pprof")
	dbURL := flag.String("db", os.Getenv("CHOM_TEST_DATABASE_URL"), "PostgreSQL admin URL (a database per size is created and dropped)")
	redisURL := flag.String("redis", os.Getenv("CHOM_TEST_REDIS_URL"), "Redis URL (an empty logical database is used and flushed)")
	sizes := flag.String("n", "1000,10000", "comma-separated fleet sizes")
	sweeps := flag.Int("sweeps", 2, "sweeps per size: the first cold, the others warm")
	nWorkers := flag.Int("workers", 2, "chom worker processes")
	profDir := flag.String("profile-dir", "", "keep the workers' CPU profiles here")
	perFleet := flag.Int("per-fleet", defaultPerFleet, "servers per fleet process")
	flag.Parse()
	// Interrupted, it still stops the workers and the fleet, drops the
	// database and flushes the Redis database (run's deferred clean-up).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *serve > 0 {
		if err := serveFleet(*serve, *first, *clientKey, *out); err != nil {
			fmt.Fprintln(os.Stderr, "sweep fleet:", err)
			os.Exit(1)
		}
		return
	}
	r := &runner{perFleet: *perFleet, chom: *chom, adminDB: *dbURL, redisURL: *redisURL, sweeps: *sweeps, workers: *nWorkers, profDir: *profDir}
	for s := range strings.SplitSeq(*sizes, ",") {
		n, err := strconv.Atoi(strings.ReplaceAll(strings.TrimSpace(s), "_", ""))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "sweep: size %q: want a positive integer\n", s)
			os.Exit(2)
		}
		if err := r.run(ctx, n); err != nil {
			fmt.Fprintln(os.Stderr, "sweep:", err)
			stop()
			os.Exit(1)
		}
	}
}

// fleetInfo is what a fleet process writes to -fleet-out.
type fleetInfo struct {
	Servers  []fleetsim.Server `json:"servers"`
	HTTPPort int               `json:"http_port"`
}

// defaultPerFleet is the most servers one fleet process serves: each worker
// may hold a connection to each server, and a process here may hold 20,000
// descriptors (the hard limit, which root cannot raise in a container).
const defaultPerFleet = 9000

// fleetStats is the fleet process's answer to "stats".
type fleetStats struct {
	fleetsim.Stats
	CPU time.Duration `json:"cpu_ns"`
}

// serveFleet is the fleet process: it starts the fleet, writes its servers
// to out, prints "ready", then answers each "stats" line on stdin with a
// fleetStats line until stdin ends.
func serveFleet(n, first int, keyFile, out string) error {
	if _, err := fleetsim.RaiseFileLimit(); err != nil {
		return err
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	f, err := fleetsim.Start(fleetsim.Config{Size: n, First: first, ClientKey: key,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := json.Marshal(fleetInfo{Servers: f.Servers, HTTPPort: f.HTTPPort})
	if err != nil {
		return err
	}
	if err := os.WriteFile(out, b, 0o600); err != nil {
		return err
	}
	fmt.Println("ready")
	sc := bufio.NewScanner(os.Stdin)
	enc := json.NewEncoder(os.Stdout)
	for sc.Scan() {
		cpu, err := e2e.ProcCPU(os.Getpid())
		if err != nil {
			return err
		}
		if err := enc.Encode(fleetStats{Stats: f.Stats(), CPU: cpu}); err != nil {
			return err
		}
	}
	return sc.Err()
}

type runner struct {
	perFleet                int
	chom, adminDB, redisURL string
	sweeps, workers         int
	profDir                 string
}

// fleetProc is a running fleet process.
type fleetProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// fleetProcs are the processes serving one fleet.
type fleetProcs []*fleetProc

// stats sums the processes' counts and CPU.
func (fs fleetProcs) stats() (fleetStats, error) {
	var sum fleetStats
	for _, f := range fs {
		s, err := f.stats()
		if err != nil {
			return sum, err
		}
		sum.Handshakes += s.Handshakes
		sum.Sessions += s.Sessions
		sum.CPU += s.CPU
	}
	return sum, nil
}

func (f *fleetProc) stats() (fleetStats, error) {
	var s fleetStats
	if _, err := io.WriteString(f.in, "stats\n"); err != nil {
		return s, err
	}
	line, err := f.out.ReadBytes('\n')
	if err != nil {
		return s, fmt.Errorf("fleet stats: %w", err)
	}
	return s, json.Unmarshal(line, &s)
}

func (r *runner) run(ctx context.Context, n int) error {
	tmp, err := os.MkdirTemp("", "chom-sweep-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if _, err := fleetsim.RaiseFileLimit(); err != nil { // the workers inherit it
		return err
	}

	// The fleet, in processes of its own: r.perFleet servers each, sharing
	// one client key; the first one's HTTP listener answers for every
	// address (HTTP connections are not kept open, so it needs no more
	// descriptors for it).
	start := time.Now()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	keyPEM, err := fleetsim.NewClientKey()
	if err != nil {
		return err
	}
	keyFile := filepath.Join(tmp, "id_ed25519")
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	var (
		fp      fleetProcs
		servers []fleetsim.Server
		info    fleetInfo
	)
	defer func() {
		for _, f := range fp {
			_ = f.in.Close()
			_ = f.cmd.Wait()
		}
	}()
	for first := 0; first < n; first += r.perFleet {
		size := min(r.perFleet, n-first)
		infoPath := filepath.Join(tmp, fmt.Sprintf("fleet%d.json", first))
		f := &fleetProc{cmd: exec.Command(self, "-serve-fleet", strconv.Itoa(size), "-fleet-first", strconv.Itoa(first),
			"-fleet-key", keyFile, "-fleet-out", infoPath)}
		f.cmd.Stderr = os.Stderr
		if f.in, err = f.cmd.StdinPipe(); err != nil {
			return err
		}
		stdout, err := f.cmd.StdoutPipe()
		if err != nil {
			return err
		}
		f.out = bufio.NewReader(stdout)
		if err := f.cmd.Start(); err != nil {
			return err
		}
		fp = append(fp, f)
		if line, err := f.out.ReadString('\n'); err != nil || line != "ready\n" {
			return fmt.Errorf("fleet process: %q, %v", line, err)
		}
		b, err := os.ReadFile(infoPath)
		if err != nil {
			return err
		}
		var fi fleetInfo
		if err := json.Unmarshal(b, &fi); err != nil {
			return err
		}
		if first == 0 {
			info.HTTPPort = fi.HTTPPort
		}
		servers = append(servers, fi.Servers...)
	}
	info.Servers = servers

	// A fresh database with the fleet registered.
	dsn, drop, err := createDatabase(ctx, r.adminDB)
	if err != nil {
		return err
	}
	defer drop()
	db, err := models.Open(ctx, dsn, models.PoolConfig{MaxOpenConns: 4})
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := models.MigrateUp(ctx, db); err != nil {
		return err
	}
	if err := e2e.Register(ctx, db, info.Servers, time.Now().Add(-time.Minute)); err != nil {
		return err
	}
	pg, err := postgresServer(ctx, db)
	if err != nil {
		return err
	}

	// An empty Redis database, flushed at the end.
	rurl, rc, err := emptyRedisDB(ctx, r.redisURL)
	if err != nil {
		return err
	}
	defer func() { _ = rc.FlushDB(context.Background()).Err(); _ = rc.Close() }()
	fmt.Printf("== N=%d: fleet on 127.1.0.1.. (%d processes) started and registered in %.1fs; %d worker processes\n",
		n, len(fp), time.Since(start).Seconds(), r.workers)

	// The workers. Every other CHOM_* setting in this process's environment
	// (CHOM_WORKER_CONCURRENCY, CHOM_DB_MAX_CONNS, …) reaches them as is.
	var env []string
	if os.Getenv("CHOM_SSH_MAX_CONNS") == "" {
		// Each worker may check every server, within the descriptors it
		// may hold (the hard limit here is 20,000).
		env = append(env, "CHOM_SSH_MAX_CONNS="+strconv.Itoa(min(max(n, 10000), 18000)))
	}
	cfg := e2e.WorkerConfig{Chom: r.chom, DatabaseURL: dsn, RedisURL: rurl, KeyFile: keyFile, HTTPPort: info.HTTPPort,
		LocalRoot: filepath.Join(tmp, "vps"), Env: env, Pprof: true, Stderr: os.Stderr}
	var procs []*e2e.Worker
	defer func() {
		for _, w := range procs {
			w.Stop()
		}
	}()
	for range r.workers {
		w, err := e2e.StartWorker(ctx, cfg)
		if err != nil {
			return err
		}
		procs = append(procs, w)
	}
	opt, err := asynq.ParseRedisURI(rurl)
	if err != nil {
		return err
	}
	client := asynq.NewClient(opt)
	defer client.Close()

	period := time.Now().Truncate(time.Second)
	var prevDur time.Duration
	for sweep := 1; sweep <= r.sweeps; sweep++ {
		if sweep > 1 {
			next := time.Now().Truncate(time.Second).Add(time.Second) // after the previous period
			time.Sleep(time.Until(next))
			period = next
		}
		// The profile covers the expected sweep: the previous one's time, or
		// for the cold sweep a guess of 150 checks/s; its shares are what
		// is reported, so a window a little off costs nothing.
		profSecs := int(math.Ceil(prevDur.Seconds()))
		if sweep == 1 {
			profSecs = min(max(n/150, 2), 120)
		}
		m, err := r.measure(ctx, sweep, n, period, profSecs, procs, fp, pg, rc, db, client)
		if err != nil {
			return err
		}
		prevDur = m
	}
	return nil
}

// measure runs one sweep and prints its figures; it returns the sweep time.
func (r *runner) measure(ctx context.Context, sweep, n int, period time.Time, profSecs int, procs []*e2e.Worker,
	fp fleetProcs, pg *pgServer, rc *redis.Client, db *bun.DB, client *asynq.Client) (time.Duration, error) {
	type snap struct {
		workers          []time.Duration
		rss, heap        []int64
		fleet            fleetStats
		pg, redis, total time.Duration
	}
	take := func() (snap, error) {
		var s snap
		for _, w := range procs {
			cpu, err := e2e.ProcCPU(w.Cmd.Process.Pid)
			if err != nil {
				return s, err
			}
			rss, err := e2e.ProcRSS(w.Cmd.Process.Pid)
			if err != nil {
				return s, err
			}
			heap, err := heapInuse(ctx, w.PprofAddr)
			if err != nil {
				return s, err
			}
			s.workers, s.rss, s.heap = append(s.workers, cpu), append(s.rss, rss), append(s.heap, heap)
		}
		var err error
		if s.fleet, err = fp.stats(); err != nil {
			return s, err
		}
		if s.pg, err = pg.cpu(); err != nil {
			return s, err
		}
		if s.redis, err = redisCPU(ctx, rc); err != nil {
			return s, err
		}
		s.total, err = systemCPU()
		return s, err
	}
	before, err := take()
	if err != nil {
		return 0, err
	}
	// CPU profiles of every worker over the sweep, in the background.
	profiles := make([]string, len(procs))
	var wg sync.WaitGroup
	for i, w := range procs {
		path := filepath.Join(os.TempDir(), fmt.Sprintf("chom-sweep-%d-%d-w%d.pprof", n, sweep, i))
		if r.profDir != "" {
			path = filepath.Join(r.profDir, fmt.Sprintf("sweep-n%d-s%d-worker%d.pprof", n, sweep, i))
		}
		profiles[i] = path
		wg.Go(func() {
			if err := fetch(ctx, "http://"+w.PprofAddr+"/debug/pprof/profile?seconds="+strconv.Itoa(profSecs), path); err != nil {
				fmt.Fprintln(os.Stderr, "sweep: profile:", err)
			}
		})
	}
	tick := time.Now()
	if err := e2e.EnqueueTick(ctx, client, period, time.Minute); err != nil {
		return 0, err
	}
	alive := func() error {
		for i, w := range procs {
			if w.Exited() {
				return fmt.Errorf("worker %d exited: %v", i, w.Cmd.ProcessState)
			}
		}
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	prog, err := e2e.WaitChecks(wctx, db, period, n, alive)
	cancel()
	if err != nil {
		return 0, err
	}
	wall := time.Since(tick)
	after, err := take()
	if err != nil {
		return 0, err
	}
	dur := prog.Last.Sub(tick)
	ledger, err := e2e.ReadLedger(ctx, db, period)
	if err != nil {
		return 0, err
	}
	load, _ := os.ReadFile("/proc/loadavg")

	var wcpu time.Duration
	for i := range procs {
		wcpu += after.workers[i] - before.workers[i]
	}
	perCheck := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
	fleetCPU := after.fleet.CPU - before.fleet.CPU
	name := "warm"
	if sweep == 1 {
		name = "cold"
	}
	fmt.Printf("SWEEP n=%d sweep=%d (%s) time=%.2fs checks/s=%.0f handshakes=%d commands=%d ledger: %d checks of %d servers, max %d per server, %d events\n",
		n, sweep, name, dur.Seconds(), float64(n)/dur.Seconds(), after.fleet.Handshakes-before.fleet.Handshakes,
		after.fleet.Sessions-before.fleet.Sessions, ledger.Checks, ledger.Servers, ledger.MaxPerServer, ledger.Events)
	fmt.Printf("  cpu ms/check: workers %.3f, postgres %.3f, redis %.3f, fleet %.3f (fleet: %.0f%% of the 2 cores over %.1fs); machine busy %.0f%% of 2 cores; load %s",
		perCheck(wcpu), perCheck(after.pg-before.pg), perCheck(after.redis-before.redis), perCheck(fleetCPU),
		100*fleetCPU.Seconds()/wall.Seconds()/2, wall.Seconds(), 100*(after.total-before.total).Seconds()/wall.Seconds()/2, load)
	if sweep == 1 && r.profDir != "" {
		path := filepath.Join(r.profDir, fmt.Sprintf("sweep-n%d-worker0-heap.pprof", n))
		if err := fetch(ctx, "http://"+procs[0].PprofAddr+"/debug/pprof/heap", path); err != nil {
			fmt.Fprintln(os.Stderr, "sweep: heap profile:", err)
		}
	}
	if sweep == 1 {
		var rss, heap int64
		for i := range procs {
			rss += after.rss[i] - before.rss[i]
			heap += after.heap[i] - before.heap[i]
		}
		conns := int64(after.fleet.Handshakes - before.fleet.Handshakes)
		fmt.Printf("  memory: workers RSS %+.1f MiB, Go heap in use %+.1f MiB over %d pooled connections: %.1f KiB RSS, %.1f KiB heap per connection\n",
			float64(rss)/(1<<20), float64(heap)/(1<<20), conns, float64(rss)/1024/float64(conns), float64(heap)/1024/float64(conns))
	}
	wg.Wait()
	shares, total, err := splitProfiles(profiles)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sweep: profiles:", err)
	} else {
		var parts []string
		for _, c := range categories {
			if d := shares[c.name]; d > 0 {
				f := d.Seconds() / total.Seconds()
				parts = append(parts, fmt.Sprintf("%s %.0f%% (%.3f)", c.name, 100*f, f*perCheck(wcpu)))
			}
		}
		fmt.Printf("  workers' cpu by call stack (%ds profile, share and ms/check): %s\n", profSecs, strings.Join(parts, ", "))
	}
	if r.profDir == "" {
		for _, p := range profiles {
			_ = os.Remove(p)
		}
	}
	if ledger.Checks != n || ledger.Servers != n || ledger.MaxPerServer != 1 {
		return 0, fmt.Errorf("ledger of sweep %d: %d checks of %d servers (max %d per server), want one check of each of %d",
			sweep, ledger.Checks, ledger.Servers, ledger.MaxPerServer, n)
	}
	return dur, nil
}

// categories attribute a CPU sample to where it goes, by the first rule (in
// this order) that a frame of its stack matches.
var categories = []struct {
	name string
	re   *regexp.Regexp
}{
	{"ssh handshake", regexp.MustCompile(`ssh\.NewClientConn|clientHandshake|enterKeyExchange|\(\*handshakeTransport\)\.(client|server)|kexAlgorithm|curve25519|ed25519|clientAuthenticate|\(\*connection\)\.clientAuth|drivers/ssh\.connect`)},
	{"database", regexp.MustCompile(`uptrace/bun|jackc/pgx|database/sql|chom/models\.`)},
	{"ssh transport crypto", regexp.MustCompile(`^crypto/|x/crypto/(chacha20|poly1305|internal)|aes|gcm|sha256|hmac`)},
	{"probe command + http get", regexp.MustCompile(`chom/drivers/ssh\.|x/crypto/ssh\.|net/http\.`)},
	{"handler (classify, events, logs)", regexp.MustCompile(`chom/jobs\.|chom/events\.|log/slog`)},
	{"asynq + redis client", regexp.MustCompile(`hibiken/asynq|redis/go-redis`)},
	{"gc", regexp.MustCompile(`runtime\.gcBgMarkWorker|runtime\.gcDrain|runtime\.bgsweep|runtime\.bgscavenge`)},
	{"runtime (scheduler, netpoll, syscalls)", regexp.MustCompile(`^runtime\.|^syscall\.|^internal/poll`)},
	{"other", regexp.MustCompile(`.`)},
}

// splitProfiles reads CPU profiles with `go tool pprof -traces` and sums
// their samples by category.
func splitProfiles(paths []string) (map[string]time.Duration, time.Duration, error) {
	out := map[string]time.Duration{}
	var total time.Duration
	for _, p := range paths {
		b, err := exec.Command("go", "tool", "pprof", "-traces", p).Output()
		if err != nil {
			return nil, 0, fmt.Errorf("go tool pprof -traces %s: %w", p, err)
		}
		for block := range strings.SplitSeq(string(b), "-----------+-------------------------------------------------------") {
			var v time.Duration
			var frames []string
			for line := range strings.Lines(block) {
				f := strings.Fields(line)
				if len(f) == 0 {
					continue
				}
				if v == 0 && len(f) >= 2 {
					if d, err := time.ParseDuration(f[0]); err == nil {
						v, frames = d, append(frames, f[1])
						continue
					}
				}
				if v > 0 {
					frames = append(frames, f[0])
				}
			}
			if v == 0 {
				continue
			}
			total += v
			cat := "other"
		match:
			for _, c := range categories {
				for _, fr := range frames {
					if c.re.MatchString(fr) {
						cat = c.name
						break match
					}
				}
			}
			out[cat] += v
		}
	}
	if total == 0 {
		return nil, 0, errors.New("no samples")
	}
	return out, total, nil
}

func fetch(ctx context.Context, u, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// heapInuse reads the Go heap in use of a worker from its pprof heap page.
func heapInuse(ctx context.Context, addr string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/debug/pprof/heap?debug=1", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapInuse = "); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("heap profile: no HeapInuse")
}

// systemCPU is the CPU time the whole machine has spent busy (every CPU).
func systemCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy int64
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, err
		}
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / 100, nil
}

// pgServer measures the CPU of the PostgreSQL server: the postmaster and its
// children (backends, writers), living and exited.
type pgServer struct{ postmaster int }

func postgresServer(ctx context.Context, db *bun.DB) (*pgServer, error) {
	var dir string
	if err := db.QueryRowContext(ctx, "SHOW data_directory").Scan(&dir); err != nil {
		return nil, fmt.Errorf("postgres data directory: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return nil, fmt.Errorf("postgres server pid (the server must run on this machine): %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return nil, fmt.Errorf("postmaster.pid: %w", err)
	}
	return &pgServer{postmaster: pid}, nil
}

func (p *pgServer) cpu() (time.Duration, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var total time.Duration
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		ppid, _ := strconv.Atoi(f[1])
		if pid != p.postmaster && ppid != p.postmaster {
			continue
		}
		var ticks int64
		idx := []int{11, 12}
		if pid == p.postmaster {
			idx = append(idx, 13, 14) // + exited children
		}
		for _, i := range idx {
			v, _ := strconv.ParseInt(f[i], 10, 64)
			ticks += v
		}
		total += time.Duration(ticks) * time.Second / 100
	}
	return total, nil
}

// redisCPU is the CPU time the Redis server has used (INFO cpu).
func redisCPU(ctx context.Context, rc *redis.Client) (time.Duration, error) {
	info, err := rc.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, err
	}
	var total float64
	for line := range strings.Lines(info) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, err
			}
			total += f
		}
	}
	return time.Duration(total * float64(time.Second)), nil
}

// createDatabase creates a fresh database on the server of admin and returns
// its URL and a function that drops it.
func createDatabase(ctx context.Context, admin string) (string, func(), error) {
	u, err := url.Parse(admin)
	if err != nil {
		return "", nil, err
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	name := "chom_sweep_" + hex.EncodeToString(rnd[:])
	adb, err := sql.Open("pgx", admin)
	if err != nil {
		return "", nil, err
	}
	if _, err := adb.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		_ = adb.Close()
		return "", nil, fmt.Errorf("create database: %w", err)
	}
	u.Path = "/" + name
	return u.String(), func() {
		if _, err := adb.ExecContext(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			fmt.Fprintln(os.Stderr, "sweep: drop database:", err)
		}
		_ = adb.Close()
	}, nil
}

// emptyRedisDB takes a logical database of the Redis server of raw the way
// internal/testenv does (the next of 1..1023 from the counter on database
// 0), so tests running against the same server never share it, flushes it
// and returns its URL and a client. (Picking an empty one instead collided
// with a test that took the same number and flushed it mid-sweep.)
func emptyRedisDB(ctx context.Context, raw string) (string, *redis.Client, error) {
	const counterKey, databases = "chom:testenv:next-db", 1024 // as internal/testenv
	opts, err := redis.ParseURL(raw)
	if err != nil {
		return "", nil, err
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", nil, err
	}
	o := *opts
	o.DB = 0
	admin := redis.NewClient(&o)
	n, err := admin.Incr(ctx, counterKey).Result()
	_ = admin.Close()
	if err != nil {
		return "", nil, fmt.Errorf("redis: INCR %s: %w", counterKey, err)
	}
	o.DB = 1 + int(n%(databases-1))
	c := redis.NewClient(&o)
	if err := c.FlushDB(ctx).Err(); err != nil {
		_ = c.Close()
		return "", nil, fmt.Errorf("redis: FLUSHDB %d (the server needs --databases %d): %w", o.DB, databases, err)
	}
	u.Path = "/" + strconv.Itoa(o.DB)
	return u.String(), c, nil
}
