package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/loadtest"
)

// TestLoadtestSustained runs `chom-loadtest --scenario sustained` at a small
// scale against its own in-process stack on real PostgreSQL and Redis, with
// the accept comparison, and checks the files and the ledger. The scenario
// ends once its users have had 3 backups accepted (--until-backups), so every
// step of the mix is reached however slow the machine is; its 60 s stage is
// only the bound. (A fixed 3 s stage once ended, on a machine at load 19,
// before any provision had finished: the backup step was never reached.)
func TestLoadtestSustained(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"CHOM_DATABASE_URL": testenv.PostgresDSN(t),
		"CHOM_REDIS_URL":    testenv.Redis(t).URL,
		// Few connections: other tests share the server.
		"CHOM_DB_MAX_CONNS":       "10",
		"CHOM_WORKER_CONCURRENCY": "8",
		"CHOM_RETRY_BASE":         "50ms",
		"CHOM_RETRY_MAX":          "200ms",
	}
	out := filepath.Join(t.TempDir(), "lt")
	var stdout, stderr bytes.Buffer
	err := runLoadtest(t.Context(), []string{"--scenario", "sustained", "--scale", "0.1", "--until-backups", "3", "--out", out,
		"--accept-users", "20", "--accept-duration", "1s", "--vps", "2"}, &stdout, &stderr, func(k string) string { return env[k] })
	t.Logf("stdout:\n%s", stdout.String())
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(out, "stack.log"))
		t.Fatalf("loadtest: %v\nstderr: %s\nstack.log: %s", err, stderr.String(), log)
	}
	for _, f := range []string{"result.json", "report.md", "chart.png", "stack.log"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || (f != "stack.log" && st.Size() == 0) {
			t.Errorf("%s: %v", f, err)
		}
	}
	raw, err := os.ReadFile(filepath.Join(out, "result.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep loadtest.Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Scenarios) != 1 {
		t.Fatalf("%d scenarios in result.json, want 1", len(rep.Scenarios))
	}
	s := rep.Scenarios[0]
	l := s.Ledger
	t.Logf("ledger: %d accepted, %d completed %v, %d checked at the end", l.Accepted, l.Completed, l.ByStatus, l.CheckedAtEnd)
	if !l.Tracked || l.Accepted == 0 || !l.OK() || l.ByStatus["succeeded"] != l.Accepted {
		t.Errorf("ledger %+v: want every accepted operation succeeded", l)
	}
	// The mix's backup step runs against the in-process stack (archives in its
	// temp local root) and its operations are in the ledger above.
	if !strings.HasPrefix(s.Backup, "available:") {
		t.Errorf("backup step %q, want it available", s.Backup)
	}
	if !strings.Contains(s.StoppedEarly, "3 backups accepted") {
		t.Errorf("stopped early %q, want it ended by --until-backups 3", s.StoppedEarly)
	}
	if s.Overall.Requests == 0 || s.Overall.Errors.Total != 0 {
		t.Errorf("sustained: %d requests, errors %s", s.Overall.Requests, s.Overall.Errors)
	}
	a := rep.Accept
	if a == nil || a.CHOM == nil || a.Baseline == nil || a.Ratio <= 0 {
		t.Fatalf("accept comparison %+v", a)
	}
	if a.CHOM.Ledger.Accepted == 0 || a.Baseline.Ledger.Accepted == 0 {
		t.Errorf("accept runs: CHOM %d, baseline %d accepted", a.CHOM.Ledger.Accepted, a.Baseline.Ledger.Accepted)
	}
	md, _ := os.ReadFile(filepath.Join(out, "report.md"))
	for _, want := range []string{"| sustained | 100 |", "CHOM / baseline accept throughput", "— **OK**"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	if !strings.Contains(stdout.String(), "ledger sustained") {
		t.Errorf("stdout lacks the ledger line")
	}
}

func TestLoadtestFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--scenario", "burst"},
		{"--scale", "0"},
		{"--url", "http://127.0.0.1:8080"},                      // no token
		{"--url", "http://192.0.2.1:8080", "--token", "chom_x"}, // not loopback
		{"--token", "chom_x"},                                   // token without url
		{"--accept-users", "0"},
		{"--stages", "4x90"}, // no unit
		{"--stages", "0x10s"},
		{"--until-backups", "-1"},
	} {
		var stderr bytes.Buffer
		err := runLoadtest(t.Context(), args, &bytes.Buffer{}, &stderr, func(string) string { return "" })
		if err == nil || !strings.Contains(err.Error(), "usage") {
			t.Errorf("loadtest %v: %v, want a usage error", args, err)
		}
	}
}

// TestLoadtestMarksAndAccepted runs a custom stage against a fake API with
// --accepted and --marks: the journal lists the 202s, the report the fault.
func TestLoadtestMarksAndAccepted(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	n := 0
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/api/v1/health":
			_, _ = w.Write([]byte(`{"status":"ok"}`))
		case r.Method == http.MethodPost && r.URL.Path == "/api/v1/sites":
			n++
			w.WriteHeader(http.StatusAccepted)
			_, _ = fmt.Fprintf(w, `{"id":"op_%d","type":"site.provision","status":"pending","target_type":"site","target_id":"site_%d"}`, n, n)
		case strings.HasPrefix(r.URL.Path, "/api/v1/operations/"):
			id := strings.TrimPrefix(r.URL.Path, "/api/v1/operations/")
			_, _ = fmt.Fprintf(w, `{"id":%q,"status":"failed"}`, id) // failed: the user stops there
		default:
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte(`{"data":[]}`))
		}
	}))
	defer api.Close()
	dir := t.TempDir()
	marks := filepath.Join(dir, "marks.jsonl")
	now := time.Now()
	if err := os.WriteFile(marks, fmt.Appendf(nil, "{\"name\":\"redis master\",\"from\":%q,\"to\":%q}\n",
		now.Add(500*time.Millisecond).Format(time.RFC3339Nano), now.Add(1500*time.Millisecond).Format(time.RFC3339Nano)), 0o644); err != nil {
		t.Fatal(err)
	}
	accepted := filepath.Join(dir, "accepted.jsonl")
	out := filepath.Join(dir, "out")
	var stdout bytes.Buffer
	err := runLoadtest(t.Context(), []string{"--url", api.URL, "--token", "chom_x", "--stages", "2x2s", "--baseline=false",
		"--marks", marks, "--accepted", accepted, "--out", out}, &stdout, &bytes.Buffer{}, func(string) string { return "" })
	if err != nil {
		t.Fatalf("loadtest: %v\n%s", err, stdout.String())
	}
	journal, err := os.ReadFile(accepted)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	creates := n
	mu.Unlock()
	if lines := strings.Count(string(journal), "\n"); creates == 0 || lines != creates || !strings.Contains(string(journal), `"type":"site.provision"`) {
		t.Errorf("%d creates answered 202, journal:\n%s", creates, journal)
	}
	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "## Faults") || !strings.Contains(string(md), "| redis master | custom |") {
		t.Errorf("report.md does not list the mark:\n%s", md)
	}
}
