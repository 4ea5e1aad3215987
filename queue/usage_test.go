package queue_test

import (
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/queue"
)

func TestDecodeUsageMeterPayload(t *testing.T) {
	t.Parallel()
	const ten = "ten_0193ab45cd67ef0123456789abcdef01"
	for _, tc := range []struct {
		name, payload string
		ok            bool
	}{
		{"valid", `{"tenant_id":"` + ten + `","period_start":"2026-12-01T10:00:00Z","period_end":"2026-12-01T11:00:00Z"}`, true},
		{"not json", `{`, false},
		{"unknown field", `{"tenant_id":"` + ten + `","period_start":"2026-12-01T10:00:00Z","period_end":"2026-12-01T11:00:00Z","site":"x"}`, false},
		{"trailing data", `{"tenant_id":"` + ten + `","period_start":"2026-12-01T10:00:00Z","period_end":"2026-12-01T11:00:00Z"} {}`, false},
		{"camelCase", `{"tenantId":"` + ten + `","period_start":"2026-12-01T10:00:00Z","period_end":"2026-12-01T11:00:00Z"}`, false},
		{"no tenant", `{"period_start":"2026-12-01T10:00:00Z","period_end":"2026-12-01T11:00:00Z"}`, false},
		{"tenant with a colon", `{"tenant_id":"ten_a:b","period_start":"2026-12-01T10:00:00Z","period_end":"2026-12-01T11:00:00Z"}`, false},
		{"no end", `{"tenant_id":"` + ten + `","period_start":"2026-12-01T10:00:00Z"}`, false},
		{"end before start", `{"tenant_id":"` + ten + `","period_start":"2026-12-01T11:00:00Z","period_end":"2026-12-01T10:00:00Z"}`, false},
	} {
		_, err := queue.DecodeUsageMeterPayload([]byte(tc.payload))
		if tc.ok != (err == nil) {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && (!errors.Is(err, queue.ErrBadPayload) || !errors.Is(err, asynq.SkipRetry)) {
			t.Errorf("%s: %v does not wrap ErrBadPayload and SkipRetry", tc.name, err)
		}
	}
}

func TestUsageMeterTask(t *testing.T) {
	t.Parallel()
	const ten = "ten_0193ab45cd67ef0123456789abcdef01"
	start := time.Date(2026, 12, 1, 11, 0, 0, 0, time.FixedZone("CET", 3600)) // 10:00 UTC
	task, err := queue.NewUsageMeterTask(queue.UsageMeterPayload{TenantID: ten, PeriodStart: start, PeriodEnd: start.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if want := "meter:" + ten + ":2026-12-01T10:00:00Z"; queue.UsageMeterTaskID(ten, start) != want {
		t.Errorf("task ID %s, want %s", queue.UsageMeterTaskID(ten, start), want)
	}
	if task.Type() != queue.TypeUsageMeter {
		t.Errorf("type %s", task.Type())
	}
	p, err := queue.DecodeUsageMeterPayload(task.Payload())
	if err != nil || p.PeriodStart.Location() != time.UTC || !p.PeriodStart.Equal(start) {
		t.Errorf("payload %+v, %v", p, err)
	}
	if _, err := queue.NewUsageMeterTask(queue.UsageMeterPayload{TenantID: "x", PeriodStart: start, PeriodEnd: start}); err == nil {
		t.Error("NewUsageMeterTask built a task for a bad payload")
	}
	if _, err := queue.NewUsageMeterSweepTask(start, 0); err == nil {
		t.Error("NewUsageMeterSweepTask accepted a zero interval")
	}
}
