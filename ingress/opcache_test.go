package ingress_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/metrics"
	"github.com/chomhq/chom/models"
)

// changeFeed is an OperationWatcher driven by the test: announce plays a
// worker announcing a change of the operation.
type changeFeed struct {
	mu  sync.Mutex
	fns []func(string)
}

func (f *changeFeed) Watch(string) (<-chan struct{}, func()) { return nil, func() {} }

func (f *changeFeed) OnChange(fn func(string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fns = append(f.fns, fn)
}

func (f *changeFeed) announce(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fn := range f.fns {
		fn(id)
	}
}

// A poll answered from the operation cache, where the body and ETag are kept
// rendered, is byte for byte what an API without the cache answers from the
// database (status, body and headers), and its body is the operation exactly
// as gin's c.JSON encodes it in the listing, before and after the operation
// finishes. It is served from the cache (the hit counter says so), the
// rendering follows a change as soon as it is announced, If-None-Match with
// the cached ETag answers 304, and another tenant's token gets 404 for an
// operation in the cache.
func TestCachedPollMatchesDatabase(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, store, tn := tenantStore(t, "cached")
	other, err := store.EnsureTenant(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	token := func(tenant string) string {
		tok, _, err := store.CreateToken(ctx, models.NewTokenParams{TenantID: tenant, Name: "t", Scopes: []string{models.ScopeRead}})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tok, otherTok := token(tn.ID), token(other.ID)
	acc, err := store.CreateSite(ctx, models.CreateSiteParams{Accept: models.Accept{TenantID: tn.ID, Actor: "tok", RequestID: "req"},
		Domain: "cached.example", SiteType: "html"})
	if err != nil {
		t.Fatal(err)
	}
	opID := acc.Operation.ID
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	feed := &changeFeed{}
	m := metrics.New()
	cached, err := ingress.New(ingress.Config{Store: store, Enqueuer: nopEnqueuer{}, Inspector: nopInspector{}, Logger: logger,
		Watcher: feed, Metrics: m, OperationCacheTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	uncached, err := ingress.New(ingress.Config{Store: store, Enqueuer: nopEnqueuer{}, Inspector: nopInspector{}, Logger: logger,
		OperationCacheTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	get := func(api *ingress.API, path, tok string, header ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("X-Request-ID", "req-cached") // the only header that would differ
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		rec := httptest.NewRecorder()
		api.Handler().ServeHTTP(rec, req)
		return rec
	}
	poll := func(api *ingress.API, tok string, header ...string) *httptest.ResponseRecorder {
		return get(api, "/api/v1/operations/"+opID, tok, header...)
	}
	// The listing still encodes its views with gin's c.JSON: its one item is
	// the reference the pre-rendered body must equal byte for byte.
	listed := func(step string) (body, contentType string) {
		t.Helper()
		r := get(uncached, "/api/v1/operations", tok)
		b, ok := strings.CutPrefix(r.Body.String(), `{"data":[`)
		if b, ok2 := strings.CutSuffix(b, `]}`); ok && ok2 && r.Code == http.StatusOK {
			return b, r.Header().Get("Content-Type")
		}
		t.Fatalf("%s: listing = %d %s, want one operation", step, r.Code, r.Body)
		return "", ""
	}
	hits := func() float64 {
		t.Helper()
		mfs, err := m.Gatherer().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "chom_cache_hits_total" {
				continue
			}
			for _, s := range mf.GetMetric() {
				if labels(s.GetLabel())["cache"] == "operation" {
					return s.GetCounter().GetValue()
				}
			}
		}
		return 0
	}
	same := func(step string, wantStatus string) {
		t.Helper()
		want := poll(uncached, tok)
		if want.Code != http.StatusOK {
			t.Fatalf("%s: uncached poll = %d %s", step, want.Code, want.Body)
		}
		before := hits()
		got := poll(cached, tok)
		if hits() != before+1 {
			t.Errorf("%s: the poll was not answered from the cache (hits %v → %v)", step, before, hits())
		}
		if got.Code != want.Code || got.Body.String() != want.Body.String() {
			t.Errorf("%s: cached poll = %d %s\nwant %d %s", step, got.Code, got.Body, want.Code, want.Body)
		}
		if body, ct := listed(step); got.Body.String() != body || got.Header().Get("Content-Type") != ct {
			t.Errorf("%s: poll body %s (%s)\nwant, as the listing encodes it, %s (%s)", step, got.Body, got.Header().Get("Content-Type"), body, ct)
		}
		for _, h := range []string{"Content-Type", "ETag", "Cache-Control", "Retry-After", "X-Request-ID"} {
			if g, w := got.Header().Values(h), want.Header().Values(h); fmt.Sprint(g) != fmt.Sprint(w) {
				t.Errorf("%s: cached poll's %s = %q, want %q", step, h, g, w)
			}
		}
		var v ingress.OperationView
		if err := json.Unmarshal(got.Body.Bytes(), &v); err != nil || v.Status != wantStatus {
			t.Errorf("%s: status %q (%v), want %q", step, v.Status, err, wantStatus)
		}
		if r := poll(cached, tok, "If-None-Match", got.Header().Get("ETag")); r.Code != http.StatusNotModified || r.Body.Len() != 0 {
			t.Errorf("%s: If-None-Match with the cached ETag = %d %q, want 304 and no body", step, r.Code, r.Body)
		}
		if r := poll(cached, otherTok); r.Code != http.StatusNotFound {
			t.Errorf("%s: another tenant's poll of the cached operation = %d %s, want 404", step, r.Code, r.Body)
		}
	}
	if r := poll(cached, tok); r.Code != http.StatusOK { // fills the cache
		t.Fatalf("first poll = %d %s", r.Code, r.Body)
	}
	same("pending", models.OpPending)

	if _, err := store.FinishOperation(ctx, opID, models.Outcome{Status: models.OpSucceeded, Result: map[string]string{"site_id": acc.Operation.TargetID}}, nil); err != nil {
		t.Fatal(err)
	}
	feed.announce(opID) // as a worker does after it finished the operation
	if r := poll(cached, tok); r.Code != http.StatusOK {
		t.Fatalf("poll after the change = %d %s", r.Code, r.Body)
	}
	same("succeeded", models.OpSucceeded)
}
