package workers_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/metrics"
	"github.com/chomhq/chom/workers"
)

// The middleware records each attempt's outcome and passes the handler's error
// through unchanged. (Outside an asynq server the queue is unknown; the
// integration test sees the real queue label.)
func TestObserveTasks(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	boom := errors.New("boom")
	h := workers.ObserveTasks(m)(asynq.HandlerFunc(func(_ context.Context, t *asynq.Task) error {
		switch string(t.Payload()) {
		case "fail":
			return boom
		case "defer":
			return fmt.Errorf("vps busy: %w", drivers.ErrDeferred)
		}
		return nil
	}))
	for _, p := range []string{"ok", "ok", "fail", "defer"} {
		err := h.ProcessTask(t.Context(), asynq.NewTask("site:provision", []byte(p)))
		if want := map[string]error{"ok": nil, "fail": boom, "defer": drivers.ErrDeferred}[p]; !errors.Is(err, want) || (want == nil && err != nil) {
			t.Fatalf("payload %s: err = %v, want %v", p, err, want)
		}
	}
	want := `
# HELP chom_queue_jobs_total Task attempts finished by this worker, by queue, task type and status (succeeded; failed when the attempt returned an error; deferred when a breaker or limit put it off).
# TYPE chom_queue_jobs_total counter
chom_queue_jobs_total{queue="unknown",status="deferred",type="site:provision"} 1
chom_queue_jobs_total{queue="unknown",status="failed",type="site:provision"} 1
chom_queue_jobs_total{queue="unknown",status="succeeded",type="site:provision"} 2
# HELP chom_queue_jobs_failed_total Task attempts that returned an error, by queue.
# TYPE chom_queue_jobs_failed_total counter
chom_queue_jobs_failed_total{queue="unknown"} 1
`
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(want), "chom_queue_jobs_total", "chom_queue_jobs_failed_total"); err != nil {
		t.Error(err)
	}
}
