package metrics_test

import (
	"context"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/metrics"
)

// What the instrumentation adds to one request of the accept path: one
// ObserveHTTP and a few query-hook calls.
//
//	go test -run '^$' -bench . -benchmem ./metrics/
func BenchmarkObserveHTTP(b *testing.B) {
	m := metrics.New()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.ObserveHTTP("POST", "/api/v1/sites", 202, time.Millisecond)
		}
	})
}

func BenchmarkQueryHook(b *testing.B) {
	hook := metrics.New().QueryHook()
	ev := &bun.QueryEvent{Query: "INSERT INTO operations (id) VALUES ('x')", StartTime: time.Now()}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			hook.AfterQuery(hook.BeforeQuery(ctx, ev), ev)
		}
	})
}
