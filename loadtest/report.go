package loadtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Targets of the old performance report, each figure's pass mark.
var Targets = struct {
	P95        time.Duration
	P99        time.Duration
	Throughput float64 // req/s, more is better
	ErrorRate  float64
	Users      int
}{P95: 500 * time.Millisecond, P99: time.Second, Throughput: 100, ErrorRate: 0.001, Users: 200}

// A stage breaks when its p99 passes BreakP99 or its error rate passes
// BreakErrorRate: the stress scenario's breaking point is the user count of
// the first stage that does.
const (
	BreakP99       = time.Second
	BreakErrorRate = 0.01
)

// ScenarioResult is everything measured in one scenario run.
type ScenarioResult struct {
	Scenario Scenario  `json:"scenario"`
	Mix      Mix       `json:"mix"`
	Started  time.Time `json:"started"`
	// Seconds is the wall time of the stages that ran.
	Seconds float64 `json:"seconds"`
	// StoppedEarly says why the scenario ended before its time: stress broke,
	// the caller finished it, or Config.UntilBackups was reached.
	StoppedEarly string         `json:"stopped_early,omitempty"`
	Overall      Figures        `json:"overall"`
	Routes       []RouteFigures `json:"routes"`
	Stages       []StageResult  `json:"stages"`
	Series       []Second       `json:"series"`
	Ledger       Ledger         `json:"ledger"`
	// Operations is how long the operations users waited for took.
	Operations OperationTimes `json:"operations"`
	// Breaking is set for scenarios that look for a breaking point.
	Breaking *BreakingPoint `json:"breaking_point,omitempty"`
	// Recovery is set for scenarios with a spike (a stage with more users
	// than the stages around it).
	Recovery  *Recovery      `json:"recovery,omitempty"`
	Backup    string         `json:"backup_step,omitempty"`
	TopErrors []MessageCount `json:"top_errors,omitempty"`
	// CPUSeconds is the CPU the whole process used during the run (the
	// harness, and the stack when it runs in-process).
	CPUSeconds  float64 `json:"cpu_seconds"`
	HeapMBStart float64 `json:"heap_mb_start"`
	HeapMBEnd   float64 `json:"heap_mb_end"`
}

// StageResult is the figures of one stage.
type StageResult struct {
	Index int   `json:"index"`
	Stage Stage `json:"stage"`
	// StartSecond is when the stage began, in seconds since the scenario began.
	StartSecond float64        `json:"start_second"`
	Seconds     float64        `json:"seconds"`
	Figures     Figures        `json:"figures"`
	Routes      []RouteFigures `json:"routes"`
	TopErrors   []MessageCount `json:"top_errors,omitempty"`
	// Operations times the operations accepted during the stage.
	Operations OperationTimes `json:"operations"`
}

// usersAt is the user count during second sec of the run: the stage that
// started in or before it (0 after the end).
func (r *ScenarioResult) usersAt(sec int) int {
	if float64(sec) >= r.Seconds {
		return 0
	}
	users := 0
	for _, st := range r.Stages {
		if sec >= int(st.StartSecond) {
			users = st.Stage.Users
		}
	}
	return users
}

// Breaks says why figures count as broken — "p99 1.42 s > 1 s", "errors 3.1 %
// > 1 %" or both — or "" when they do not.
func Breaks(f Figures) string {
	var why []string
	if p99 := f.LatencyMS.P99; p99 > ms(BreakP99) {
		why = append(why, fmt.Sprintf("p99 %s > %s", fmtMS(p99), fmtMS(ms(BreakP99))))
	}
	if f.ErrorRate > BreakErrorRate {
		why = append(why, fmt.Sprintf("errors %s > %s", fmtPct(f.ErrorRate), fmtPct(BreakErrorRate)))
	}
	return strings.Join(why, " and ")
}

