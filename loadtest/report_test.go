package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	vegeta "github.com/tsenart/vegeta/v12/lib"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// sample builds a finished request of route with status code (0 with errText
// for a transport failure) that started at offset from t0.
func sample(route string, offset, latency time.Duration, code int, err error) *Sample {
	s := &Sample{Route: route, Result: vegeta.Result{Timestamp: t0.Add(offset), Latency: latency, Code: uint16(code)}}
	if err != nil {
		s.Error = err.Error()
	} else if code >= 400 {
		s.Error = fmt.Sprintf("HTTP %d", code)
	}
	s.Class = Classify(code, err)
	return s
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "Client.Timeout exceeded while awaiting headers" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

var _ net.Error = timeoutErr{}

func TestClassify(t *testing.T) {
	t.Parallel()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	tests := []struct {
		code int
		err  error
		want string
	}{
		{200, nil, ""},
		{202, nil, ""},
		{304, nil, ""},
		{404, nil, Class4xx},
		{409, nil, Class4xx},
		{429, nil, Class4xx},
		{500, nil, Class5xx},
		{503, nil, Class5xx},
		{0, timeoutErr{}, ClassTimeout},
		{0, fmt.Errorf("get: %w", context.DeadlineExceeded), ClassTimeout},
		{0, refused, ClassConnection},
		{0, errors.New("EOF"), ClassConnection},
		{0, nil, ClassConnection}, // no status and no error: nothing came back
	}
	for _, tt := range tests {
		if got := Classify(tt.code, tt.err); got != tt.want {
			t.Errorf("Classify(%d, %v) = %q, want %q", tt.code, tt.err, got, tt.want)
		}
	}
}

// TestFiguresPercentiles feeds 1..1000 ms once each: the t-digest's
// percentiles must sit within 1 % of the exact ones.
func TestFiguresPercentiles(t *testing.T) {
	t.Parallel()
	var a agg
	for i := 1; i <= 1000; i++ {
		a.add(sample(RouteGetSite, time.Duration(i)*time.Millisecond, time.Duration(i)*time.Millisecond, 200, nil), false)
	}
	// Held long polls count as requests but stay out of the latency.
	for range 100 {
		a.add(sample(RouteWaitOp, 0, 5*time.Second, 200, nil), true)
	}
	f := a.figures(10 * time.Second)
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 0.01*want {
			t.Errorf("%s = %.2f ms, want %.0f ms ± 1 %%", name, got, want)
		}
	}
	near("p50", f.LatencyMS.P50, 500)
	near("p95", f.LatencyMS.P95, 950)
	near("p99", f.LatencyMS.P99, 990)
	near("p99.9", f.LatencyMS.P999, 999)
	near("mean", f.LatencyMS.Mean, 500.5)
	if f.LatencyMS.Max != 1000 {
		t.Errorf("max = %v, want 1000 ms (the held 5 s polls are left out)", f.LatencyMS.Max)
	}
	if f.Requests != 1100 || f.LatencyRequests != 1000 {
		t.Errorf("requests = %d (latency %d), want 1100 (1000)", f.Requests, f.LatencyRequests)
	}
	if f.Throughput != 110 {
		t.Errorf("throughput = %v, want 110 req/s", f.Throughput)
	}
	if f.ErrorRate != 0 || f.Errors.Total != 0 {
		t.Errorf("errors = %v (%v), want none", f.ErrorRate, f.Errors)
	}
}

func TestFiguresErrorClasses(t *testing.T) {
	t.Parallel()
	var a agg
	add := func(n int, code int, err error) {
		for range n {
			a.add(sample(RouteCreateSite, 0, time.Millisecond, code, err), false)
		}
	}
	refused := &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 41234},
		Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	add(900, 202, nil)
	add(40, 409, nil)
	add(10, 404, nil)
	add(20, 503, nil)
	add(5, 500, nil)
	add(15, 0, timeoutErr{})
	add(10, 0, refused)
	f := a.figures(time.Second)
	want := ErrorCounts{Total: 100, Timeouts: 15, Connection: 10,
		Status4xx: map[string]uint64{"404": 10, "409": 40}, Status5xx: map[string]uint64{"500": 5, "503": 20}}
	if d := cmp.Diff(want, f.Errors); d != "" {
		t.Errorf("errors (-want +got):\n%s", d)
	}
	if f.ErrorRate != 0.1 {
		t.Errorf("error rate = %v, want 0.1", f.ErrorRate)
	}
	if f.Errors.Client4xx() != 50 || f.Errors.Server5xx() != 25 {
		t.Errorf("4xx %d 5xx %d, want 50 and 25", f.Errors.Client4xx(), f.Errors.Server5xx())
	}
	if got, want := f.Errors.String(), "4xx 409 ×40, 5xx 503 ×20, timeout ×15, 4xx 404 ×10, connection ×10, 5xx 500 ×5"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if d := cmp.Diff(map[string]uint64{"0": 25, "202": 900, "404": 10, "409": 40, "500": 5, "503": 20}, f.Status); d != "" {
		t.Errorf("status (-want +got):\n%s", d)
	}
	top := a.topMessages(2)
	wantTop := []MessageCount{{"POST /sites: HTTP 409", 40}, {"POST /sites: HTTP 503", 20}}
	if d := cmp.Diff(wantTop, top); d != "" {
		t.Errorf("top messages (-want +got):\n%s", d)
	}
}

