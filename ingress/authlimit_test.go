package ingress_test

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/metrics"
	"github.com/chomhq/chom/models"
)

// tokenQueries counts the statements that read api_tokens.
type tokenQueries struct{ n atomic.Int64 }

func (q *tokenQueries) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context {
	return ctx
}
func (q *tokenQueries) AfterQuery(_ context.Context, e *bun.QueryEvent) {
	if strings.Contains(e.Query, "api_tokens") {
		q.n.Add(1)
	}
}

// clock is a settable Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func randomToken(t *testing.T) string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	tok := models.TokenPrefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
	if !models.WellFormedToken(tok) {
		t.Fatalf("random token %q is not well formed", tok)
	}
	return tok
}

// The attack: token guessing (or a flood meant to load the database) with
// random well-formed tokens from one address. Past the burst (50) no lookup
// reaches the database beyond those already in flight when the bucket
// emptied (at most one per concurrent sender): the answers are 429 problem+json
// with Retry-After, missing and malformed credentials included; the bucket
// refills at the rate (10/s); another address is unaffected; a valid token
// already in the token cache still works from the limited address.
func TestUnauthenticatedFloodIsLimitedBeforeTheDatabase(t *testing.T) {
	t.Parallel()
	db, store, tn := tenantStore(t, "flood")
	valid, _, err := store.CreateToken(t.Context(), models.NewTokenParams{TenantID: tn.ID, Name: "t", Scopes: []string{models.ScopeRead}})
	if err != nil {
		t.Fatal(err)
	}
	queries := &tokenQueries{}
	db.AddQueryHook(queries)
	clk := &clock{t: time.Now()}
	m := metrics.New()
	api, err := ingress.New(ingress.Config{
		Store: store, Enqueuer: nopEnqueuer{}, Inspector: nopInspector{}, Metrics: m, Now: clk.now,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), AuthFailRate: 10, AuthFailBurst: 50,
	})
	if err != nil {
		t.Fatal(err)
	}
	do := func(addr, auth string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/api/v1/sites", nil)
		req.RemoteAddr = addr
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		api.Handler().ServeHTTP(rec, req)
		return rec
	}
	const attacker, bystander = "203.0.113.7:40000", "198.51.100.9:50000"

	// The valid token is used once, so the token cache holds it.
	if r := do(attacker, "Bearer "+valid); r.Code != http.StatusOK {
		t.Fatalf("valid token: %d %s", r.Code, r.Body)
	}
	before := queries.n.Load()

	const flood = 400
	var statuses [600]atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 { // senders
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range flood / 8 {
				// Another source port each time: the address is what counts.
				r := do("203.0.113.7:"+string(rune('0'+w))+"1000", "Bearer "+randomToken(t))
				statuses[r.Code].Add(1)
				if r.Code == http.StatusTooManyRequests {
					var p struct {
						Type string `json:"type"`
					}
					if r.Header().Get("Retry-After") != "1" || json.Unmarshal(r.Body.Bytes(), &p) != nil ||
						p.Type != "urn:chom:problem:rate-limited" || !strings.HasPrefix(r.Header().Get("Content-Type"), "application/problem+json") {
						t.Errorf("429: Retry-After %q, %s %s", r.Header().Get("Retry-After"), r.Header().Get("Content-Type"), r.Body)
					}
				}
			}
		}()
	}
	wg.Wait()
	const senders = 8
	lookups := queries.n.Load() - before
	if lookups < 50 || lookups > 50+senders {
		t.Errorf("%d random tokens from one address made %d token lookups, want the burst (50) plus at most one in flight per sender (%d)",
			flood, lookups, senders)
	}
	if statuses[401].Load() != lookups || statuses[429].Load() != flood-lookups {
		t.Errorf("answers: %d×401, %d×429; want one 401 per lookup (%d) and 429 for the rest", statuses[401].Load(), statuses[429].Load(), lookups)
	}

	// Missing and malformed credentials from the limited address: 429 too.
	for _, auth := range []string{"", "Bearer hunter2", "Basic " + "Og=="} {
		if r := do(attacker, auth); r.Code != http.StatusTooManyRequests {
			t.Errorf("auth %q from the limited address: %d, want 429", auth, r.Code)
		}
	}
	// The cached valid token still works from there, with no lookup.
	mark := queries.n.Load()
	if r := do(attacker, "Bearer "+valid); r.Code != http.StatusOK {
		t.Errorf("cached valid token from the limited address: %d %s", r.Code, r.Body)
	}
	// Another address is unaffected: its bad token is looked up and is a 401.
	if r := do(bystander, "Bearer "+randomToken(t)); r.Code != http.StatusUnauthorized {
		t.Errorf("another address: %d, want 401", r.Code)
	}
	if got := queries.n.Load() - mark; got != 1 {
		t.Errorf("cached token + another address's bad token: %d lookups, want 1", got)
	}

	// One second later the bucket has 10 attempts again, and no more.
	clk.advance(time.Second)
	mark = queries.n.Load()
	codes := map[int]int{}
	for range 30 {
		codes[do(attacker, "Bearer "+randomToken(t)).Code]++
	}
	if got := queries.n.Load() - mark; got != 10 || codes[401] != 10 || codes[429] != 20 {
		t.Errorf("after 1s: %d lookups, answers %v; want 10 lookups, 10×401 and 20×429", got, codes)
	}

	// What monitoring sees: every failure by reason, every refusal.
	want := map[string]float64{
		`chom_auth_failures_total{reason="unknown"}`: float64(lookups) + 1 + 10, `chom_auth_failures_total{reason="missing"}`: 0,
		`chom_auth_failures_total{reason="malformed"}`: 0, `chom_auth_rate_limited_total`: float64(flood-lookups) + 3 + 20,
	}
	got := map[string]float64{}
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range s.GetLabel() {
				name += "{" + l.GetName() + `="` + l.GetValue() + `"}`
			}
			if _, ok := want[name]; ok {
				got[name] = s.GetCounter().GetValue()
			}
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("security series (-want +got):\n%s", diff)
	}
}

