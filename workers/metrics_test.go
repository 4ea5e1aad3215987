package workers_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/metrics"
	"github.com/chomhq/chom/queue"
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
	// Every kind of queue.TaskKinds is there at zero from the start; the
	// attempts above are the only non-zero series.
	wantJobs := map[string]float64{
		"unknown/site:provision/deferred": 1, "unknown/site:provision/failed": 1, "unknown/site:provision/succeeded": 2,
	}
	wantFailed := map[string]float64{"unknown": 1}
	for _, k := range queue.TaskKinds() {
		for _, status := range []string{metrics.JobSucceeded, metrics.JobFailed, metrics.JobDeferred} {
			wantJobs[k.Queue+"/"+k.Type+"/"+status] = 0
		}
		wantFailed[k.Queue] = 0
	}
	gotJobs, gotFailed := map[string]float64{}, map[string]float64{}
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range s.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			switch mf.GetName() {
			case "chom_queue_jobs_total":
				gotJobs[l["queue"]+"/"+l["type"]+"/"+l["status"]] = s.GetCounter().GetValue()
			case "chom_queue_jobs_failed_total":
				gotFailed[l["queue"]] = s.GetCounter().GetValue()
			}
		}
	}
	if diff := cmp.Diff(wantJobs, gotJobs); diff != "" {
		t.Errorf("chom_queue_jobs_total by queue/type/status (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantFailed, gotFailed); diff != "" {
		t.Errorf("chom_queue_jobs_failed_total by queue (-want +got):\n%s", diff)
	}
	if len(queue.TaskKinds()) < 10 {
		t.Errorf("queue.TaskKinds() = %v: too few kinds to be the task contract", queue.TaskKinds())
	}
}
