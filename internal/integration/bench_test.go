package integration

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/loadtest"
	"github.com/chomhq/chom/metrics"
)

// The accept path, measured on real PostgreSQL and Redis: POST /sites through the
// whole handler chain (auth, decode, validate, idempotency, one transaction,
// enqueue), 200 requests in flight. BenchmarkAcceptBaseline runs, against the same
// servers, the naive handler the issue quotes (bind, validate, one INSERT, one
// enqueue) so the two are compared in the same run:
//
//	go test -run '^$' -bench 'Accept' -benchtime 20000x ./internal/integration/
func BenchmarkAcceptCreateSite(b *testing.B) {
	for _, withKey := range []bool{false, true} {
		b.Run(map[bool]string{false: "plain", true: "with_idempotency_key"}[withKey], func(b *testing.B) {
			benchAccept(b, newBenchStack(b), withKey)
		})
	}
}

// BenchmarkAcceptCreateSiteMetrics is the plain accept path with every metric
// on (HTTP middleware, caches, the query hook), as `chom ingress` runs it, to
// compare with BenchmarkAcceptCreateSite/plain:
//
//	go test -run '^$' -bench 'AcceptCreateSite$/plain' -benchtime 20000x ./internal/integration/
//	go test -run '^$' -bench 'AcceptCreateSiteMetrics' -benchtime 20000x ./internal/integration/
func BenchmarkAcceptCreateSiteMetrics(b *testing.B) {
	db := testenv.Postgres(b)
	db.SetMaxOpenConns(40)
	db.SetMaxIdleConns(40)
	benchAccept(b, newStack(b, db, stackOpts{noWorker: true, tokenTTL: 30 * time.Second, metrics: metrics.New()}), false)
}

// benchAccept posts new sites through s's API with 200 requests in flight.
func benchAccept(b *testing.B, s *stack, withKey bool) {
	var n atomic.Int64
	h := s.api.Handler()
	b.SetParallelism(100) // 2 cores × 100 = 200 requests in flight
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			req := httptest.NewRequest("POST", "/api/v1/sites",
				strings.NewReader(fmt.Sprintf(`{"domain":"b%d.bench.example","site_type":"html"}`, i)))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+s.tokenA)
			if withKey {
				req.Header.Set("Idempotency-Key", fmt.Sprintf("bench-%d", i))
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusAccepted {
				b.Errorf("status %d: %s", w.Code, w.Body)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

// BenchmarkAcceptBaseline runs the naive handler that `chom-loadtest` also
// measures (loadtest.NewBaseline), on the same servers as the benchmark above.
func BenchmarkAcceptBaseline(b *testing.B) {
	s := newBenchStack(b)
	r, err := loadtest.NewBaseline(loadtest.BaselineConfig{DB: s.db, Redis: s.workerRedis, TenantID: s.tenantA})
	if err != nil {
		b.Fatal(err)
	}
	var n atomic.Int64
	b.SetParallelism(100)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			req := httptest.NewRequest("POST", "/api/v1/sites", strings.NewReader(fmt.Sprintf(`{"domain":"b%d.bench.example","site_type":"html"}`, i)))
			req.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			r.ServeHTTP(w, req)
			if w.Code != http.StatusAccepted {
				b.Errorf("status %d: %s", w.Code, w.Body)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

// Polling an operation: auth from the cache, one indexed read, ETag.
func BenchmarkGetOperation(b *testing.B) {
	s := newBenchStack(b)
	op := s.createSite(s.tokenA, "poll.bench.example", "html")
	h := s.api.Handler()
	b.SetParallelism(100)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest("GET", "/api/v1/operations/"+op.ID, nil)
			req.Header.Set("Authorization", "Bearer "+s.tokenA)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				b.Errorf("status %d", w.Code)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

// newBenchStack is a PostgreSQL stack with no worker (accept only), a token cache
// as in production, and a pool sized for 200 concurrent requests.
func newBenchStack(b *testing.B) *stack {
	b.Helper()
	db := testenv.Postgres(b)
	db.SetMaxOpenConns(40)
	db.SetMaxIdleConns(40)
	return newStack(b, db, stackOpts{noWorker: true, tokenTTL: 30 * time.Second})
}