func TestNormaliseError(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"dial tcp 127.0.0.1:41234: connect: connection refused":                      "dial tcp ADDR: connect: connection refused",
		"read tcp 127.0.0.1:5012->127.0.0.1:8080: read: connection reset by peer":    "read tcp ADDR->ADDR: read: connection reset by peer",
		"HTTP 409 Conflict: site has operation op_01JABCDEF in flight":               "HTTP 409 Conflict: site has operation op_ID in flight",
		`Get "http://[::1]:8080/api/v1/sites/site_01XYZ": context deadline exceeded`: `Get "http://ADDR/api/v1/sites/site_ID": context deadline exceeded`,
	}
	for in, want := range tests {
		if got := normaliseError(in); got != want {
			t.Errorf("normaliseError(%q) = %q, want %q", in, got, want)
		}
	}
}

// stageWith builds a stage result of users whose requests are n requests
// with the given latency and errs errors (503).
func stageWith(i, users int, latency time.Duration, n, errs int) StageResult {
	c := newCollector(t0, 1)
	for k := range n {
		code := 200
		if k < errs {
			code = 503
		}
		c.add(0, sample(RouteGetSite, 0, latency, code, nil))
	}
	f, routes, top := c.stageFigures(0, 10*time.Second)
	return StageResult{Index: i, Stage: Stage{Users: users, Duration: 10 * time.Second}, StartSecond: float64(10 * i),
		Seconds: 10, Figures: f, Routes: routes, TopErrors: top}
}

func TestBreaks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		p99  float64
		rate float64
		want string
	}{
		{999, 0.01, ""},
		{1000, 0, ""},
		{1400, 0, "p99 1.40 s > 1.00 s"},
		{20, 0.0101, "errors 1.01 % > 1.00 %"},
		{2000, 0.5, "p99 2.00 s > 1.00 s and errors 50.00 % > 1.00 %"},
	}
	for _, tt := range tests {
		f := Figures{ErrorRate: tt.rate, LatencyMS: Latency{P99: tt.p99}}
		if got := Breaks(f); got != tt.want {
			t.Errorf("Breaks(p99 %v, errors %v) = %q, want %q", tt.p99, tt.rate, got, tt.want)
		}
	}
}

func TestFindBreakingPoint(t *testing.T) {
	t.Parallel()
	t.Run("latency first", func(t *testing.T) {
		t.Parallel()
		bp := FindBreakingPoint([]StageResult{
			stageWith(0, 50, 10*time.Millisecond, 1000, 0),
			stageWith(1, 100, 300*time.Millisecond, 1000, 5), // 0.5 % errors: not broken
			stageWith(2, 150, 1500*time.Millisecond, 1000, 0),
			stageWith(3, 200, 3*time.Second, 1000, 500),
		})
		if !bp.Reached || bp.Users != 150 || bp.LastGoodUsers != 100 || bp.MaxUsersRun != 200 {
			t.Fatalf("breaking point %+v, want reached at 150 after 100", bp)
		}
		if !strings.HasPrefix(bp.Reason, "p99 1.50 s") {
			t.Errorf("reason %q", bp.Reason)
		}
		if !strings.Contains(bp.FailureMode, "slowest route GET /sites/{id}") {
			t.Errorf("failure mode %q does not name the slow route", bp.FailureMode)
		}
	})
	t.Run("errors first", func(t *testing.T) {
		t.Parallel()
		bp := FindBreakingPoint([]StageResult{
			stageWith(0, 50, 10*time.Millisecond, 1000, 0),
			stageWith(1, 100, 20*time.Millisecond, 1000, 20), // 2 % errors
			stageWith(2, 150, 2*time.Second, 1000, 0),
		})
		if !bp.Reached || bp.Users != 100 || bp.Reason != "errors 2.00 % > 1.00 %" {
			t.Fatalf("breaking point %+v, want errors at 100 users", bp)
		}
		if !strings.Contains(bp.FailureMode, "5xx 503 ×20") || !strings.Contains(bp.FailureMode, `"GET /sites/{id}: HTTP 503"`) {
			t.Errorf("failure mode %q", bp.FailureMode)
		}
	})
	t.Run("never", func(t *testing.T) {
		t.Parallel()
		bp := FindBreakingPoint([]StageResult{stageWith(0, 50, 10*time.Millisecond, 1000, 0), stageWith(1, 500, 900*time.Millisecond, 1000, 10)})
		if bp.Reached || bp.MaxUsersRun != 500 || bp.LastGoodUsers != 500 || bp.MaxThroughput != 100 {
			t.Errorf("breaking point %+v, want not reached up to 500 users", bp)
		}
	})
}

