package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAPI is just enough of CHOM's API for the mix: operations finish on their
// second poll, backups are missing (404), and tokens listed in failing get
// 503 on GET /sites.
type fakeAPI struct {
	mu      sync.Mutex
	ops     map[string]int // operation ID → polls so far
	n       int
	failing map[string]bool
	// lost, when positive, is how many times a create with a new
	// Idempotency-Key commits but answers 503 (an answer lost on the way)
	// before a resend with that key gets its operation.
	lost  int
	keyed map[string]string // Idempotency-Key → operation ID
	sends map[string]int    // Idempotency-Key → creates received
}

func newFakeAPI(t *testing.T, failing ...string) (*fakeAPI, string) {
	f := &fakeAPI{ops: map[string]int{}, failing: map[string]bool{}}
	for _, tok := range failing {
		f.failing[tok] = true
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv.URL
}

func (f *fakeAPI) newOp() string {
	f.n++
	id := fmt.Sprintf("op_%d", f.n)
	f.ops[id] = 0
	return id
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	path := strings.TrimPrefix(r.URL.Path, "/api/v1")
	reply := func(code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	switch {
	case r.Method == "POST" && path == "/sites":
		_, _ = io.Copy(io.Discard, r.Body)
		key := r.Header.Get("Idempotency-Key")
		if key == "" {
			reply(400, map[string]string{"title": "no key"})
			return
		}
		if f.keyed == nil {
			f.keyed, f.sends = map[string]string{}, map[string]int{}
		}
		id, ok := f.keyed[key]
		if !ok {
			id = f.newOp()
			f.keyed[key] = id
		}
		if f.sends[key]++; f.sends[key] <= f.lost {
			reply(503, map[string]string{"title": "Service unavailable"})
			return
		}
		reply(202, opView{ID: id, Type: "site.provision", Status: "pending", TargetType: "site", TargetID: "site_" + strings.TrimPrefix(id, "op_")})
	case r.Method == "GET" && strings.HasPrefix(path, "/operations/"):
		id := strings.TrimPrefix(path, "/operations/")
		polls, ok := f.ops[id]
		if !ok {
			reply(404, map[string]string{"title": "Not found"})
			return
		}
		f.ops[id] = polls + 1
		status := "running"
		if polls >= 1 {
			status = "succeeded"
		}
		reply(200, opView{ID: id, Status: status, TargetType: "site", TargetID: "site_x"})
	case r.Method == "GET" && path == "/sites":
		if f.failing[tok] {
			reply(503, map[string]string{"title": "Service unavailable"})
			return
		}
		reply(200, map[string]any{"data": []any{}})
	case r.Method == "GET" && strings.HasPrefix(path, "/sites/"):
		reply(200, map[string]string{"id": "site_x"})
	case r.Method == "DELETE" && strings.HasPrefix(path, "/sites/"):
		reply(202, opView{ID: f.newOp(), Status: "pending"})
	default:
		reply(404, map[string]string{"title": "Not found", "detail": "no such route"})
	}
}

func testRunner(t *testing.T, base string, tokens ...string) *Runner {
	t.Helper()
	r, err := New(Config{BaseURL: base, Tokens: tokens, Logger: slog.New(slog.DiscardHandler),
		RequestTimeout: 2 * time.Second, OpTimeout: 2 * time.Second, Drain: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func TestRunUserMix(t *testing.T) {
	t.Parallel()
	_, base := newFakeAPI(t)
	r := testRunner(t, base, "a", "b")
	sc := Scenario{Name: "tiny", Stages: []Stage{{3, 400 * time.Millisecond}, {1, 300 * time.Millisecond}}}
	res, err := r.Run(t.Context(), sc, MixUser)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Ledger.OK() || res.Ledger.Accepted == 0 || res.Ledger.ByStatus["succeeded"] != res.Ledger.Accepted {
		t.Errorf("ledger %+v, want every accepted operation succeeded", res.Ledger)
	}
	if res.Operations.Count != res.Ledger.Accepted-res.Ledger.CheckedAtEnd || res.Operations.MS.P50 <= 0 {
		t.Errorf("operation times %+v, want one per operation the users saw finish (%d)", res.Operations,
			res.Ledger.Accepted-res.Ledger.CheckedAtEnd)
	}
	if res.Overall.Errors.Total != 0 || res.Overall.Requests == 0 {
		t.Errorf("overall: %d requests, errors %v", res.Overall.Requests, res.Overall.Errors)
	}
	var routes []string
	for _, rt := range res.Routes {
		routes = append(routes, rt.Route)
	}
	if got, want := strings.Join(routes, ","), strings.Join([]string{RouteCreateSite, RouteWaitOp, RouteListSites, RouteGetSite, RouteDeleteSite}, ","); got != want {
		t.Errorf("routes %s, want %s (the missing backup route is skipped, not counted)", got, want)
	}
	if !strings.HasPrefix(res.Backup, "skipped: POST /sites/{id}/backups answered 404") {
		t.Errorf("backup step %q", res.Backup)
	}
	if len(res.Stages) != 2 || res.Stages[0].Stage.Users != 3 || res.Stages[1].Stage.Users != 1 {
		t.Errorf("stages %+v", res.Stages)
	}
	// Both sub-second stages begin in second 0: it shows the later one.
	if len(res.Series) == 0 || res.Series[0].Users != 1 || res.Series[0].Requests == 0 {
		t.Errorf("series %+v, want second 0 with requests at 1 user", res.Series)
	}
	if res.Recovery != nil || res.Breaking != nil {
		t.Error("a two-stage ramp-down has neither recovery nor breaking point")
	}
}

func TestRunAcceptMix(t *testing.T) {
	t.Parallel()
	_, base := newFakeAPI(t)
	r := testRunner(t, base)
	res, err := r.Run(t.Context(), AcceptScenario(4, 300*time.Millisecond), MixAccept)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ledger.Tracked || res.Ledger.Accepted == 0 || res.Ledger.Accepted != res.Overall.Requests {
		t.Errorf("ledger %+v for %d requests, want every POST accepted and counted", res.Ledger, res.Overall.Requests)
	}
	if len(res.Routes) != 1 || res.Routes[0].Route != RouteCreateSite {
		t.Errorf("routes %+v, want POST /sites only", res.Routes)
	}
}

// TestRunStopsOnBreak: users 2 and 3 get 503s on GET /sites, so the stage
// with 4 users breaks and the third stage never runs.
func TestRunStopsOnBreak(t *testing.T) {
	t.Parallel()
	_, base := newFakeAPI(t, "t2", "t3")
	// Every user thinks 20ms between iterations, so the failing users (who back
	// off 50ms after a failed one) make a share of the requests that does not
	// depend on how fast this machine runs the healthy ones: about 8% errors.
	r, err := New(Config{BaseURL: base, Tokens: []string{"t0", "t1", "t2", "t3", "t4", "t5"}, Logger: slog.New(slog.DiscardHandler),
		RequestTimeout: 2 * time.Second, OpTimeout: 2 * time.Second, Drain: 2 * time.Second, Think: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	sc := Scenario{Name: "stress", StopOnBreak: true,
		Stages: []Stage{{2, 500 * time.Millisecond}, {4, 500 * time.Millisecond}, {6, 300 * time.Millisecond}}}
	res, err := r.Run(t.Context(), sc, MixUser)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Stages) != 2 || res.StoppedEarly == "" {
		for _, st := range res.Stages {
			t.Logf("stage %d: %d users, %d requests, errors %.2f%%, by class %v", st.Index+1, st.Stage.Users,
				st.Figures.Requests, 100*st.Figures.ErrorRate, st.Figures.Errors)
		}
		t.Fatalf("ran %d stages (stopped early: %q), want 2", len(res.Stages), res.StoppedEarly)
	}
	bp := res.Breaking
	if bp == nil || !bp.Reached || bp.Users != 4 || bp.LastGoodUsers != 2 {
		t.Fatalf("breaking point %+v, want 4 users after 2", bp)
	}
	if !strings.Contains(bp.FailureMode, "5xx 503") || !strings.Contains(bp.FailureMode, "GET /sites: HTTP 503 Service unavailable") {
		t.Errorf("failure mode %q", bp.FailureMode)
	}
	if !res.Ledger.OK() {
		t.Errorf("ledger %+v", res.Ledger)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	t.Parallel()
	_, base := newFakeAPI(t)
	r := testRunner(t, base, "a")
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := r.Run(ctx, Scenario{Name: "long", Stages: []Stage{{2, time.Hour}}}, MixUser)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's", err)
	}
	if time.Since(start) > 10*time.Second || res == nil || len(res.Stages) != 1 {
		t.Errorf("took %v, result %+v", time.Since(start), res)
	}
}

func TestLoopbackOnly(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"http://192.0.2.10:8080", "http://example.com", "https://10.0.0.1"} {
		if _, err := New(Config{BaseURL: u, Logger: slog.New(slog.DiscardHandler)}); !errors.Is(err, ErrNotLoopback) {
			t.Errorf("New(%s) = %v, want ErrNotLoopback", u, err)
		}
		if _, err := New(Config{BaseURL: u, AllowRemote: true, Logger: slog.New(slog.DiscardHandler)}); err != nil {
			t.Errorf("New(%s, AllowRemote) = %v", u, err)
		}
	}
	for _, u := range []string{"http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:80"} {
		if err := CheckLoopbackURL(u); err != nil {
			t.Errorf("CheckLoopbackURL(%s) = %v", u, err)
		}
	}
	for _, u := range []string{"postgres://chom@db.internal:5432/chom", "redis://10.1.1.1:6379/0"} {
		if err := CheckLoopbackURL(u); !errors.Is(err, ErrNotLoopback) {
			t.Errorf("CheckLoopbackURL(%s) = %v, want ErrNotLoopback", u, err)
		}
	}
	// The dialer refuses a non-loopback destination before connecting, whatever
	// the request: a redirect or a DNS answer cannot send load elsewhere.
	r := testRunner(t, "http://127.0.0.1:1")
	_, err := r.client.Get("http://192.0.2.10:9/")
	if !errors.Is(err, ErrNotLoopback) {
		t.Errorf("dial to 192.0.2.10: %v, want ErrNotLoopback", err)
	}
}

// TestRunFinish closes Config.Finish during a long first stage: the run ends
// then, skips its second stage and still checks its ledger.
func TestRunFinish(t *testing.T) {
	t.Parallel()
	_, base := newFakeAPI(t)
	finish := make(chan struct{})
	r, err := New(Config{BaseURL: base, Tokens: []string{"a"}, Logger: slog.New(slog.DiscardHandler),
		RequestTimeout: 2 * time.Second, OpTimeout: 2 * time.Second, Drain: 2 * time.Second, Finish: finish})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	time.AfterFunc(500*time.Millisecond, func() { close(finish) })
	res, err := r.Run(t.Context(), Scenario{Name: "long", Stages: []Stage{{2, time.Hour}, {4, time.Hour}}}, MixUser)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Stages) != 1 || res.Seconds > 60 || !strings.Contains(res.StoppedEarly, "finished in stage 1") || !strings.Contains(res.StoppedEarly, "(by the caller); later stages not run") {
		t.Errorf("stages %d, %.1fs, stopped early %q: want the first stage ended by Finish, the second not run", len(res.Stages), res.Seconds, res.StoppedEarly)
	}
	if !res.Ledger.OK() || res.Ledger.Accepted == 0 {
		t.Errorf("ledger %+v", res.Ledger)
	}
}
