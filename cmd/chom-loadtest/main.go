// Command chom-loadtest runs CHOM's load scenarios (ramp-up, sustained, spike,
// soak, stress) and the accept comparison with the naive baseline, against an
// in-process stack built by the production wiring (internal/stack) on real
// PostgreSQL and Redis, or against a running CHOM (--url). It writes
// result.json, report.md and chart.png. It is its own binary so that the chart
// and load libraries stay out of the production one.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/stack"
	"github.com/chomhq/chom/loadtest"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// loadtestOptions are the flags of `chom-loadtest`.
type loadtestOptions struct {
	scenarios      []loadtest.Scenario
	scale          float64
	out            string
	url, token     string
	allowRemote    bool
	baseline       bool
	acceptUsers    int
	acceptFor      time.Duration
	requestTimeout time.Duration
	opTimeout      time.Duration
	drain          time.Duration
	think          time.Duration
	servers        int
	untilBackups   int
	keep           bool
	marks          string
	accepted       string
	// acceptedTo is the open --accepted file.
	acceptedTo io.Writer
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runLoadtest(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "chom-loadtest:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// errUsage marks a command line that cannot be run; main exits 2 on it.
var errUsage = errors.New("usage error")

// errLoadDone ends the in-process stack once the load function has finished.
var errLoadDone = errors.New("load run finished")

// runLoadtest runs the load scenarios of issue 6 against a running CHOM (--url)
// or against a full stack it starts in-process on real PostgreSQL and Redis,
// then the accept comparison with the naive baseline, and writes result.json,
// report.md and chart.png into --out. It fails when an accepted operation did
// not finish (the ledger), not when a target is missed: the report says that.
func runLoadtest(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	o, err := parseLoadtestFlags(args, stderr)
	if err != nil {
		return err
	}
	c, err := stack.LoadConfig(getenv)
	if err != nil {
		return err
	}
	if getenv("CHOM_LOG_LEVEL") == "" {
		c.LogLevel = slog.LevelWarn // the stack's info lines (one per site) would drown the run
	}
	c.OpsUI = false
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("loadtest: output dir: %w", err)
	}
	logFile, err := os.Create(filepath.Join(o.out, "stack.log"))
	if err != nil {
		return fmt.Errorf("loadtest: stack log: %w", err)
	}
	defer logFile.Close()
	log := stack.NewLogger(logFile, c).With("process", "loadtest")
	if o.accepted != "" {
		f, err := os.Create(o.accepted)
		if err != nil {
			return fmt.Errorf("loadtest: --accepted: %w", err)
		}
		defer f.Close()
		o.acceptedTo = f
	}

	var b [4]byte
	_, _ = rand.Read(b[:])
	runID := hex.EncodeToString(b[:])
	rep := &loadtest.Report{Started: time.Now().UTC(), Scale: o.scale, Machine: loadtest.ThisMachine()}
	fmt.Fprintf(stdout, "chom-loadtest %s: %s at scale %g, output in %s\n", runID, scenarioNames(o.scenarios), o.scale, o.out)

	if o.url != "" {
		err = loadRemote(ctx, o, c, rep, runID, log, stdout, getenv)
	} else {
		err = loadInProcess(ctx, o, c, rep, runID, log, stdout, getenv)
	}
	rep.Finished = time.Now().UTC()
	if o.marks != "" {
		marks, merr := readMarks(o.marks)
		err = errors.Join(err, merr)
		rep.Marks = marks
	}
	if len(rep.Scenarios) > 0 || rep.Accept != nil {
		if werr := rep.WriteFiles(o.out); werr != nil {
			return errors.Join(err, werr)
		}
		fmt.Fprintf(stdout, "\nwrote %s, %s, %s\n", filepath.Join(o.out, "result.json"), filepath.Join(o.out, "report.md"),
			filepath.Join(o.out, "chart.png"))
	}
	if err != nil {
		return err
	}
	for _, s := range rep.Scenarios {
		l := s.Ledger
		fmt.Fprintf(stdout, "ledger %-9s %d accepted, %d finished: %s\n", s.Scenario.Name, l.Accepted, l.Completed,
			map[bool]string{true: "OK", false: "MISMATCH"}[l.OK()])
	}
	if !rep.LedgerOK() {
		return errors.New("loadtest: ledger mismatch: some accepted operations did not finish (see report.md)")
	}
	return nil
}

// readMarks reads the --marks file.
func readMarks(path string) ([]loadtest.Mark, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("loadtest: --marks: %w", err)
	}
	defer f.Close()
	return loadtest.ReadMarks(f)
}

