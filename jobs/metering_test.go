package jobs_test

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// fakeUsage is a UsageProbe whose answers are set per site ID, and which counts
// its calls.
type fakeUsage struct {
	mu    sync.Mutex
	disk  map[string]int64
	bw    map[string]drivers.Bandwidth
	err   error
	calls int
}

func (f *fakeUsage) DiskBytes(_ context.Context, s drivers.SiteSpec) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.disk[s.ID], f.err
}

func (f *fakeUsage) Bandwidth(_ context.Context, s drivers.SiteSpec, _, _ time.Time) (drivers.Bandwidth, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.bw[s.ID], f.err
}

// meterEnqueuer records the tasks it is given.
type meterEnqueuer struct {
	mu    sync.Mutex
	tasks []*asynq.Task
}

func (r *meterEnqueuer) Enqueue(_ context.Context, t *asynq.Task, _ ...asynq.Option) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tasks = append(r.tasks, t)
	return nil
}

type meterBundle struct {
	db    *bun.DB
	store *models.Store
	probe *fakeUsage
	meter *jobs.MeterUsage
	vps   *models.VPSServer
	now   time.Time
}

func setupMeter(t *testing.T, db *bun.DB) *meterBundle {
	t.Helper()
	if _, err := models.MigrateUp(t.Context(), db); err != nil {
		t.Fatal(err)
	}
	store, err := models.New(models.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	b := &meterBundle{db: db, store: store, probe: &fakeUsage{disk: map[string]int64{}, bw: map[string]drivers.Bandwidth{}},
		now: time.Now().UTC().Truncate(time.Hour).Add(2 * time.Hour)}
	b.meter, err = jobs.NewMeterUsage(jobs.MeterUsageConfig{Store: store, Probe: b.probe,
		Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return b.now }})
	if err != nil {
		t.Fatal(err)
	}
	b.vps, _, err = store.RegisterVPS(t.Context(), models.Accept{}, models.RegisterVPSParams{
		Hostname: "meter.test.example", IPAddress: "192.0.2.1", SSHPort: 22, Provider: "test", Region: "eu",
		Allocation: models.AllocationShared, SiteCapacity: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// activeSite creates a site for tenantID, places it and completes its provision now.
func (b *meterBundle) activeSite(t *testing.T, tenantID, domain string) string {
	t.Helper()
	ctx := t.Context()
	acc, err := b.store.CreateSite(ctx, models.CreateSiteParams{Accept: models.Accept{TenantID: tenantID},
		Domain: domain, SiteType: "html"})
	if err != nil {
		t.Fatal(err)
	}
	op := acc.Operation
	if _, err := b.store.StartOperation(ctx, op.ID); err != nil {
		t.Fatal(err)
	}
	if err := b.store.BeginProvision(ctx, op.TargetID); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.AssignVPS(ctx, op.TargetID); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.store.CompleteProvision(ctx, op.ID, op.TargetID, models.ProvisionedSite{}, nil, nil); err != nil || !ok {
		t.Fatalf("CompleteProvision = %v, %v", ok, err)
	}
	return op.TargetID
}

// usageKey names a record in comparisons.
type usageKey struct{ Metric, SiteID string }

func records(t *testing.T, s *models.Store, tenantID string) map[usageKey]int64 {
	t.Helper()
	recs, err := s.ListUsage(t.Context(), tenantID, models.UsageFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	out := map[usageKey]int64{}
	for _, r := range recs {
		out[usageKey{r.Metric, r.SiteID}] = r.Quantity
	}
	return out
}

func TestMeterUsage(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		b := setupMeter(t, db)
		ctx := t.Context()
		ten, err := b.store.EnsureTenant(ctx, "metered")
		if err != nil {
			t.Fatal(err)
		}
		s1 := b.activeSite(t, ten.ID, "one.example")
		s2 := b.activeSite(t, ten.ID, "two.example")
		b.probe.disk[s1], b.probe.disk[s2] = 1000, 24
		b.probe.bw[s1] = drivers.Bandwidth{Bytes: 5000, Requests: 3, Skipped: 2}
		start := b.now.Add(-time.Hour)
		end := b.now

		task, err := queue.NewUsageMeterTask(queue.UsageMeterPayload{TenantID: ten.ID, PeriodStart: start, PeriodEnd: end})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.meter.ProcessTask(ctx, task); err != nil {
			t.Fatalf("ProcessTask: %v", err)
		}
		want := map[usageKey]int64{
			{jobs.MetricActiveSites, ""}: 2,
			{jobs.MetricDiskBytes, s1}:   1000, {jobs.MetricDiskBytes, s2}: 24, {jobs.MetricDiskBytes, ""}: 1024,
			{jobs.MetricBandwidthBytes, s1}: 5000, {jobs.MetricBandwidthBytes, s2}: 0, {jobs.MetricBandwidthBytes, ""}: 5000,
			{jobs.MetricBackupStorageBytes, ""}: 0,
		}
		if diff := cmp.Diff(want, records(t, b.store, ten.ID)); diff != "" {
			t.Errorf("records (-want +got):\n%s", diff)
		}
		// One event per record, each with its stable ID.
		var evs []models.OutboxEvent
		if err := db.NewSelect().Model(&evs).Where("topic = ?", events.TopicUsage).Scan(ctx); err != nil {
			t.Fatal(err)
		}
		var gotIDs, wantIDs []string
		for _, e := range evs {
			gotIDs = append(gotIDs, e.EventID)
		}
		for k := range want {
			wantIDs = append(wantIDs, events.UsageRecordID(ten.ID, k.Metric, k.SiteID, start))
		}
		sort.Strings(gotIDs)
		sort.Strings(wantIDs)
		if diff := cmp.Diff(wantIDs, gotIDs); diff != "" {
			t.Errorf("outbox event IDs (-want +got):\n%s", diff)
		}

		// Again, with different measurements: nothing is measured or written.
		calls := b.probe.calls
		b.probe.disk[s1] = 9999
		if err := b.meter.ProcessTask(ctx, task); err != nil {
			t.Fatalf("second ProcessTask: %v", err)
		}
		if diff := cmp.Diff(want, records(t, b.store, ten.ID)); diff != "" {
			t.Errorf("records after re-run (-want +got):\n%s", diff)
		}
		if b.probe.calls != calls {
			t.Errorf("re-run probed the server %d more times", b.probe.calls-calls)
		}
		var n int64
		if n, err = db.NewSelect().Model((*models.OutboxEvent)(nil)).Where("topic = ?", events.TopicUsage).Count(ctx); err != nil || n != int64(len(want)) {
			t.Errorf("outbox rows after re-run = %d, %v; want %d", n, err, len(want))
		}

		st := b.meter.Stats()
		wantStats := jobs.MeterStats{
			Records:         map[string]uint64{jobs.MetricActiveSites: 1, jobs.MetricDiskBytes: 3, jobs.MetricBandwidthBytes: 3, jobs.MetricBackupStorageBytes: 1},
			Runs:            map[string]uint64{jobs.MeterRecorded: 1, jobs.MeterAlreadyRecorded: 1, jobs.MeterFailed: 0, jobs.MeterRefused: 0},
			SkippedLogLines: 2,
		}
		if diff := cmp.Diff(wantStats, st); diff != "" {
			t.Errorf("Stats (-want +got):\n%s", diff)
		}
	})
}

func TestMeterUsageFailures(t *testing.T) {
	t.Parallel()
	b := setupMeter(t, testenv.SQLite(t))
	ctx := t.Context()
	ten, err := b.store.EnsureTenant(ctx, "failing")
	if err != nil {
		t.Fatal(err)
	}
	b.activeSite(t, ten.ID, "fail.example")
	start := b.now.Add(-time.Hour)

	for _, tc := range []struct {
		name      string
		payload   string
		probeErr  error
		permanent bool
	}{
		{"not json", `{`, nil, true},
		{"unknown field", `{"tenant_id":"` + ten.ID + `","period_start":"` + start.Format(time.RFC3339) + `","period_end":"` + b.now.Format(time.RFC3339) + `","x":1}`, nil, true},
		{"bad tenant", `{"tenant_id":"../x","period_start":"` + start.Format(time.RFC3339) + `","period_end":"` + b.now.Format(time.RFC3339) + `"}`, nil, true},
		{"empty period", `{"tenant_id":"` + ten.ID + `","period_start":"` + start.Format(time.RFC3339) + `","period_end":"` + start.Format(time.RFC3339) + `"}`, nil, true},
		{"period not over", `{"tenant_id":"` + ten.ID + `","period_start":"` + b.now.Format(time.RFC3339) + `","period_end":"` + b.now.Add(time.Hour).Format(time.RFC3339) + `"}`, nil, true},
		{"server unreachable", `{"tenant_id":"` + ten.ID + `","period_start":"` + start.Format(time.RFC3339) + `","period_end":"` + b.now.Format(time.RFC3339) + `"}`, drivers.ErrUnreachable, false},
		{"invalid spec", `{"tenant_id":"` + ten.ID + `","period_start":"` + start.Format(time.RFC3339) + `","period_end":"` + b.now.Format(time.RFC3339) + `"}`, drivers.ErrInvalidSpec, true},
	} {
		b.probe.mu.Lock()
		b.probe.err = tc.probeErr
		b.probe.mu.Unlock()
		err := b.meter.ProcessTask(ctx, asynq.NewTask(queue.TypeUsageMeter, []byte(tc.payload)))
		if err == nil {
			t.Fatalf("%s: ProcessTask succeeded", tc.name)
		}
		if got := errors.Is(err, asynq.SkipRetry); got != tc.permanent {
			t.Errorf("%s: SkipRetry = %v, want %v (%v)", tc.name, got, tc.permanent, err)
		}
	}
	if n, err := b.db.NewSelect().Model((*models.UsageRecord)(nil)).Count(ctx); err != nil || n != 0 {
		t.Errorf("%d records written by failed runs (%v)", n, err)
	}
	st := b.meter.Stats()
	if st.Runs[jobs.MeterRefused] != 5 || st.Runs[jobs.MeterFailed] != 2 || st.Runs[jobs.MeterRecorded] != 0 {
		t.Errorf("Runs = %v, want 5 refused and 2 failed", st.Runs)
	}
}

func TestMeterSweep(t *testing.T) {
	t.Parallel()
	b := setupMeter(t, testenv.SQLite(t))
	ctx := t.Context()
	var tenants []string
	for _, name := range []string{"x", "y"} {
		ten, err := b.store.EnsureTenant(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		b.activeSite(t, ten.ID, name+".example")
		tenants = append(tenants, ten.ID)
	}
	if _, err := b.store.EnsureTenant(ctx, "no-sites"); err != nil {
		t.Fatal(err)
	}
	sort.Strings(tenants)
	enq := &meterEnqueuer{}
	sweep, err := jobs.NewMeterSweep(jobs.MeterSweepConfig{Store: b.store, Enqueuer: enq, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	const interval = time.Hour
	tick := b.now
	task, err := queue.NewUsageMeterSweepTask(tick, interval)
	if err != nil {
		t.Fatal(err)
	}
	if err := sweep.ProcessTask(ctx, task); err != nil {
		t.Fatal(err)
	}
	var got []queue.UsageMeterPayload
	for _, tk := range enq.tasks {
		if tk.Type() != queue.TypeUsageMeter {
			t.Errorf("task type %s", tk.Type())
		}
		p, err := queue.DecodeUsageMeterPayload(tk.Payload())
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p)
	}
	var want []queue.UsageMeterPayload
	for _, id := range tenants {
		want = append(want, queue.UsageMeterPayload{TenantID: id, PeriodStart: tick.Add(-interval), PeriodEnd: tick})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("meter tasks (-want +got):\n%s", diff)
	}
	if id := queue.UsageMeterTaskID(tenants[0], tick.Add(-interval)); id != "meter:"+tenants[0]+":"+tick.Add(-interval).Format(time.RFC3339) {
		t.Errorf("task ID %s", id)
	}
	if err := sweep.ProcessTask(ctx, asynq.NewTask(queue.TypeUsageMeterSweep, []byte(`{"period_start":"x"}`))); !errors.Is(err, asynq.SkipRetry) {
		t.Errorf("malformed sweep payload: %v, want SkipRetry", err)
	}
}
