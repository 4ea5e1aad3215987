package loadtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrNotLoopback is returned when a destination is not a loopback address and
// remote load was not allowed.
var ErrNotLoopback = errors.New("loadtest: destination is not a loopback address (use --allow-remote to send load elsewhere)")

// Config configures a Runner.
type Config struct {
	// BaseURL is where the API lives: scheme, host and port
	// ("http://127.0.0.1:8080"); requests go to BaseURL + "/api/v1/…".
	BaseURL string
	// Tokens are the bearer tokens of the virtual users: user i uses
	// Tokens[i % len(Tokens)]. Empty sends no Authorization header (the
	// baseline handler has no auth).
	Tokens []string
	// AllowRemote lets the runner connect to addresses that are not loopback.
	// Without it the dialer refuses them, whatever the URL or DNS says.
	AllowRemote bool
	// RequestTimeout bounds each request, body included. Default 10s.
	RequestTimeout time.Duration
	// OpTimeout bounds how long a user waits for one operation. Default 60s.
	OpTimeout time.Duration
	// Drain bounds the ledger check after the users stop: how long unfinished
	// operations are given to finish. Default 60s.
	Drain time.Duration
	// Think is a pause between two iterations of a user's loop. Default 0:
	// users go as fast as the API answers.
	Think time.Duration
	// RunID makes domains and idempotency keys unique to this run; default
	// random. Lowercase letters and digits only.
	RunID string
	// Progress, when set, gets one line per stage.
	Progress io.Writer
	// Logger is required.
	Logger *slog.Logger
	// Finish, when set and closed, ends the stage running at once and skips
	// the later ones, as if the scenario's time were up: the users stop and
	// the ledger is checked as usual. A fault test whose faults take a time
	// it cannot know in advance gives its load a long stage and closes Finish
	// when the last fault is over.
	Finish <-chan struct{}
	// UntilBackups, when positive, ends a scenario as Finish does once its
	// users have had that many backups accepted: a smoke run that must reach
	// every step of the mix, however slow the machine, gives its stages room
	// and sets this. 0 runs the stages for their time.
	UntilBackups int
	// Accepted, when set, gets one JSON line (an AcceptedOp) for every
	// operation the API answered 202, as the answer arrives: the client's side
	// of a ledger that a fault test compares with the server's.
	Accepted io.Writer
}

// AcceptedOp is one operation the API answered 202 for, as Config.Accepted
// records it.
type AcceptedOp struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	TargetID string `json:"target_id"`
	// Domain is the domain of the site the operation is about.
	Domain string `json:"domain"`
}

// Validate fills the defaults and reports every problem.
func (c *Config) Validate() error {
	var errs []error
	u, err := url.Parse(c.BaseURL)
	switch {
	case c.BaseURL == "":
		errs = append(errs, errors.New("loadtest: BaseURL is required"))
	case err != nil:
		errs = append(errs, fmt.Errorf("loadtest: BaseURL: %w", err))
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		errs = append(errs, fmt.Errorf("loadtest: BaseURL %q: want http(s)://host:port", c.BaseURL))
	case !c.AllowRemote:
		if err := CheckLoopbackHost(u.Hostname()); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("loadtest: Logger is required"))
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.OpTimeout <= 0 {
		c.OpTimeout = 60 * time.Second
	}
	if c.Drain <= 0 {
		c.Drain = 60 * time.Second
	}
	if c.Think < 0 {
		errs = append(errs, fmt.Errorf("loadtest: Think %v is negative", c.Think))
	}
	if c.UntilBackups < 0 {
		errs = append(errs, fmt.Errorf("loadtest: UntilBackups %d is negative", c.UntilBackups))
	}
	if c.RunID == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		c.RunID = hex.EncodeToString(b[:])
	}
	for _, r := range c.RunID {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') {
			errs = append(errs, fmt.Errorf("loadtest: RunID %q: lowercase letters and digits only", c.RunID))
			break
		}
	}
	return errors.Join(errs...)
}

// CheckLoopbackHost returns nil when host is a loopback IP literal or
// "localhost", and an error wrapping ErrNotLoopback otherwise. The dialer
// checks the resolved address again at connect time.
func CheckLoopbackHost(host string) error {
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: %q", ErrNotLoopback, host)
}

