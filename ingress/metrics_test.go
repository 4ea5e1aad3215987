package ingress_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/chomhq/chom/ingress"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/metrics"
	"github.com/chomhq/chom/models"
)

// tenantStore returns a migrated SQLite file, a store over it and a tenant
// named name in it.
func tenantStore(t *testing.T, name string) (*bun.DB, *models.Store, *models.Tenant) {
	t.Helper()
	db := testenv.SQLite(t)
	if _, err := models.MigrateUp(t.Context(), db); err != nil {
		t.Fatal(err)
	}
	store, err := models.New(models.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	tn, err := store.EnsureTenant(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return db, store, tn
}

// newMeteredAPI builds the API over a migrated SQLite file with m, a token cache
// and a rate of 2 requests per token, and returns it with a read token.
func newMeteredAPI(t *testing.T, m *metrics.Metrics) (*ingress.API, string) {
	t.Helper()
	_, store, tn := tenantStore(t, "metrics")
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
	// Every route and status of the OpenAPI document is there, at zero unless
	// a request above was answered with it; the rest appeared on first use.
	wantHTTP := documentedZeros(t)
	for k, v := range map[string]float64{
		"GET /api/v1/health 200": 1, "GET /api/v1/sites 200": 1, "GET /api/v1/sites 429": 1, "GET /api/v1/sites/:id 404": 1,
		"GET /metrics 200": 1, "GET unmatched 404": 2, "OTHER unmatched 405": 1,
	} {
		wantHTTP[k] = v
	}
	if diff := cmp.Diff(wantHTTP, httpCounts(t, m)); diff != "" {
		t.Errorf("chom_http_requests_total by method, route and status (-want +got):\n%s", diff)
	}
	want := `
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
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(want),
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

// Before any request, the ingress's registry holds a zero counter for every
// route and status code the OpenAPI document lists, and a duration histogram
// for each of those routes: nothing else.
func TestDocumentedHTTPSeriesAtStart(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	newMeteredAPI(t, m)
	want := documentedZeros(t)
	if len(want) < 100 {
		t.Fatalf("only %d documented route statuses: the OpenAPI document was not read", len(want))
	}
	if diff := cmp.Diff(want, httpCounts(t, m)); diff != "" {
		t.Errorf("chom_http_requests_total before any request (-documented +got):\n%s", diff)
	}
	routes := map[string]bool{}
	for k := range want {
		routes[k[:strings.LastIndexByte(k, ' ')]] = true
	}
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		if mf.GetName() != "chom_http_request_duration_seconds" {
			continue
		}
		for _, s := range mf.GetMetric() {
			l := labels(s.GetLabel())
			got[l["method"]+" "+l["route"]] = s.GetHistogram().GetSampleCount() == 0
		}
	}
	wantHist := map[string]bool{}
	for r := range routes {
		wantHist[r] = true
	}
	if diff := cmp.Diff(wantHist, got); diff != "" {
		t.Errorf("empty duration histograms by route (-documented +got):\n%s", diff)
	}
}

// documentedZeros reads the OpenAPI document the way an operator would and
// returns "METHOD /api/v1/route/:id STATUS" → 0 for each documented response.
func documentedZeros(t *testing.T) map[string]float64 {
	t.Helper()
	var doc struct {
		Servers []struct {
			URL string `json:"url"`
		} `json:"servers"`
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(ingress.OpenAPIDocument(), &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	param := regexp.MustCompile(`\{([a-z_]+)\}`)
	for path, ops := range doc.Paths {
		route := doc.Servers[0].URL + param.ReplaceAllString(path, ":$1")
		for method, raw := range ops {
			if !slices.Contains([]string{"get", "put", "post", "delete", "patch", "head", "options"}, method) {
				continue // parameters, summary…
			}
			var op struct {
				Responses map[string]any `json:"responses"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			for code := range op.Responses {
				if _, err := strconv.Atoi(code); err == nil {
					out[strings.ToUpper(method)+" "+route+" "+code] = 0
				}
			}
		}
	}
	return out
}

// httpCounts gathers chom_http_requests_total as "METHOD route STATUS" → value.
func httpCounts(t *testing.T, m *metrics.Metrics) map[string]float64 {
	t.Helper()
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "chom_http_requests_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			l := labels(s.GetLabel())
			out[l["method"]+" "+l["route"]+" "+l["status"]] = s.GetCounter().GetValue()
		}
	}
	return out
}

func labels(pairs []*dto.LabelPair) map[string]string {
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		out[p.GetName()] = p.GetValue()
	}
	return out
}