func parseLoadtestFlags(args []string, stderr io.Writer) (loadtestOptions, error) {
	var o loadtestOptions
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: chom-loadtest [flags]\n\nRuns the load scenarios and the accept comparison; see docs/performance.md.\n\nFlags:")
		fs.PrintDefaults()
	}
	scenario := fs.String("scenario", "all", "scenarios to run: all, or names separated by commas (ramp-up, sustained, spike, soak, stress)")
	stages := fs.String("stages", "", "run one custom scenario of these stages instead of --scenario: USERSxDURATION separated by commas (4x90s, or 10x30s,50x1m)")
	fs.StringVar(&o.marks, "marks", "", "a file of fault marks (one JSON object per line: name, from, to) to draw on the chart and list in the report; read when the report is written")
	fs.StringVar(&o.accepted, "accepted", "", "write every operation answered 202 to this file, one JSON object per line (id, type, target_id, domain), as the answers arrive")
	fs.Float64Var(&o.scale, "scale", 1, "multiply every stage duration by this (0.05 for a short run; stages last at least 1s)")
	fs.StringVar(&o.out, "out", "loadtest-out", "directory for result.json, report.md, chart.png and stack.log")
	fs.StringVar(&o.url, "url", "", "load a running CHOM at this base URL (http://127.0.0.1:8080) instead of an in-process stack")
	fs.StringVar(&o.token, "token", "", "API token (read, write) for --url")
	fs.BoolVar(&o.allowRemote, "allow-remote", false, "allow load on addresses that are not loopback")
	fs.BoolVar(&o.baseline, "baseline", true, "after the scenarios, compare CHOM's accept path with the naive baseline handler")
	fs.IntVar(&o.acceptUsers, "accept-users", 200, "users of the accept comparison")
	fs.DurationVar(&o.acceptFor, "accept-duration", 30*time.Second, "length of each accept run, before --scale (at least 3s)")
	fs.DurationVar(&o.requestTimeout, "request-timeout", 10*time.Second, "per-request timeout (a timeout counts as an error)")
	fs.DurationVar(&o.opTimeout, "op-timeout", 60*time.Second, "how long a user waits for one operation")
	fs.DurationVar(&o.drain, "drain", 60*time.Second, "how long unfinished operations get after the users stop")
	fs.DurationVar(&o.think, "think", 0, "pause between two iterations of a user")
	fs.IntVar(&o.untilBackups, "until-backups", 0, "end each scenario once its users have had this many backups accepted (a smoke run that must reach every step of the mix on any machine: give it long stages); 0 runs the stages for their time")
	fs.IntVar(&o.servers, "vps", 4, "local servers registered in the in-process stack")
	fs.BoolVar(&o.keep, "keep", false, "keep the run's schemas and Redis database (in-process stack)")
	if err := fs.Parse(args); err != nil {
		return o, fmt.Errorf("%w: %v", errUsage, err)
	}
	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	var err error
	if *stages != "" {
		sc, err := loadtest.ParseStages(*stages)
		if err != nil {
			errs = append(errs, err)
		}
		o.scenarios = []loadtest.Scenario{sc}
	} else if o.scenarios, err = loadtest.Lookup(*scenario); err != nil {
		errs = append(errs, err)
	}
	if err := loadtest.ValidateScale(o.scale); err != nil {
		errs = append(errs, err)
	}
	if (o.url == "") != (o.token == "") {
		errs = append(errs, errors.New("--url and --token go together"))
	}
	if o.url != "" && !o.allowRemote {
		if err := loadtest.CheckLoopbackURL(o.url); err != nil {
			errs = append(errs, err)
		}
	}
	if o.acceptUsers <= 0 || o.servers <= 0 {
		errs = append(errs, errors.New("--accept-users and --vps must be positive"))
	}
	if o.untilBackups < 0 {
		errs = append(errs, errors.New("--until-backups must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return o, fmt.Errorf("%w: loadtest: %v", errUsage, err)
	}
	return o, nil
}

func scenarioNames(ss []loadtest.Scenario) string {
	names := make([]string, len(ss))
	for i, s := range ss {
		names[i] = s.Name
	}
	return strings.Join(names, ", ")
}

// acceptDuration is the scaled length of each accept run, at least 3s.
func (o loadtestOptions) acceptDuration() time.Duration {
	return max(time.Duration(float64(o.acceptFor)*o.scale), 3*time.Second)
}

func (o loadtestOptions) runnerConfig(base string, tokens []string, runID string, log *slog.Logger, progress io.Writer) loadtest.Config {
	return loadtest.Config{BaseURL: base, Tokens: tokens, AllowRemote: o.allowRemote, RequestTimeout: o.requestTimeout,
		OpTimeout: o.opTimeout, Drain: o.drain, Think: o.think, UntilBackups: o.untilBackups, RunID: runID, Progress: progress, Logger: log,
		Accepted: o.acceptedTo}
}

// runScenarios plays every scenario with runner, appending to rep as it goes.
func runScenarios(ctx context.Context, o loadtestOptions, runner *loadtest.Runner, rep *loadtest.Report) error {
	for _, sc := range o.scenarios {
		res, err := runner.Run(ctx, sc.Scaled(o.scale), loadtest.MixUser)
		if res != nil {
			rep.Scenarios = append(rep.Scenarios, res)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// serverURLs returns the PostgreSQL and Redis the in-process stack and the
// baseline use: CHOM_DATABASE_URL / CHOM_REDIS_URL, else the test servers'.
func serverURLs(getenv func(string) string) (db, rdb string) {
	db, rdb = getenv("CHOM_DATABASE_URL"), getenv("CHOM_REDIS_URL")
	if db == "" {
		db = getenv("CHOM_TEST_DATABASE_URL")
	}
	if rdb == "" {
		rdb = getenv("CHOM_TEST_REDIS_URL")
	}
	return db, rdb
}

// loadEnv is the PostgreSQL server and the Redis database a run has to itself:
// every stack of the run gets a fresh schema, and the Redis database is
// emptied between stacks.
type loadEnv struct {
	dbURL  string
	redis  *loadtest.RedisDB
	runID  string
	keep   bool
	log    *slog.Logger
	stdout io.Writer
}

func openLoadEnv(ctx context.Context, o loadtestOptions, runID string, log *slog.Logger, stdout io.Writer, getenv func(string) string) (*loadEnv, error) {
	dbURL, redisURL := serverURLs(getenv)
	if dbURL == "" || redisURL == "" {
		return nil, errors.New("loadtest: set CHOM_DATABASE_URL and CHOM_REDIS_URL (or CHOM_TEST_*; `bash scripts/test-services.sh start` starts both), or pass --url and --token")
	}
	if !strings.HasPrefix(dbURL, "postgres://") && !strings.HasPrefix(dbURL, "postgresql://") {
		return nil, fmt.Errorf("loadtest: %s is not PostgreSQL: the load run needs a real server", models.RedactURL(dbURL))
	}
	if !o.allowRemote {
		for _, u := range []string{dbURL, redisURL} {
			if err := loadtest.CheckLoopbackURL(u); err != nil {
				return nil, err
			}
		}
	}
	rdb, err := loadtest.ClaimRedisDB(ctx, redisURL, runID)
	if err != nil {
		return nil, err
	}
	return &loadEnv{dbURL: dbURL, redis: rdb, runID: runID, keep: o.keep, log: log, stdout: stdout}, nil
}

// close empties and releases the Redis database (unless --keep). It runs
// after ctx may have ended, so it only keeps ctx's values.
func (e *loadEnv) close(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if e.keep {
		fmt.Fprintf(e.stdout, "kept redis %s (--keep)\n", e.redis.URL)
		return
	}
	if err := e.redis.Release(ctx); err != nil {
		e.log.Warn("release redis db", "error", err)
	}
}

// schema creates a fresh schema for one stack of the run; the returned func
// drops it (unless --keep).
func (e *loadEnv) schema(ctx context.Context, kind string) (string, func(), error) {
	name := "chom_lt_" + e.runID + "_" + kind
	dsn, drop, err := loadtest.FreshSchema(ctx, e.dbURL, name)
	if err != nil {
		return "", nil, err
	}
	return dsn, func() {
		if e.keep {
			fmt.Fprintf(e.stdout, "kept schema %s (--keep)\n", name)
			return
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := drop(dctx); err != nil {
			e.log.Warn("drop schema", "schema", name, "error", err)
		}
	}, nil
}

// withStack starts CHOM in-process on a fresh schema and the run's Redis
// database, wired by the production constructors of internal/stack (as `chom dev` and `chom ingress`): the
// API with its watcher and acceptor and, when full, a worker on the local
// driver (under a temp dir) and the scheduler. It calls fn with the API's base
// URL and stops the stack when fn returns.
func (e *loadEnv) withStack(ctx context.Context, c stack.Config, kind string, full bool,
	fn func(ctx context.Context, base string, b *stack.Backends) error) error {
	dsn, drop, err := e.schema(ctx, kind)
	if err != nil {
		return err
	}
	defer drop()
	if err := e.redis.Flush(ctx); err != nil {
		return err
	}
	c.DatabaseURL, c.RedisURL, c.Listen = dsn, e.redis.URL, "127.0.0.1:0"
	log := e.log.With("stack", kind)
	b, err := stack.OpenBackends(ctx, c, stack.BackendOptions{Migrate: true})
	if err != nil {
		return err
	}
	defer b.Close()
	b.TrackPlatform(ctx)
	in, err := stack.NewIngress(c, b, log, stack.Hooks{})
	if err != nil {
		return err
	}
	fns := []stack.Runner{in.Run}
	if full {
		root, err := os.MkdirTemp("", "chom-loadtest-vps-")
		if err != nil {
			return fmt.Errorf("loadtest: local driver root: %w", err)
		}
		defer os.RemoveAll(root)
		c.LocalRoot = root
		w, err := stack.NewWorker(c, b, log, stack.Hooks{})
		if err != nil {
			return err
		}
		sched, err := stack.NewScheduler(c, log)
		if err != nil {
			return err
		}
		fns = append(fns, w.Run, sched.Run)
	}
	base := in.URL()
	fns = append(fns, func(ctx context.Context) error {
		if err := fn(ctx, base, b); err != nil {
			return err
		}
		return errLoadDone
	})
	if err := stack.RunAll(ctx, fns...); !errors.Is(err, errLoadDone) {
		return err
	}
	return nil
}

// seedLoad creates the run's tenant, one read-write token per user and the
// local servers sites are placed on.
func seedLoad(ctx context.Context, store *models.Store, users, servers int) ([]string, error) {
	t, err := store.EnsureTenant(ctx, "loadtest")
	if err != nil {
		return nil, fmt.Errorf("loadtest: seed tenant: %w", err)
	}
	tokens := make([]string, users)
	for i := range tokens {
		tokens[i], _, err = store.CreateToken(ctx, models.NewTokenParams{TenantID: t.ID, Name: fmt.Sprintf("loadtest-user-%d", i),
			Scopes: []string{models.ScopeRead, models.ScopeWrite}})
		if err != nil {
			return nil, fmt.Errorf("loadtest: seed token %d: %w", i, err)
		}
	}
	for i := range servers {
		_, _, err := store.RegisterVPS(ctx, models.Accept{}, models.RegisterVPSParams{
			Hostname: fmt.Sprintf("vps%d.loadtest.chom.internal", i+1), IPAddress: "127.0.0.1", SSHPort: 22,
			Provider: "local", Region: "local", Allocation: models.AllocationShared, SiteCapacity: 1_000_000,
		})
		if err != nil {
			return nil, fmt.Errorf("loadtest: seed server %d: %w", i+1, err)
		}
	}
	return tokens, nil
}

func maxUsers(ss []loadtest.Scenario) int {
	n := 1
	for _, s := range ss {
		n = max(n, s.PeakUsers())
	}
	return n
}

// loadInProcess runs the scenarios on a full in-process stack, then the accept
// comparison: an accept-only CHOM stack (no worker, as `chom ingress`) and the
// baseline handler, each on a fresh schema and the emptied Redis database.
func loadInProcess(ctx context.Context, o loadtestOptions, c stack.Config, rep *loadtest.Report, runID string,
	log *slog.Logger, stdout io.Writer, getenv func(string) string) error {
	env, err := openLoadEnv(ctx, o, runID, log, stdout, getenv)
	if err != nil {
		return err
	}
	defer env.close(ctx)
	rep.Machine.PostgreSQL = loadtest.PostgresVersion(ctx, env.dbURL)
	rep.Machine.Redis = env.redis.Version(ctx)
	rep.Target = fmt.Sprintf("in-process CHOM (ingress + acceptor + worker + scheduler, wired as `chom dev`) on PostgreSQL %s "+
		"(a fresh schema) and Redis %s db %d, %d local-driver servers, worker concurrency %d, CHOM_DB_MAX_CONNS %d",
		models.RedactURL(env.dbURL), strings.TrimSuffix(models.RedactURL(env.redis.URL), fmt.Sprintf("/%d", env.redis.DB)),
		env.redis.DB, o.servers, c.Concurrency, c.DBMaxConns)

	err = env.withStack(ctx, c, "full", true, func(ctx context.Context, base string, b *stack.Backends) error {
		tokens, err := seedLoad(ctx, b.Store, maxUsers(o.scenarios), o.servers)
		if err != nil {
			return err
		}
		runner, err := loadtest.New(o.runnerConfig(base, tokens, runID, log, stdout))
		if err != nil {
			return err
		}
		defer runner.Close()
		if err := runScenarios(ctx, o, runner, rep); err != nil {
			return err
		}
		// The database's side of the ledger: nothing of the run left unfinished.
		n, err := b.DB.NewSelect().Table("operations").Where("status NOT IN (?)",
			bun.In([]string{models.OpSucceeded, models.OpFailed, models.OpCancelled})).Count(ctx)
		if err != nil {
			return fmt.Errorf("loadtest: count unfinished operations: %w", err)
		}
		total, err := b.DB.NewSelect().Table("operations").Count(ctx)
		if err != nil {
			return fmt.Errorf("loadtest: count operations: %w", err)
		}
		rep.Notes = append(rep.Notes, fmt.Sprintf("Database check after the scenarios: %d operations, %d not finished "+
			"(requests the harness cut at a stage's end may have been accepted without the harness seeing the 202).", total, n))
		return nil
	})
	if err != nil || !o.baseline {
		return err
	}
	return acceptInProcess(ctx, o, c, rep, runID, env)
}

func acceptInProcess(ctx context.Context, o loadtestOptions, c stack.Config, rep *loadtest.Report, runID string, env *loadEnv) error {
	acc := &loadtest.AcceptComparison{Users: o.acceptUsers}
	rep.Accept = acc
	sc := loadtest.AcceptScenario(o.acceptUsers, o.acceptDuration())
	err := env.withStack(ctx, c, "accept", false, func(ctx context.Context, base string, b *stack.Backends) error {
		tokens, err := seedLoad(ctx, b.Store, o.acceptUsers, 1)
		if err != nil {
			return err
		}
		runner, err := loadtest.New(o.runnerConfig(base, tokens, runID, env.log, env.stdout))
		if err != nil {
			return err
		}
		defer runner.Close()
		acc.CHOM, err = runner.Run(ctx, sc, loadtest.MixAccept)
		if err != nil {
			return err
		}
		acc.Notes = append(acc.Notes, acceptLedger(ctx, "CHOM (ingress + acceptor, no worker, as `chom ingress`)", b, acc.CHOM))
		return nil
	})
	if err != nil {
		return err
	}
	return runBaseline(ctx, o, c, env, sc, runID, acc)
}

// runBaseline runs the accept scenario sc against the naive baseline on env's
// servers and sets the CHOM / baseline ratio of acc.
func runBaseline(ctx context.Context, o loadtestOptions, c stack.Config, env *loadEnv, sc loadtest.Scenario, runID string, acc *loadtest.AcceptComparison) error {
	err := withBaseline(ctx, c, env, func(ctx context.Context, base string, b *stack.Backends) error {
		runner, err := loadtest.New(o.runnerConfig(base, nil, runID, env.log, env.stdout))
		if err != nil {
			return err
		}
		defer runner.Close()
		sc.Name = "baseline"
		acc.Baseline, err = runner.Run(ctx, sc, loadtest.MixAccept)
		if err != nil {
			return err
		}
		acc.Notes = append(acc.Notes, acceptLedger(ctx, "baseline", b, acc.Baseline))
		return nil
	})
	if err != nil {
		return err
	}
	if base := loadtest.AcceptedPerSecond(acc.Baseline); base > 0 {
		acc.Ratio = loadtest.AcceptedPerSecond(acc.CHOM) / base
	}
	return nil
}

// acceptLedger compares an accept run's 202s with the operation rows and the
// queued tasks it left.
func acceptLedger(ctx context.Context, name string, b *stack.Backends, r *loadtest.ScenarioResult) string {
	ops, err := b.DB.NewSelect().Table("operations").Count(ctx)
	if err != nil {
		return fmt.Sprintf("%s: could not count operations: %v", name, err)
	}
	tasks := 0
	if depths, err := queue.NewInspector(b.Redis).Depths(ctx); err == nil {
		for _, d := range depths {
			tasks += d.Pending + d.Active + d.Scheduled + d.Retry
		}
	}
	return fmt.Sprintf("%s: %d answered 202, %d operation rows, %d tasks queued (rows and tasks may exceed the 202s "+
		"by the requests in flight when the run stopped).", name, r.Ledger.Accepted, ops, tasks)
}

// withBaseline serves the naive baseline handler on a fresh schema (migrated,
// for its operations table) and the emptied Redis database, and calls fn.
func withBaseline(ctx context.Context, c stack.Config, env *loadEnv, fn func(ctx context.Context, base string, b *stack.Backends) error) error {
	dsn, drop, err := env.schema(ctx, "baseline")
	if err != nil {
		return err
	}
	defer drop()
	if err := env.redis.Flush(ctx); err != nil {
		return err
	}
	c.DatabaseURL, c.RedisURL = dsn, env.redis.URL
	b, err := stack.OpenBackends(ctx, c, stack.BackendOptions{Migrate: true})
	if err != nil {
		return err
	}
	defer b.Close()
	t, err := b.Store.EnsureTenant(ctx, "loadtest-baseline")
	if err != nil {
		return fmt.Errorf("loadtest: seed baseline tenant: %w", err)
	}
	h, err := loadtest.NewBaseline(loadtest.BaselineConfig{DB: b.DB, Redis: b.Redis, TenantID: t.ID})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("loadtest: listen: %w", err)
	}
	base := "http://" + ln.Addr().String()
	log := env.log.With("stack", "baseline")
	err = stack.RunAll(ctx,
		func(ctx context.Context) error { return stack.ServeHTTP(ctx, ln, h, c.ShutdownTimeout, log) },
		func(ctx context.Context) error {
			if err := fn(ctx, base, b); err != nil {
				return err
			}
			return errLoadDone
		})
	if !errors.Is(err, errLoadDone) {
		return err
	}
	return nil
}

// loadRemote runs the scenarios against a running CHOM, then its accept path
// alone, and the baseline when CHOM_DATABASE_URL and CHOM_REDIS_URL say where
// to run it.
func loadRemote(ctx context.Context, o loadtestOptions, c stack.Config, rep *loadtest.Report, runID string,
	log *slog.Logger, stdout io.Writer, getenv func(string) string) error {
	rep.Target = "CHOM at " + o.url
	if err := checkHealth(ctx, o); err != nil {
		return err
	}
	runner, err := loadtest.New(o.runnerConfig(o.url, []string{o.token}, runID, log, stdout))
	if err != nil {
		return err
	}
	defer runner.Close()
	if err := runScenarios(ctx, o, runner, rep); err != nil {
		return err
	}
	if !o.baseline {
		return nil
	}
	acc := &loadtest.AcceptComparison{Users: o.acceptUsers}
	rep.Accept = acc
	sc := loadtest.AcceptScenario(o.acceptUsers, o.acceptDuration())
	if acc.CHOM, err = runner.Run(ctx, sc, loadtest.MixAccept); err != nil {
		return err
	}
	acc.Notes = append(acc.Notes, "CHOM: the running instance at "+o.url+", with whatever workers it has.")
	db, rdb := serverURLs(getenv)
	if db == "" || rdb == "" {
		acc.Notes = append(acc.Notes, "baseline: not run (set CHOM_DATABASE_URL and CHOM_REDIS_URL to the servers of the CHOM under test).")
		return nil
	}
	env, err := openLoadEnv(ctx, o, runID, log, stdout, getenv)
	if err != nil {
		return err
	}
	defer env.close(ctx)
	return runBaseline(ctx, o, c, env, sc, runID, acc)
}

// checkHealth makes sure something answers /api/v1/health before the load starts.
func checkHealth(ctx context.Context, o loadtestOptions) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(o.url, "/")+"/api/v1/health", nil)
	if err != nil {
		return fmt.Errorf("loadtest: %w", err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("loadtest: %s does not answer: %w", o.url, err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("loadtest: %s/api/v1/health answered %d", o.url, res.StatusCode)
	}
	return nil
}