// Runner plays scenarios against one API.
//
// It drives the virtual users itself rather than through vegeta's Attacker.
// The attacker is open-loop: a pacer decides when each hit starts and a
// Targeter picks the next request without seeing the previous answer. A user
// of the mix is closed-loop and stateful — it cannot ask for the site until the
// create's operation has told it the site's ID, and it sends its next request
// only when the last one answered — and a scenario is defined by the number of
// such users, not by a rate. A closed-loop pacer would still leave the
// Targeter blind to the answers and the worker count to the attacker. So each
// user is a goroutine with a shared keep-alive http.Client, and vegeta supplies
// what it is good at: every request becomes a vegeta.Result, and
// vegeta.Metrics (a t-digest) gives the percentiles per scenario, stage, route
// and second.
type Runner struct {
	cfg     Config
	base    string
	runID   string
	client  *http.Client
	seq     atomic.Uint64
	backups backupHook

	journalMu  sync.Mutex
	journalErr error // the first write error of Config.Accepted
}

// journal writes op to Config.Accepted, if set. A write error is kept for
// Run to return and stops further writes.
func (r *Runner) journal(op AcceptedOp) {
	if r.cfg.Accepted == nil {
		return
	}
	line, err := json.Marshal(op)
	if err != nil {
		return // AcceptedOp has only strings: cannot fail
	}
	r.journalMu.Lock()
	defer r.journalMu.Unlock()
	if r.journalErr == nil {
		if _, err := r.cfg.Accepted.Write(append(line, '\n')); err != nil {
			r.journalErr = fmt.Errorf("loadtest: write accepted operations: %w", err)
		}
	}
}

// journalError is the first error writing Config.Accepted, or nil: Run
// returns it, as a journal with holes would fail a ledger for no reason.
func (r *Runner) journalError() error {
	r.journalMu.Lock()
	defer r.journalMu.Unlock()
	return r.journalErr
}

// New validates cfg and builds a Runner.
func New(cfg Config) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if !cfg.AllowRemote {
		dialer.Control = func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return fmt.Errorf("%w: %s", ErrNotLoopback, address)
			}
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				return fmt.Errorf("%w: %s", ErrNotLoopback, address)
			}
			return nil
		}
	}
	tr := &http.Transport{
		Proxy:               nil, // load never goes through a proxy
		DialContext:         dialer.DialContext,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: 4096,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		TLSHandshakeTimeout: 5 * time.Second,
	}
	client := &http.Client{
		Transport: tr,
		Timeout:   cfg.RequestTimeout,
		// A redirect is an answer to record, not a request to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	r := &Runner{cfg: cfg, base: strings.TrimRight(cfg.BaseURL, "/"), runID: cfg.RunID, client: client}
	r.backups.accepted = make(chan struct{}, 1)
	return r, nil
}

// Close releases the runner's idle connections.
func (r *Runner) Close() { r.client.CloseIdleConnections() }

// RunID is the run's identifier, part of every domain and idempotency key.
func (r *Runner) RunID() string { return r.runID }

// BackupStatus says whether the mix's backup step ran or why it was skipped.
func (r *Runner) BackupStatus() string { return r.backups.status() }

func (r *Runner) token(user int) string {
	if len(r.cfg.Tokens) == 0 {
		return ""
	}
	return r.cfg.Tokens[user%len(r.cfg.Tokens)]
}

// waitParam is the ?wait= of long polls: 5s, or less when requests time out
// sooner, so that a poll is never cut by the client's own timeout.
func (r *Runner) waitParam() time.Duration {
	w := min(5*time.Second, r.cfg.RequestTimeout/2)
	return max(w.Truncate(time.Second), time.Second)
}