func TestFindRecovery(t *testing.T) {
	t.Parallel()
	r := &ScenarioResult{Seconds: 30, Stages: []StageResult{
		stageWith(0, 100, 20*time.Millisecond, 100, 0),
		stageWith(1, 200, 400*time.Millisecond, 100, 0),
		stageWith(2, 100, 20*time.Millisecond, 100, 0),
	}}
	for sec := range 30 {
		s := Second{T: sec, Requests: 10, P95: 20}
		switch {
		case sec >= 10 && sec < 24: // the spike, and four slow seconds after it
			s.P95 = 400
		case sec == 24:
			s.Errors = 1
		}
		r.Series = append(r.Series, s)
	}
	rc := FindRecovery(r)
	if rc == nil || !rc.Recovered || rc.Seconds != 5 || rc.PeakUsers != 200 || rc.ThresholdMS != 30 {
		t.Fatalf("recovery %+v, want recovered 5 s after the spike under 30 ms", rc)
	}
	if FindRecovery(&ScenarioResult{Stages: r.Stages[:1]}) != nil {
		t.Error("a single stage has no spike")
	}
	ramp := &ScenarioResult{Stages: []StageResult{stageWith(0, 10, 0, 1, 0), stageWith(1, 50, 0, 1, 0), stageWith(2, 100, 0, 1, 0)}}
	if FindRecovery(ramp) != nil {
		t.Error("a ramp has no spike")
	}
}

func TestCheckTargets(t *testing.T) {
	t.Parallel()
	good := stageWith(0, 200, 100*time.Millisecond, 1000, 0)
	slow := stageWith(1, 250, 600*time.Millisecond, 1000, 0)
	r := &ScenarioResult{Overall: good.Figures, Stages: []StageResult{stageWith(0, 100, time.Millisecond, 10, 0), good, slow}}
	v := Check(r)
	if !v.P95 || !v.P99 || !v.Errors || v.Users == nil || !*v.Users || v.UsersStage.Stage.Users != 200 {
		t.Errorf("verdict %+v", v)
	}
	if v.Throughput {
		t.Error("100 req/s passed the > 100 req/s target")
	}
	r.Stages = []StageResult{slow}
	if v := Check(r); v.Users == nil || *v.Users {
		t.Error("the first stage with 200+ users has p95 600 ms, yet the users target passed")
	}
	r.Stages = r.Stages[:0]
	if v := Check(r); v.Users != nil {
		t.Error("a scenario under 200 users has a users verdict")
	}
}

func TestWriteFiles(t *testing.T) {
	t.Parallel()
	res := &ScenarioResult{Scenario: Scenarios()[2].Scaled(0.05), Mix: MixUser, Started: t0, Seconds: 15,
		Stages: []StageResult{
			stageWith(0, 100, 20*time.Millisecond, 600, 0),
			stageWith(1, 200, 60*time.Millisecond, 600, 1),
			stageWith(2, 100, 20*time.Millisecond, 600, 0),
		},
		Ledger: Ledger{Tracked: true, Accepted: 10, Completed: 10, ByStatus: map[string]uint64{"succeeded": 10}},
		Backup: "skipped: POST /sites/{id}/backups answered 404"}
	res.Stages[1].StartSecond, res.Stages[2].StartSecond = 6, 9
	for sec := range 16 {
		res.Series = append(res.Series, Second{T: sec, Users: res.usersAt(sec), Requests: 120, P50: 10, P95: 20, P99: 40, HeapMB: 30})
	}
	res.Overall = res.Stages[1].Figures
	res.Recovery = FindRecovery(res)
	rep := &Report{Started: t0, Finished: t0.Add(time.Minute), Target: "test", Scale: 0.05, Machine: ThisMachine(),
		Scenarios: []*ScenarioResult{res}, Accept: &AcceptComparison{Users: 200, CHOM: res, Baseline: res, Ratio: 1}}
	dir := filepath.Join(t.TempDir(), "out")
	if err := rep.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "result.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatalf("result.json: %v", err)
	}
	if len(back.Scenarios) != 1 || back.Scenarios[0].Ledger.Accepted != 10 || back.Machine.NumCPU == 0 {
		t.Errorf("result.json round trip: %+v", back)
	}
	md, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| spike | 100→200→100 |", "p95 (< 500 ms)", "10 / 10 ✅", "CHOM / baseline accept throughput: 1.00×",
		"Backup step: skipped", "nproc", "spike recovery"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	png, err := os.ReadFile(filepath.Join(dir, "chart.png"))
	if err != nil {
		t.Fatal(err)
	}
	if len(png) < 1000 || string(png[1:4]) != "PNG" {
		t.Errorf("chart.png is %d bytes, not a PNG", len(png))
	}
}