// Valid tokens never use up their address's attempts, however many arrive at
// once: behind a load balancer (one address) after a restart (an empty token
// cache), 200 clients with valid tokens of their own, 100 at a time, are all
// served. Reserving an attempt before each lookup refused every one past the
// burst.
func TestManyValidTokensFromOneAddress(t *testing.T) {
	t.Parallel()
	_, store, tn := tenantStore(t, "behind-lb")
	tokens := make([]string, 200)
	var err error
	for i := range tokens {
		if tokens[i], _, err = store.CreateToken(t.Context(), models.NewTokenParams{TenantID: tn.ID, Name: "t", Scopes: []string{models.ScopeRead}}); err != nil {
			t.Fatal(err)
		}
	}
	api, err := ingress.New(ingress.Config{
		Store: store, Enqueuer: nopEnqueuer{}, Inspector: nopInspector{}, Metrics: metrics.New(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), AuthFailRate: 10, AuthFailBurst: 50,
	})
	if err != nil {
		t.Fatal(err)
	}
	var codes [600]atomic.Int64
	var wg sync.WaitGroup
	work := make(chan string)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for tok := range work {
				req := httptest.NewRequest("GET", "/api/v1/sites", nil)
				req.RemoteAddr = "192.0.2.80:443"
				req.Header.Set("Authorization", "Bearer "+tok)
				rec := httptest.NewRecorder()
				api.Handler().ServeHTTP(rec, req)
				codes[rec.Code].Add(1)
			}
		}()
	}
	for _, tok := range tokens {
		work <- tok
	}
	close(work)
	wg.Wait()
	if codes[http.StatusOK].Load() != int64(len(tokens)) {
		t.Errorf("%d valid tokens from one address: %d×200, %d×429, %d×401; want all 200",
			len(tokens), codes[200].Load(), codes[429].Load(), codes[401].Load())
	}
}