// Run plays sc with mix: stage by stage it starts or stops users to reach the
// stage's count and lets them run for its duration. When sc.StopOnBreak is set
// it ends after the first stage that breaks. Then it stops the users (each
// finishes the request it is in, long polls are cut), and for MixUser polls
// every accepted operation not yet seen finished, for at most Config.Drain.
//
// When ctx ends it stops early and returns what it measured with ctx's error.
func (r *Runner) Run(ctx context.Context, sc Scenario, mix Mix) (*ScenarioResult, error) {
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	if mix != MixUser && mix != MixAccept {
		return nil, fmt.Errorf("loadtest: unknown mix %q", mix)
	}
	start := time.Now()
	s := &session{r: r, name: sc.Name, mix: mix, col: newCollector(start, len(sc.Stages)), wait: r.waitParam()}
	cpu0 := processCPU()

	hard, hardCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hardCancel()
	type running struct {
		stop context.CancelFunc
		done chan struct{}
	}
	var users, all []running // running now; every one ever started
	startUser := func(id int) {
		stop, cancel := context.WithCancel(hard)
		done := make(chan struct{})
		go func() { defer close(done); s.user(stop, hard, id) }()
		users = append(users, running{stop: cancel, done: done})
		all = append(all, users[len(users)-1])
	}

	sampler := make(chan struct{})
	var samplerDone sync.WaitGroup
	samplerDone.Go(func() { sampleHeap(s.col, start, sampler) })

	res := &ScenarioResult{Scenario: sc, Mix: mix, Started: start.UTC()}
	backups0 := r.backups.tried.Load()
	var runErr error
	for i, st := range sc.Stages {
		s.stage.Store(int32(i))
		stageStart := time.Now()
		for len(users) < st.Users {
			startUser(len(users))
		}
		for len(users) > st.Users {
			// The last started leaves first; it finishes its current request.
			u := users[len(users)-1]
			u.stop()
			users = users[:len(users)-1]
		}
		finished, err := r.waitStage(ctx, st.Duration, backups0)
		if err != nil {
			runErr = fmt.Errorf("loadtest: %s interrupted in stage %d: %w", sc.Name, i+1, err)
		}
		wall := time.Since(stageStart)
		f, routes, top := s.col.stageFigures(i, wall)
		res.Stages = append(res.Stages, StageResult{Index: i, Stage: st, StartSecond: stageStart.Sub(start).Seconds(),
			Seconds: wall.Seconds(), Figures: f, Routes: routes, TopErrors: top})
		r.progress("%-9s stage %d/%d  %4d users %7.1fs  %8.1f req/s  p95 %7.1f ms  p99 %7.1f ms  errors %.2f%%",
			sc.Name, i+1, len(sc.Stages), st.Users, wall.Seconds(), f.Throughput, f.LatencyMS.P95, f.LatencyMS.P99, 100*f.ErrorRate)
		if runErr != nil {
			break
		}
		if finished {
			res.StoppedEarly = fmt.Sprintf("finished in stage %d after %.1fs of %s (%s)", i+1, wall.Seconds(), st.Duration, r.finishReason(backups0))
			if i+1 < len(sc.Stages) {
				res.StoppedEarly += "; later stages not run"
			}
			break
		}
		if sc.StopOnBreak && Breaks(f) != "" {
			res.StoppedEarly = fmt.Sprintf("broke at %d users (%s); later stages not run", st.Users, Breaks(f))
			break
		}
	}
	res.Seconds = time.Since(start).Seconds()

	// Stop every user; each finishes its request in flight (bounded by the
	// request timeout), then the rest is cut.
	for _, u := range users {
		u.stop()
	}
	grace := time.NewTimer(r.cfg.RequestTimeout + time.Second)
	for _, u := range all {
		select {
		case <-u.done:
		case <-grace.C:
			hardCancel()
			<-u.done
		}
	}
	grace.Stop()
	hardCancel()
	close(sampler)
	samplerDone.Wait()
	res.CPUSeconds = processCPU() - cpu0

	// Final figures: the requests that ended after their stage's snapshot count too.
	for i := range res.Stages {
		d := time.Duration(res.Stages[i].Seconds * float64(time.Second))
		res.Stages[i].Figures, res.Stages[i].Routes, res.Stages[i].TopErrors = s.col.stageFigures(i, d)
		res.Stages[i].Operations = s.col.opSummary(i)
	}
	res.Operations = s.col.opSummary(-1)
	total := time.Duration(res.Seconds * float64(time.Second))
	s.col.mu.Lock()
	res.Overall = s.col.overall.figures(total)
	res.Routes = routeFigures(s.col.routes, total)
	res.TopErrors = s.col.overall.topMessages(10)
	s.col.mu.Unlock()
	res.Series = s.col.series(res.usersAt)
	if n := len(res.Series); n > 0 {
		res.HeapMBStart, res.HeapMBEnd = firstHeap(res.Series), lastHeap(res.Series)
	}

	if mix == MixAccept {
		res.Ledger = Ledger{Accepted: s.accepted.Load()}
	} else {
		res.Ledger = r.drain(ctx, s)
		res.Backup = r.backups.status()
	}
	if sc.StopOnBreak {
		res.Breaking = FindBreakingPoint(res.Stages)
	}
	res.Recovery = FindRecovery(res)
	return res, errors.Join(runErr, r.journalError())
}