// BreakingPoint is where a stepped scenario broke.
type BreakingPoint struct {
	// Reached is false when no stage broke.
	Reached bool `json:"reached"`
	// Users is the user count of the first stage that broke.
	Users int `json:"users,omitempty"`
	// LastGoodUsers is the user count of the last stage before it (0 if none).
	LastGoodUsers int `json:"last_good_users"`
	// MaxUsersRun is the largest user count that ran.
	MaxUsersRun int `json:"max_users_run"`
	// Reason is Breaks of the stage.
	Reason string `json:"reason,omitempty"`
	// FailureMode says what went wrong: the error classes and most frequent
	// error, or the slowest route when only latency broke.
	FailureMode string `json:"failure_mode,omitempty"`
	// MaxThroughput is the highest stage throughput seen, in req/s.
	MaxThroughput float64 `json:"max_throughput_rps"`
}

// FindBreakingPoint returns the first stage that breaks (see Breaks).
func FindBreakingPoint(stages []StageResult) *BreakingPoint {
	bp := &BreakingPoint{}
	for _, st := range stages {
		bp.MaxUsersRun = max(bp.MaxUsersRun, st.Stage.Users)
		bp.MaxThroughput = math.Max(bp.MaxThroughput, st.Figures.Throughput)
	}
	for i, st := range stages {
		why := Breaks(st.Figures)
		if why == "" {
			bp.LastGoodUsers = st.Stage.Users
			continue
		}
		bp.Reached, bp.Users, bp.Reason = true, st.Stage.Users, why
		bp.FailureMode = failureMode(stages[i])
		return bp
	}
	return bp
}

// failureMode describes what failed in a broken stage.
func failureMode(st StageResult) string {
	f := st.Figures
	var parts []string
	if f.Errors.Total > 0 {
		parts = append(parts, "errors: "+f.Errors.String())
		if len(st.TopErrors) > 0 {
			parts = append(parts, fmt.Sprintf("most frequent: %q ×%d", st.TopErrors[0].Message, st.TopErrors[0].Count))
		}
	}
	if f.LatencyMS.P99 > ms(BreakP99) {
		slow, p99 := "", 0.0
		for _, r := range st.Routes {
			if !r.Held && r.Figures.LatencyMS.P99 > p99 {
				slow, p99 = r.Route, r.Figures.LatencyMS.P99
			}
		}
		parts = append(parts, fmt.Sprintf("latency: p99 %s, slowest route %s (p99 %s)", fmtMS(f.LatencyMS.P99), slow, fmtMS(p99)))
	}
	return strings.Join(parts, "; ")
}

// Recovery is how fast latency came back after a spike.
type Recovery struct {
	PeakUsers int `json:"peak_users"`
	// BeforeP95MS is the p95 of the stage before the spike, PeakP95MS of the spike.
	BeforeP95MS float64 `json:"before_p95_ms"`
	PeakP95MS   float64 `json:"peak_p95_ms"`
	// ThresholdMS is what "recovered" means: a second with no error and a p95
	// at most 1.5 × BeforeP95MS (and at least 5 ms above it, for noise).
	ThresholdMS float64 `json:"threshold_ms"`
	Recovered   bool    `json:"recovered"`
	// Seconds from the end of the spike to the first recovered second.
	Seconds float64 `json:"seconds"`
}

// FindRecovery returns the recovery after the scenario's spike: the stage with
// the most users, when stages before and after it have fewer. Nil when there
// is no such stage.
func FindRecovery(r *ScenarioResult) *Recovery {
	peak := -1
	for i, st := range r.Stages {
		if peak < 0 || st.Stage.Users > r.Stages[peak].Stage.Users {
			peak = i
		}
	}
	if peak <= 0 || peak >= len(r.Stages)-1 ||
		r.Stages[peak-1].Stage.Users >= r.Stages[peak].Stage.Users ||
		r.Stages[peak+1].Stage.Users >= r.Stages[peak].Stage.Users {
		return nil
	}
	before := r.Stages[peak-1].Figures.LatencyMS.P95
	rec := &Recovery{PeakUsers: r.Stages[peak].Stage.Users, BeforeP95MS: before,
		PeakP95MS: r.Stages[peak].Figures.LatencyMS.P95, ThresholdMS: math.Max(1.5*before, before+5)}
	end := r.Stages[peak+1].StartSecond
	for _, s := range r.Series {
		// A second counts when it began after the spike ended.
		if float64(s.T) < end || s.Requests == 0 || s.T >= int(r.Seconds) {
			continue
		}
		if s.Errors == 0 && s.P95 <= rec.ThresholdMS {
			rec.Recovered, rec.Seconds = true, math.Max(0, float64(s.T)-end)
			break
		}
	}
	return rec
}

