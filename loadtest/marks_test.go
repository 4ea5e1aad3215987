package loadtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chomhq/chom/internal/testenv"
)

func TestReadMarks(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	for _, m := range []Mark{{Name: "kafka broker", From: t0.Add(10 * time.Second), To: t0.Add(15 * time.Second)}, {Name: "deploy", From: t0.Add(20 * time.Second)}} {
		if err := WriteMark(&buf, m); err != nil {
			t.Fatal(err)
		}
	}
	buf.WriteString("\n")
	marks, err := ReadMarks(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(marks) != 2 || marks[0].Name != "kafka broker" || !marks[0].To.Equal(t0.Add(15*time.Second)) || !marks[1].To.IsZero() {
		t.Errorf("marks %+v", marks)
	}
	for _, c := range []struct{ in, want string }{
		{`{"name":"a","from":"2026-12-05T04:00:00Z"}` + "\n{oops", "line 2"},
		{`{"from":"2026-12-05T04:00:00Z"}`, "line 1: no name"},
		{`{"name":"a"}`, `mark "a" on line 1: no from time`},
		{`{"name":"a","from":"2026-12-05T04:00:10Z","to":"2026-12-05T04:00:00Z"}`, "is before from"},
	} {
		if _, err := ReadMarks(strings.NewReader(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ReadMarks(%q) = %v, want an error naming %q", c.in, err, c.want)
		}
	}
	if err := WriteMark(&buf, Mark{Name: "no time"}); err == nil {
		t.Error("WriteMark wrote a mark without a from time")
	}
}

func TestParseStages(t *testing.T) {
	t.Parallel()
	sc, err := ParseStages("4x90s, 10x1m")
	if err != nil {
		t.Fatal(err)
	}
	if sc.Name != ScenarioCustom || len(sc.Stages) != 2 || sc.Stages[0] != (Stage{4, 90 * time.Second}) || sc.Stages[1] != (Stage{10, time.Minute}) {
		t.Errorf("ParseStages = %+v", sc)
	}
	if err := sc.Validate(); err != nil {
		t.Errorf("a parsed scenario does not validate: %v", err)
	}
	_, err = ParseStages("4,0x1s,4x10ms,ax1s")
	for _, want := range []string{`"4": want USERSxDURATION`, `"0x1s": want at least 1 user`, `"4x10ms": want at least 1 user for at least 1s`, `"ax1s"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseStages error %v, want it to name %s", err, want)
		}
	}
}

// TestMarksInReport puts a fault in a run: the figures during and after it
// come from the seconds it covers, the report lists it and the chart draws.
func TestMarksInReport(t *testing.T) {
	t.Parallel()
	res := &ScenarioResult{Scenario: Scenario{Name: ScenarioCustom, Stages: []Stage{{4, 30 * time.Second}}}, Mix: MixUser, Started: t0, Seconds: 30,
		Stages: []StageResult{stageWith(0, 4, 20*time.Millisecond, 300, 0)},
		Ledger: Ledger{Tracked: true, Accepted: 3, Completed: 3, ByStatus: map[string]uint64{"succeeded": 3}}}
	for sec := range 31 {
		x := Second{T: sec, Users: 4, Requests: 10, P50: 5, P95: 8, P99: 10}
		if sec >= 10 && sec < 15 {
			x.Errors, x.P99 = 2, 900 // the fault
		}
		res.Series = append(res.Series, x)
	}
	rep := &Report{Started: t0, Finished: t0.Add(time.Minute), Target: "test", Scale: 1, Machine: ThisMachine(), Scenarios: []*ScenarioResult{res},
		Marks: []Mark{{Name: "redis master", From: t0.Add(10 * time.Second), To: t0.Add(15 * time.Second)}, {Name: "before the run", From: t0.Add(-time.Hour)}}}
	marks := rep.FigureMarks()
	if len(marks) != 1 {
		t.Fatalf("FigureMarks = %+v, want the one mark inside the run", marks)
	}
	m := marks[0]
	if m.FromSecond != 10 || m.ToSecond != 15 || m.During != (WindowFigures{Requests: 50, Errors: 10, MaxP99: 900}) ||
		m.After != (WindowFigures{Requests: 100, Errors: 0, MaxP99: 10}) {
		t.Errorf("mark figures %+v", m)
	}
	dir := t.TempDir()
	if err := rep.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "## Faults") || !strings.Contains(string(md), "| redis master | custom | 10.0 | 15.0 | 50 | 10 | 900") {
		t.Errorf("report.md does not list the fault:\n%s", md)
	}
	if st, err := os.Stat(filepath.Join(dir, "chart.png")); err != nil || st.Size() == 0 {
		t.Errorf("chart.png: %v", err)
	}
}

// TestResendsLostAnswers: every create commits but its first two answers are
// lost (503). The harness sends it again with its Idempotency-Key and gets
// the operation the first send created: each operation is journaled once,
// every one finishes, and the lost answers count as errors.
func TestResendsLostAnswers(t *testing.T) {
	t.Parallel()
	f, base := newFakeAPI(t)
	f.lost = 2
	var journal testenv.SyncBuffer
	r, err := New(Config{BaseURL: base, Tokens: []string{"a"}, Logger: slog.New(slog.DiscardHandler),
		RequestTimeout: 2 * time.Second, OpTimeout: 5 * time.Second, Drain: 2 * time.Second, Accepted: &journal})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	res, err := r.Run(t.Context(), Scenario{Name: "lossy", Stages: []Stage{{2, time.Second}}}, MixUser)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(journal.String()))
	for sc.Scan() {
		var op AcceptedOp
		if err := json.Unmarshal(sc.Bytes(), &op); err != nil {
			t.Fatalf("journal line %q: %v", sc.Text(), err)
		}
		seen[op.ID]++
		if op.Type == "site.provision" && (op.Domain == "" || op.TargetID == "") {
			t.Errorf("journaled create %+v lacks its domain or site", op)
		}
	}
	f.mu.Lock()
	creates := len(f.keyed)
	f.mu.Unlock()
	if creates == 0 || !res.Ledger.OK() {
		t.Fatalf("%d creates, ledger %+v", creates, res.Ledger)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("operation %s journaled %d times", id, n)
		}
	}
	// Every create the server committed is one the harness was told about.
	f.mu.Lock()
	for key, id := range f.keyed {
		if seen[id] != 1 {
			t.Errorf("create %s (key %s) committed by the server, journaled %d times", id, key, seen[id])
		}
	}
	f.mu.Unlock()
	if uint64(len(seen)) != res.Ledger.Accepted {
		t.Errorf("journal has %d operations, the ledger %d", len(seen), res.Ledger.Accepted)
	}
	var createRoute *RouteFigures
	for i := range res.Routes {
		if res.Routes[i].Route == RouteCreateSite {
			createRoute = &res.Routes[i]
		}
	}
	if createRoute == nil || createRoute.Figures.Errors.Server5xx() < 2*uint64(creates)-2 {
		t.Errorf("create route %+v: want the lost answers (2 per create) counted as 503s", createRoute)
	}
}