func (r *Runner) progress(format string, args ...any) {
	if r.cfg.Progress != nil {
		fmt.Fprintf(r.cfg.Progress, format+"\n", args...)
	}
}

// drain polls, through the API, every accepted operation not yet seen
// finished, 16 at a time, until each finishes or Config.Drain runs out. These
// requests are not part of the figures.
func (r *Runner) drain(ctx context.Context, s *session) Ledger {
	start := time.Now()
	pending := s.ledger.unfinished()
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Drain)
	defer cancel()
	ids := make(chan string)
	var wg sync.WaitGroup
	for range min(16, len(pending)) {
		wg.Go(func() {
			for id := range ids {
				r.pollUntilDone(ctx, s, id)
			}
		})
	}
	for _, id := range pending {
		select {
		case ids <- id:
		case <-ctx.Done():
		}
	}
	close(ids)
	wg.Wait()
	l := s.ledger.summary()
	l.CheckedAtEnd = uint64(len(pending))
	l.DrainSeconds = time.Since(start).Seconds()
	if !l.OK() {
		r.cfg.Logger.WarnContext(ctx, "accepted operations did not finish", "scenario", s.name,
			"unfinished", l.Accepted-l.Completed, "drain", r.cfg.Drain.String(), "examples", l.Unfinished)
	}
	return l
}

func (r *Runner) pollUntilDone(ctx context.Context, s *session, id string) {
	path := fmt.Sprintf("/api/v1/operations/%s?wait=%s", id, s.wait)
	for ctx.Err() == nil {
		res := s.call(ctx, r.token(0), RouteWaitOp, http.MethodGet, path, nil, "")
		if res.status == http.StatusOK {
			var op opView
			if json.Unmarshal(res.body, &op) == nil && terminal(op.Status) {
				s.ledger.terminal(id, op.Status)
				return
			}
			continue
		}
		if res.status == http.StatusNotFound {
			return // it will show as unfinished: the API lost it
		}
		sleep(ctx, 200*time.Millisecond)
	}
}

// sampleHeap records the Go heap in use every second until stop closes.
func sampleHeap(col *collector, start time.Time, stop <-chan struct{}) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			col.heap(int(time.Since(start)/time.Second), float64(sample[0].Value.Uint64())/(1<<20))
		}
	}
	read()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			read()
			return
		case <-t.C:
			read()
		}
	}
}

func firstHeap(s []Second) float64 {
	for _, x := range s {
		if x.HeapMB > 0 {
			return x.HeapMB
		}
	}
	return 0
}

func lastHeap(s []Second) float64 {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i].HeapMB > 0 {
			return s[i].HeapMB
		}
	}
	return 0
}

// waitStage waits out a stage of duration d. It reports finished when the
// caller's Finish closed or Config.UntilBackups backups were accepted since
// the scenario began (backups0 is the count then), and ctx's error when ctx
// ended first.
func (r *Runner) waitStage(ctx context.Context, d time.Duration, backups0 uint64) (finished bool, err error) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		if n := r.cfg.UntilBackups; n > 0 && r.backups.tried.Load()-backups0 >= uint64(n) {
			return true, nil
		}
		select {
		case <-t.C:
			return false, nil
		case <-r.cfg.Finish:
			return true, nil
		case <-r.backups.accepted:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// finishReason says why a scenario finished before its time.
func (r *Runner) finishReason(backups0 uint64) string {
	if n := r.cfg.UntilBackups; n > 0 && r.backups.tried.Load()-backups0 >= uint64(n) {
		return fmt.Sprintf("%d backups accepted", n)
	}
	return "by the caller"
}