// Machine describes where the run happened.
type Machine struct {
	NumCPU     int    `json:"nproc"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	MemoryMB   int64  `json:"memory_mb"`
	CPUModel   string `json:"cpu_model,omitempty"`
	OS         string `json:"os"`
	GoVersion  string `json:"go_version"`
	// PostgreSQL and Redis are the server versions, when known.
	PostgreSQL string `json:"postgresql,omitempty"`
	Redis      string `json:"redis,omitempty"`
}

// ThisMachine reads the machine's size from the runtime and /proc.
func ThisMachine() Machine {
	m := Machine{NumCPU: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), OS: runtime.GOOS + "/" + runtime.GOARCH,
		GoVersion: runtime.Version()}
	m.MemoryMB = procField("/proc/meminfo", "MemTotal:", func(v string) int64 {
		var kb int64
		_, _ = fmt.Sscan(v, &kb)
		return kb / 1024
	})
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		_ = f.Close()
	}
	return m
}

func procField(path, key string, parse func(string) int64) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key); ok {
			return parse(strings.TrimSpace(v))
		}
	}
	return 0
}

// AcceptComparison is CHOM's accept path against the naive baseline handler,
// both driven by the same number of users sending only POST /sites, one after
// the other, on the same PostgreSQL and Redis.
type AcceptComparison struct {
	Users    int             `json:"users"`
	CHOM     *ScenarioResult `json:"chom,omitempty"`
	Baseline *ScenarioResult `json:"baseline,omitempty"`
	// Ratio is CHOM's accepted requests per second over the baseline's.
	Ratio float64 `json:"ratio,omitempty"`
	// Notes say how each side was run and what its ledger showed.
	Notes []string `json:"notes,omitempty"`
}

// AcceptedPerSecond is the 202 answers per second of an accept run.
func AcceptedPerSecond(r *ScenarioResult) float64 {
	if r == nil || r.Seconds <= 0 {
		return 0
	}
	return float64(r.Ledger.Accepted) / r.Seconds
}

// Report is a whole `chom-loadtest` run.
type Report struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Target says what was loaded: a URL, or the in-process stack and its servers.
	Target    string            `json:"target"`
	Scale     float64           `json:"scale"`
	Machine   Machine           `json:"machine"`
	Scenarios []*ScenarioResult `json:"scenarios"`
	Accept    *AcceptComparison `json:"accept,omitempty"`
	// Marks are the faults (or other events) a script injected during the
	// run (chom-loadtest --marks), drawn on the chart's time axis.
	Marks []Mark   `json:"marks,omitempty"`
	Notes []string `json:"notes,omitempty"`
}

// LedgerOK reports whether every scenario's accepted operations all finished.
func (r *Report) LedgerOK() bool {
	for _, s := range r.Scenarios {
		if !s.Ledger.OK() {
			return false
		}
	}
	return true
}

// WriteFiles writes result.json, report.md and chart.png into dir, creating it.
func (r *Report) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("loadtest: output dir: %w", err)
	}
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("loadtest: encode result: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "result.json"), append(raw, '\n'), 0o644); err != nil {
		return fmt.Errorf("loadtest: write result.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(r.Markdown()), 0o644); err != nil {
		return fmt.Errorf("loadtest: write report.md: %w", err)
	}
	if err := r.WriteChart(filepath.Join(dir, "chart.png")); err != nil {
		return err
	}
	return nil
}
