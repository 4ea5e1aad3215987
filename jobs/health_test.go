package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// fakeProbe is a drivers.HealthProbe built from a function field.
type fakeProbe struct {
	ProbeFunc func(ctx context.Context, t drivers.HealthTarget) (drivers.HealthReport, error)
}

func (f fakeProbe) Probe(ctx context.Context, t drivers.HealthTarget) (drivers.HealthReport, error) {
	return f.ProbeFunc(ctx, t)
}

const gib = 1 << 30

// good is the report of a server well inside every threshold.
func good() drivers.HealthReport {
	return drivers.HealthReport{
		Reachable: true, ConnectLatency: 3 * time.Millisecond, HostKey: "ssh-ed25519 AAAAgood",
		Load1: 0.5, Load5: 0.4, Load15: 0.3, CPUs: 4,
		MemTotalBytes: 8 * gib, MemAvailableBytes: 6 * gib, DiskTotalBytes: 100 * gib, DiskFreeBytes: 70 * gib,
		HTTPStatus: 200, HTTPLatency: 2 * time.Millisecond,
	}
}

func with(mod func(r *drivers.HealthReport)) drivers.HealthReport {
	r := good()
	mod(&r)
	return r
}

func TestClassify(t *testing.T) {
	t.Parallel()
	th := jobs.DefaultHealthThresholds()
	for _, tc := range []struct {
		name   string
		report drivers.HealthReport
		err    error
		want   jobs.HealthVerdict
	}{
		{"healthy", good(), nil, jobs.HealthVerdict{Result: models.HealthHealthy, Reason: "healthy"}},
		{"unreachable", drivers.HealthReport{}, fmt.Errorf("dial: %w", drivers.ErrUnreachable),
			jobs.HealthVerdict{Result: models.HealthUnhealthy, Reason: "unreachable", Unreachable: true}},
		{"probe timed out", drivers.HealthReport{}, context.DeadlineExceeded,
			jobs.HealthVerdict{Result: models.HealthUnhealthy, Reason: "unreachable", Unreachable: true}},
		{"not reachable without error", drivers.HealthReport{}, nil,
			jobs.HealthVerdict{Result: models.HealthUnhealthy, Reason: "unreachable", Unreachable: true}},
		{"host key mismatch", good(), fmt.Errorf("ssh: %w", drivers.ErrHostKeyMismatch),
			jobs.HealthVerdict{Result: models.HealthUnhealthy, Reason: "host key mismatch", HostKeyMismatch: true}},
		{"other probe failure", good(), errors.New("uptime: exit 1"),
			jobs.HealthVerdict{Result: models.HealthUnhealthy, Reason: "probe failed"}},
		{"nginx 502", with(func(r *drivers.HealthReport) { r.HTTPStatus = 502 }), nil,
			jobs.HealthVerdict{Result: models.HealthUnhealthy, Reason: "http 502"}},
		{"nginx 404 is an answer", with(func(r *drivers.HealthReport) { r.HTTPStatus = 404 }), nil,
			jobs.HealthVerdict{Result: models.HealthHealthy, Reason: "healthy"}},
		{"nginx silent", with(func(r *drivers.HealthReport) { r.HTTPStatus, r.HTTPError = 0, "connection refused" }), nil,
			jobs.HealthVerdict{Result: models.HealthUnhealthy, Reason: "http no answer"}},
		{"http not applicable (local driver)", with(func(r *drivers.HealthReport) {
			r.HTTPStatus, r.HTTPError, r.HTTPSkipped = 0, "no nginx in local driver", true
		}), nil, jobs.HealthVerdict{Result: models.HealthHealthy, Reason: "healthy"}},
		{"load degraded", with(func(r *drivers.HealthReport) { r.Load1 = 6 }), nil,
			jobs.HealthVerdict{Result: models.HealthDegraded, Reason: "load 1.50 per cpu"}},
		{"load unhealthy", with(func(r *drivers.HealthReport) { r.Load1 = 16 }), nil,
			jobs.HealthVerdict{Result: models.HealthUnhealthy, Reason: "load 4.00 per cpu"}},
		{"memory degraded", with(func(r *drivers.HealthReport) { r.MemAvailableBytes = r.MemTotalBytes / 20 }), nil,
			jobs.HealthVerdict{Result: models.HealthDegraded, Reason: "memory 95.0% used"}},
		{"disk unhealthy", with(func(r *drivers.HealthReport) { r.DiskFreeBytes = 3 * gib }), nil,
			jobs.HealthVerdict{Result: models.HealthUnhealthy, Reason: "disk 97.0% used"}},
		{"worst level wins, its reasons listed", with(func(r *drivers.HealthReport) {
			r.DiskFreeBytes, r.Load1, r.HTTPStatus = 10*gib, 20, 503
		}), nil, jobs.HealthVerdict{Result: models.HealthUnhealthy, Reason: "http 503; load 5.00 per cpu"}},
		{"shared host (local driver): load, memory and disk not judged", with(func(r *drivers.HealthReport) {
			r.HostShared, r.Load1, r.MemAvailableBytes, r.DiskFreeBytes = true, 40, 0, 0
		}), nil, jobs.HealthVerdict{Result: models.HealthHealthy, Reason: "healthy"}},
		{"shared host still judges HTTP", with(func(r *drivers.HealthReport) { r.HostShared, r.HTTPStatus = true, 502 }), nil,
			jobs.HealthVerdict{Result: models.HealthUnhealthy, Reason: "http 502"}},
		{"unmeasured values are not judged", drivers.HealthReport{Reachable: true, HTTPStatus: 200}, nil,
			jobs.HealthVerdict{Result: models.HealthHealthy, Reason: "healthy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tc.want, jobs.Classify(tc.report, tc.err, th)); diff != "" {
				t.Errorf("Classify (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHealthThresholdsValidate(t *testing.T) {
	t.Parallel()
	if err := jobs.DefaultHealthThresholds().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	bad := jobs.DefaultHealthThresholds()
	bad.DiskPercentDegraded, bad.MemPercentUnhealthy = 99, 120
	if err := bad.Validate(); err == nil {
		t.Fatal("degraded above unhealthy and 120% accepted")
	}
}

func TestNextHealth(t *testing.T) {
	t.Parallel()
	const H, D, U, K = models.HealthHealthy, models.HealthDegraded, models.HealthUnhealthy, models.HealthUnknown
	for _, tc := range []struct {
		name    string
		start   string
		n       int
		results []string
		want    []string // status after each result
	}{
		{"unknown takes the first result at once", K, 3, []string{U}, []string{U}},
		{"goes unhealthy on the Nth, not before", H, 3, []string{U, U, U}, []string{H, H, U}},
		{"an agreeing result resets the streak", H, 3, []string{U, U, H, U, U, U}, []string{H, H, H, H, H, U}},
		{"a different candidate restarts the count", H, 3, []string{U, U, D, D, D}, []string{H, H, H, H, D}},
		{"comes back after N good results", U, 2, []string{H, U, H, H}, []string{U, U, U, H}},
		{"n=1 is no hysteresis", H, 1, []string{D, H, U}, []string{D, H, U}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := models.HealthState{Status: tc.start}
			var got []string
			for _, r := range tc.results {
				st = jobs.NextHealth(st, r, tc.n)
				got = append(got, st.Status)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("statuses (-want +got):\n%s", diff)
			}
		})
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// healthBundle is a store with one shared server and a check handler whose
// probe answers what the test sets.
type healthBundle struct {
	store  *models.Store
	db     *bun.DB
	vps    *models.VPSServer
	check  *jobs.CheckHealth
	mu     sync.Mutex
	report drivers.HealthReport
	err    error
	seen   []drivers.HealthTarget
}

func (b *healthBundle) answer(r drivers.HealthReport, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.report, b.err = r, err
}

func setupHealth(t *testing.T, db *bun.DB, hostKey string) *healthBundle {
	t.Helper()
	ctx := t.Context()
	if _, err := models.MigrateUp(ctx, db); err != nil {
		t.Fatal(err)
	}
	store, err := models.New(models.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := store.RegisterVPS(ctx, models.Accept{}, models.RegisterVPSParams{
		Hostname: "web1.example", IPAddress: "192.0.2.1", SSHPort: 22, Provider: "test", Region: "r",
		Allocation: models.AllocationShared, SiteCapacity: 10, HostKey: hostKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	b := &healthBundle{store: store, db: db, vps: v, report: good()}
	b.check, err = jobs.NewCheckHealth(jobs.HealthCheckConfig{
		Store: store, Logger: discard(), Hysteresis: 3, CheckTimeout: time.Second,
		Probe: fakeProbe{ProbeFunc: func(_ context.Context, tg drivers.HealthTarget) (drivers.HealthReport, error) {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.seen = append(b.seen, tg)
			return b.report, b.err
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sweepCheck runs the sweep check of period i (minutes after a fixed start).
func (b *healthBundle) sweepCheck(t *testing.T, i int) *models.HealthRecorded {
	t.Helper()
	p := time.Date(2026, 12, 1, 10, i, 0, 0, time.UTC)
	task, err := queue.NewHealthCheckTask(b.vps.ID, p, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.check.ProcessTask(t.Context(), task); err != nil {
		t.Fatalf("check %d: %v", i, err)
	}
	rec, err := b.store.HealthCheckByKey(t.Context(), b.vps.ID, p.Format(time.RFC3339))
	if err != nil {
		t.Fatal(err)
	}
	return &models.HealthRecorded{Check: rec}
}

func (b *healthBundle) status(t *testing.T) *models.VPSServer {
	t.Helper()
	v, err := b.store.GetVPS(t.Context(), b.vps.ID)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func healthEvents(t *testing.T, db *bun.DB) []map[string]any {
	t.Helper()
	var rows []models.OutboxEvent
	if err := db.NewSelect().Model(&rows).Where("event_type = ?", "vps.health_changed.v1").OrderExpr("id").Scan(t.Context()); err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, r := range rows {
		var m map[string]any
		if err := json.Unmarshal([]byte(r.Data), &m); err != nil {
			t.Fatal(err)
		}
		if r.TenantID != m["vps_id"] || r.Topic != "vps.v1" || r.Subject != m["vps_id"] {
			t.Errorf("event row key/topic/subject = %q/%q/%q, want the vps id on vps.v1", r.TenantID, r.Topic, r.Subject)
		}
		out = append(out, m)
	}
	return out
}

func TestCheckHealthHysteresisAndEvents(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		b := setupHealth(t, db, "")
		// First result of an unknown server: healthy at once, and the host key it
		// presented is pinned (trust on first use).
		b.sweepCheck(t, 0)
		v := b.status(t)
		if v.HealthStatus != models.HealthHealthy || v.HostKey != "ssh-ed25519 AAAAgood" || v.HealthCheckedAt == nil {
			t.Fatalf("after the first check: status %q, host key %q, checked %v", v.HealthStatus, v.HostKey, v.HealthCheckedAt)
		}
		// It stops answering: unhealthy on the third check, not before.
		b.answer(drivers.HealthReport{ConnectLatency: time.Second}, fmt.Errorf("dial: %w", drivers.ErrUnreachable))
		for i := 1; i <= 3; i++ {
			rec := b.sweepCheck(t, i)
			want := models.HealthHealthy
			if i == 3 {
				want = models.HealthUnhealthy
			}
			if rec.Check.Result != models.HealthUnhealthy || rec.Check.Reachable || rec.Check.StatusAfter != want {
				t.Fatalf("check %d: %+v, want an unreachable result and status %s", i, rec.Check, want)
			}
			if got := b.status(t).HealthStatus; got != want {
				t.Fatalf("after check %d: status %s, want %s", i, got, want)
			}
		}
		// The same period delivered again records and counts nothing.
		b.sweepCheck(t, 3)
		if n, _ := b.db.NewSelect().Table("vps_health_checks").Count(t.Context()); n != 4 {
			t.Fatalf("%d checks recorded, want 4 (a redelivered period counts once)", n)
		}
		// Back: healthy after three good checks.
		b.answer(good(), nil)
		for i := 4; i <= 6; i++ {
			b.sweepCheck(t, i)
		}
		if got := b.status(t).HealthStatus; got != models.HealthHealthy {
			t.Fatalf("after three good checks: %s, want healthy", got)
		}
		evs := healthEvents(t, db)
		var got [][2]any
		for _, e := range evs {
			got = append(got, [2]any{e["from"], e["to"]})
		}
		want := [][2]any{{"unknown", "healthy"}, {"healthy", "unhealthy"}, {"unhealthy", "healthy"}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("transitions (-want +got):\n%s", diff)
		}
		if evs[1]["reason"] != "unreachable" || evs[1]["measurements"].(map[string]any)["reachable"] != false {
			t.Errorf("down event = %v", evs[1])
		}
		if st := b.check.Stats(); st != (jobs.HealthCheckStats{Healthy: 4, Unreachable: 3}) {
			t.Errorf("Stats = %+v, want 4 healthy and 3 unreachable", st)
		}
	})
}

func TestCheckHealthHostKeyMismatchIsNeverPinned(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	b := setupHealth(t, db, "ssh-ed25519 AAAApinned")
	b.answer(with(func(r *drivers.HealthReport) { r.HostKey = "ssh-ed25519 AAAAevil" }),
		fmt.Errorf("ssh: %w", drivers.ErrHostKeyMismatch))
	rec := b.sweepCheck(t, 0)
	if rec.Check.Result != models.HealthUnhealthy || rec.Check.Reason != "host key mismatch" {
		t.Fatalf("check = %+v, want unhealthy with reason host key mismatch", rec.Check)
	}
	v := b.status(t)
	if v.HostKey != "ssh-ed25519 AAAApinned" || v.HealthStatus != models.HealthUnhealthy {
		t.Fatalf("server: key %q status %q; the pinned key must stay and the server be unhealthy", v.HostKey, v.HealthStatus)
	}
	if b.seen[0].HostKey != "ssh-ed25519 AAAApinned" {
		t.Errorf("probe got pinned key %q", b.seen[0].HostKey)
	}
	// A good answer with another key does not replace a pinned one either.
	b.answer(with(func(r *drivers.HealthReport) { r.HostKey = "ssh-ed25519 AAAAother" }), nil)
	b.sweepCheck(t, 1)
	if v := b.status(t); v.HostKey != "ssh-ed25519 AAAApinned" {
		t.Fatalf("host key replaced by %q", v.HostKey)
	}
}

func TestCheckHealthBadPayloadIsNotRetried(t *testing.T) {
	t.Parallel()
	b := setupHealth(t, testenv.SQLite(t), "")
	for _, payload := range []string{`{`, `{"vps_id":"vps_x"}`, `{"operation_id":"op_x"}`} {
		err := b.check.ProcessTask(t.Context(), asynq.NewTask(queue.TypeVPSHealthCheck, []byte(payload)))
		if !errors.Is(err, asynq.SkipRetry) {
			t.Errorf("payload %s: %v, want SkipRetry", payload, err)
		}
	}
	task, _ := queue.NewHealthCheckTask("vps_gone", time.Now(), time.Minute)
	if err := b.check.ProcessTask(t.Context(), task); !errors.Is(err, asynq.SkipRetry) {
		t.Errorf("unknown server: %v, want SkipRetry", err)
	}
}

// recordingEnqueuer records the tasks it is given, as a set by task ID (asynq
// would make a repeated ID a conflict).
type recordingEnqueuer struct {
	mu       sync.Mutex
	ids      map[string]bool
	inFlight atomic.Int32
	maxSeen  atomic.Int32
}

func (r *recordingEnqueuer) Enqueue(_ context.Context, task *asynq.Task, _ ...asynq.Option) error {
	n := r.inFlight.Add(1)
	defer r.inFlight.Add(-1)
	for {
		m := r.maxSeen.Load()
		if n <= m || r.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(100 * time.Microsecond) // a Redis round trip, so concurrency shows
	var p queue.HealthCheckPayload
	if err := json.Unmarshal(task.Payload(), &p); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids[p.VPSID] = true
	return nil
}

// insertServers adds n active shared servers (and one decommissioned) in bulk.
func insertServers(t testing.TB, db *bun.DB, n int) (decommissioned string) {
	t.Helper()
	now := time.Now().UTC()
	rows := make([]models.VPSServer, 0, 1000)
	flush := func() {
		if len(rows) == 0 {
			return
		}
		if _, err := db.NewInsert().Model(&rows).Exec(context.Background()); err != nil {
			t.Fatal(err)
		}
		rows = rows[:0]
	}
	for i := 0; i <= n; i++ {
		v := models.VPSServer{ID: models.NewID(models.PrefixVPS), Hostname: fmt.Sprintf("h%05d.example", i),
			IPAddress: "192.0.2.1", SSHPort: 22, Provider: "p", Region: "r", Allocation: models.AllocationShared,
			SiteCapacity: 10, Status: models.VPSStatusActive, HealthStatus: models.HealthUnknown, CreatedAt: now, UpdatedAt: now}
		if i == n {
			v.Status, decommissioned = models.VPSStatusDecommissioned, v.ID
		}
		rows = append(rows, v)
		if len(rows) == cap(rows) {
			flush()
		}
	}
	flush()
	return decommissioned
}

func TestSweepEnqueuesOneCheckPerActiveServer(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	if _, err := models.MigrateUp(t.Context(), db); err != nil {
		t.Fatal(err)
	}
	store, _ := models.New(models.Config{DB: db})
	gone := insertServers(t, db, 2500)
	enq := &recordingEnqueuer{ids: map[string]bool{}}
	sweep, err := jobs.NewSweepHealth(jobs.HealthSweepConfig{Store: store, Enqueuer: enq, Logger: discard(),
		Interval: time.Minute, PageSize: 300, Concurrency: 8})
	if err != nil {
		t.Fatal(err)
	}
	task, _ := queue.NewHealthSweepTask(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), time.Minute)
	if err := sweep.ProcessTask(t.Context(), task); err != nil {
		t.Fatal(err)
	}
	if len(enq.ids) != 2500 || enq.ids[gone] {
		t.Fatalf("%d servers enqueued (decommissioned one included: %v), want the 2500 active", len(enq.ids), enq.ids[gone])
	}
	if m := enq.maxSeen.Load(); m < 2 || m > 8 {
		t.Errorf("at most %d enqueues ran at once, want between 2 and the bound of 8", m)
	}
	if run := sweep.LastRun(); run.Enqueued != 2500 || run.Failed != 0 {
		t.Errorf("LastRun = %+v", run)
	}
}

// The fleet's checks reach a real Redis well within the default 60s interval.
func TestSweep10000ServersIntoRedis(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("enqueues 10,000 tasks")
	}
	rdb := testenv.Redis(t)
	db := testenv.SQLite(t)
	if _, err := models.MigrateUp(t.Context(), db); err != nil {
		t.Fatal(err)
	}
	store, _ := models.New(models.Config{DB: db})
	insertServers(t, db, 10000)
	client := rdb.Client(t)
	sweep, err := jobs.NewSweepHealth(jobs.HealthSweepConfig{Store: store, Enqueuer: queue.NewEnqueuer(client),
		Logger: discard(), Interval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	period := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	run, err := sweep.Sweep(t.Context(), period)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("10,000 health checks enqueued in %s", run.Duration)
	if run.Enqueued != 10000 || run.Failed != 0 {
		t.Fatalf("run = %+v", run)
	}
	if run.Duration > 30*time.Second {
		t.Errorf("sweep took %s, want well under the 60s interval", run.Duration)
	}
	n, err := client.LLen(t.Context(), "asynq:{default}:pending").Result()
	if err != nil || n != 10000 {
		t.Fatalf("%d pending checks in Redis (%v), want 10000", n, err)
	}
	// A second sweep of the same period (another scheduler) adds nothing.
	if _, err := sweep.Sweep(t.Context(), period); err != nil {
		t.Fatal(err)
	}
	if n, _ := client.LLen(t.Context(), "asynq:{default}:pending").Result(); n != 10000 {
		t.Fatalf("%d pending after a repeated sweep, want 10000", n)
	}
}
