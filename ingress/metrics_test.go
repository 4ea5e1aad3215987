package ingress_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/metrics"
	"github.com/chomhq/chom/models"
)

// newMeteredAPI builds the API over a migrated SQLite file with m, a token cache
// and a rate of 2 requests per token, and returns it with a read token.
func newMeteredAPI(t *testing.T, m *metrics.Metrics) (*ingress.API, string) {
	t.Helper()
	db := testenv.SQLite(t)
	if _, err := models.MigrateUp(t.Context(), db); err != nil {
		t.Fatal(err)
	}
	store, err := models.New(models.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	tn, err := store.EnsureTenant(t.Context(), "metrics")
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := store.CreateToken(t.Context(), models.NewTokenParams{TenantID: tn.ID, Name: "t", Scopes: []string{models.ScopeRead}})
	if err != nil {
		t.Fatal(err)
	}
	api, err := ingress.New(ingress.Config{
		Store: store, Enqueuer: nopEnqueuer{}, Inspector: nopInspector{}, Metrics: m,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RateLimit: 0.001, RateBurst: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	return api, tok
}

func serve(h http.Handler, method, path, token string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// Every request is counted under its route template, paths that match no route
// under one "unmatched" series (so arbitrary URLs cannot grow the label set), and
// the token cache, the rate limiter and /metrics itself report.
func TestMetricsMiddleware(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	api, tok := newMeteredAPI(t, m)
	h := api.Handler()
	for _, c := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/api/v1/health", "", 200},
		{"GET", "/nope/1", "", 404},
		{"GET", "/nope/2/deeper", "", 404},
		{"BREW", "/api/v1/health", "", 405},
		{"GET", "/api/v1/sites", tok, 200},
		{"GET", "/api/v1/sites/site_x", tok, 404},
		{"GET", "/api/v1/sites", tok, 429},
	} {
		if rec := serve(h, c.method, c.path, c.token); rec.Code != c.want {
			t.Fatalf("%s %s = %d, want %d: %s", c.method, c.path, rec.Code, c.want, rec.Body)
		}
	}
	rec := serve(h, "GET", ingress.MetricsPath, "")
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics = %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	want := `
# HELP chom_http_requests_total HTTP requests answered by the ingress, by method, route template (unmatched for no route) and status.
# TYPE chom_http_requests_total counter
chom_http_requests_total{method="GET",route="/api/v1/health",status="200"} 1
chom_http_requests_total{method="GET",route="/api/v1/sites",status="200"} 1
chom_http_requests_total{method="GET",route="/api/v1/sites",status="429"} 1
chom_http_requests_total{method="GET",route="/api/v1/sites/:id",status="404"} 1
chom_http_requests_total{method="GET",route="/metrics",status="200"} 1
chom_http_requests_total{method="GET",route="unmatched",status="404"} 2
chom_http_requests_total{method="OTHER",route="unmatched",status="405"} 1
# HELP chom_cache_hits_total Lookups answered from an in-process cache (token, operation).
# TYPE chom_cache_hits_total counter
chom_cache_hits_total{cache="operation"} 0
chom_cache_hits_total{cache="token"} 2
# HELP chom_cache_misses_total Lookups an in-process cache had to pass to the database.
# TYPE chom_cache_misses_total counter
chom_cache_misses_total{cache="operation"} 0
chom_cache_misses_total{cache="token"} 1
# HELP chom_rate_limited_total Requests refused with 429 because their API token was over its rate.
# TYPE chom_rate_limited_total counter
chom_rate_limited_total 1
# HELP chom_http_requests_in_flight HTTP requests being served now.
# TYPE chom_http_requests_in_flight gauge
chom_http_requests_in_flight 0
`
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(want), "chom_http_requests_total",
		"chom_cache_hits_total", "chom_cache_misses_total", "chom_rate_limited_total", "chom_http_requests_in_flight"); err != nil {
		t.Error(err)
	}
	if !strings.Contains(rec.Body.String(), `chom_http_requests_total{method="GET",route="/api/v1/health",status="200"} 1`) {
		t.Errorf("/metrics body lacks the health request:\n%.2000s", rec.Body)
	}
	if strings.Contains(rec.Body.String(), tok) || strings.Contains(rec.Body.String(), "/nope") {
		t.Error("/metrics shows a token or a raw path")
	}
}

// Without Config.Metrics there is no /metrics route.
func TestNoMetricsRouteWithoutMetrics(t *testing.T) {
	t.Parallel()
	api := newAPI(t)
	if rec := serve(api.Handler(), "GET", ingress.MetricsPath, ""); rec.Code != http.StatusNotFound {
		t.Errorf("GET /metrics without metrics = %d, want 404", rec.Code)
	}
}
