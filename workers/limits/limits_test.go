package limits_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/queue"
	"github.com/chomhq/chom/workers"
	"github.com/chomhq/chom/workers/limits"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newLimiter(t *testing.T, rdb redis.UniversalClient, cfg limits.Config) *limits.Limiter {
	t.Helper()
	cfg.Redis, cfg.Logger = rdb, quiet()
	l, err := limits.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// gauge is a fake driver that measures how many calls run at once, overall
// and per tenant.
type gauge struct {
	hold              time.Duration
	now, peak         atomic.Int64
	mu                sync.Mutex
	tenantNow, tenMax map[string]int
	started           map[string]time.Time // site ID -> first start
}

func newGauge(hold time.Duration) *gauge {
	return &gauge{hold: hold, tenantNow: map[string]int{}, tenMax: map[string]int{}, started: map[string]time.Time{}}
}

func (g *gauge) Provision(ctx context.Context, s drivers.SiteSpec, _ drivers.ProgressFunc) (drivers.Result, error) {
	n := g.now.Add(1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			break
		}
	}
	g.mu.Lock()
	g.tenantNow[s.TenantID]++
	g.tenMax[s.TenantID] = max(g.tenMax[s.TenantID], g.tenantNow[s.TenantID])
	if _, ok := g.started[s.ID]; !ok {
		g.started[s.ID] = time.Now()
	}
	g.mu.Unlock()
	select {
	case <-time.After(g.hold):
	case <-ctx.Done():
	}
	g.mu.Lock()
	g.tenantNow[s.TenantID]--
	g.mu.Unlock()
	g.now.Add(-1)
	return drivers.Result{}, ctx.Err()
}

func (g *gauge) Deprovision(context.Context, drivers.SiteSpec) error { return nil }

type job struct {
	Site, Tenant, VPS string
}

// fleet runs `servers` asynq servers (each with its own Redis client from
// newClient, as separate worker processes would) whose handler provisions through p, with
// the workers package's real IsFailure and RetryDelay.
type fleet struct {
	client   *asynq.Client
	deferred atomic.Int64 // attempts that met a busy limit
	retried  atomic.Int64 // highest retry count seen by any attempt
	done     sync.WaitGroup
}

func startFleet(t *testing.T, newClient func() redis.UniversalClient, servers, concurrency int, p drivers.Provisioner) *fleet {
	t.Helper()
	f := &fleet{client: asynq.NewClientFromRedisClient(newClient())}
	t.Cleanup(func() { _ = f.client.Close() })
	handler := asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		var j job
		if err := json.Unmarshal(task.Payload(), &j); err != nil {
			return fmt.Errorf("%v: %w", err, asynq.SkipRetry)
		}
		if n, _ := asynq.GetRetryCount(ctx); int64(n) > f.retried.Load() {
			f.retried.Store(int64(n))
		}
		_, err := p.Provision(ctx, drivers.SiteSpec{ID: j.Site, TenantID: j.Tenant, Server: drivers.Server{ID: j.VPS}}, nil)
		if errors.Is(err, limits.ErrBusy) {
			f.deferred.Add(1)
			return err
		}
		if err == nil {
			f.done.Done()
		}
		return err
	})
	for range servers {
		srv := asynq.NewServerFromRedisClient(newClient(), asynq.Config{
			Concurrency:              concurrency,
			IsFailure:                workers.IsFailure,
			RetryDelayFunc:           workers.RetryDelay(time.Second, time.Second, 60*time.Millisecond),
			TaskCheckInterval:        20 * time.Millisecond,
			DelayedTaskCheckInterval: 50 * time.Millisecond,
			LogLevel:                 asynq.FatalLevel,
			ShutdownTimeout:          time.Second,
		})
		if err := srv.Start(handler); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Shutdown)
	}
	return f
}

// dbClients makes a new client of db for each call.
func dbClients(t *testing.T, db testenv.RedisDB) func() redis.UniversalClient {
	return func() redis.UniversalClient { return db.Client(t) }
}

func (f *fleet) enqueue(t *testing.T, j job) {
	t.Helper()
	b, _ := json.Marshal(j)
	f.done.Add(1)
	if _, err := f.client.Enqueue(asynq.NewTask("test:provision", b), asynq.TaskID(j.Site), asynq.MaxRetry(3)); err != nil {
		t.Fatal(err)
	}
}

func (f *fleet) wait(t *testing.T, within time.Duration) {
	t.Helper()
	ch := make(chan struct{})
	go func() { f.done.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(within):
		t.Fatalf("tasks not all done within %s", within)
	}
}

// TestVPSLimitAcrossWorkers: two worker processes with 6 slots each run 10
// tasks for one server whose limit is 3: never more than 3 run at once, the
// limit is reached, and deferred attempts cost no retry.
func TestVPSLimitAcrossWorkers(t *testing.T) {
	t.Parallel()
	db := testenv.Redis(t)
	const n, k = 3, 7
	l := newLimiter(t, db.Client(t), limits.Config{VPSMax: n, TenantMax: 100})
	g := newGauge(150 * time.Millisecond)
	f := startFleet(t, dbClients(t, db), 2, 6, l.Provisioner(g))
	for i := range n + k {
		f.enqueue(t, job{Site: fmt.Sprintf("site_%d", i), Tenant: fmt.Sprintf("ten_%d", i), VPS: "vps_one"})
	}
	f.wait(t, 30*time.Second)
	if p := g.peak.Load(); p != n {
		t.Errorf("peak concurrency on the server = %d, want exactly the limit %d", p, n)
	}
	if f.deferred.Load() == 0 {
		t.Error("no attempt met the busy limit; the test proves nothing")
	}
	if r := f.retried.Load(); r != 0 {
		t.Errorf("a task was retried %d times: a busy limit burned a retry", r)
	}
	if got, err := l.InUse(t.Context(), limits.KindVPS, "vps_one"); err != nil || got != 0 {
		t.Errorf("slots held after all tasks = %d, %v; want 0", got, err)
	}
	t.Logf("%d tasks, limit %d: peak %d, %d deferred attempts", n+k, n, g.peak.Load(), f.deferred.Load())
}

// TestTenantBurstDoesNotStarve: tenant A enqueues 50 slow tasks, then tenant B
// one. With A limited to 2 at once, B's task starts long before A's burst
// could have drained through the 4 worker slots (50 × 200ms / 4 = 2.5s).
func TestTenantBurstDoesNotStarve(t *testing.T) {
	t.Parallel()
	db := testenv.Redis(t)
	l := newLimiter(t, db.Client(t), limits.Config{VPSMax: 100, TenantMax: 2})
	g := newGauge(200 * time.Millisecond)
	f := startFleet(t, dbClients(t, db), 2, 2, l.Provisioner(g))
	for i := range 50 {
		f.enqueue(t, job{Site: fmt.Sprintf("site_a%d", i), Tenant: "ten_a", VPS: fmt.Sprintf("vps_%d", i%5)})
	}
	enqueued := time.Now()
	f.enqueue(t, job{Site: "site_b", Tenant: "ten_b", VPS: "vps_0"})
	f.wait(t, 60*time.Second)
	g.mu.Lock()
	wait := g.started["site_b"].Sub(enqueued)
	peakA := g.tenMax["ten_a"]
	g.mu.Unlock()
	t.Logf("tenant B's task started %s after enqueue, behind a burst of 50; tenant A peak %d", wait.Round(time.Millisecond), peakA)
	if peakA > 2 {
		t.Errorf("tenant A ran %d at once, limit 2", peakA)
	}
	if wait > 1500*time.Millisecond {
		t.Errorf("tenant B's task waited %s behind tenant A's burst, want under 1.5s", wait)
	}
	if r := f.retried.Load(); r != 0 {
		t.Errorf("a task was retried %d times", r)
	}
}

// TestExpiredLeaseFreesSlot: a worker killed while holding a slot (its Redis
// client gone, so no renewal and no release) leaks it only until the lease
// expires, while a live holder keeps its slot for many leases.
func TestExpiredLeaseFreesSlot(t *testing.T) {
	t.Parallel()
	db := testenv.Redis(t)
	const lease = 300 * time.Millisecond
	other := newLimiter(t, db.Client(t), limits.Config{VPSMax: 1, TenantMax: 1, Lease: lease})

	// A live holder renews: still held after 3 leases.
	live := newLimiter(t, db.Client(t), limits.Config{VPSMax: 1, TenantMax: 1, Lease: lease})
	slot, err := live.Acquire(t.Context(), "vps_live", "ten_live")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * lease)
	if _, err := other.Acquire(t.Context(), "vps_live", ""); !errors.Is(err, limits.ErrBusy) {
		t.Fatalf("slot of a live holder after 3 leases: %v, want busy", err)
	}
	slot.Release(t.Context())
	s2, err := other.Acquire(t.Context(), "vps_live", "")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	s2.Release(t.Context())

	// A killed holder: its client closes, renewals fail.
	dead := db.Client(t)
	killed := newLimiter(t, dead, limits.Config{VPSMax: 1, TenantMax: 1, Lease: lease})
	if _, err := killed.Acquire(t.Context(), "vps_dead", "ten_dead"); err != nil {
		t.Fatal(err)
	}
	_ = dead.Close()
	start := time.Now()
	_, err = other.Acquire(t.Context(), "vps_dead", "")
	if !errors.Is(err, limits.ErrBusy) || !errors.Is(err, drivers.ErrDeferred) || workers.IsFailure(err) {
		t.Fatalf("slot just taken by the killed worker: %v (IsFailure %v), want busy and deferred", err, workers.IsFailure(err))
	}
	for {
		s, err := other.Acquire(t.Context(), "vps_dead", "ten_dead")
		if err == nil {
			s.Release(t.Context())
			break
		}
		if !errors.Is(err, limits.ErrBusy) {
			t.Fatal(err)
		}
		if time.Since(start) > 5*lease {
			t.Fatalf("killed worker's slot still held after %s", time.Since(start))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if freed := time.Since(start); freed < lease/2 {
		t.Errorf("slot freed after %s, before its lease %s could expire", freed, lease)
	} else {
		t.Logf("killed worker's slot freed after %s (lease %s)", freed.Round(time.Millisecond), lease)
	}
}

// TestAcquireAllOrNothing: a full tenant refuses the pair and leaks no VPS
// slot; the error names the full semaphore.
func TestAcquireAllOrNothing(t *testing.T) {
	t.Parallel()
	db := testenv.Redis(t)
	l := newLimiter(t, db.Client(t), limits.Config{VPSMax: 5, TenantMax: 1})
	ctx := t.Context()
	held, err := l.Acquire(ctx, "vps_x", "ten_a")
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.Acquire(ctx, "vps_y", "ten_a")
	if !errors.Is(err, limits.ErrBusy) || !contains(err.Error(), "tenant ten_a") {
		t.Fatalf("second slot of a full tenant: %v", err)
	}
	if n, _ := l.InUse(ctx, limits.KindVPS, "vps_y"); n != 0 {
		t.Errorf("refused acquire left %d slots on vps_y", n)
	}
	if n, _ := l.InUse(ctx, limits.KindVPS, "vps_x"); n != 1 {
		t.Errorf("vps_x holds %d slots, want 1", n)
	}
	held.Release(ctx)
	held.Release(ctx) // twice is harmless
	if n, _ := l.InUse(ctx, limits.KindTenant, "ten_a"); n != 0 {
		t.Errorf("tenant holds %d slots after release", n)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	_, err := limits.New(limits.Config{VPSMax: -1, Lease: time.Millisecond})
	for _, want := range []string{"Redis is required", "Logger is required", "VPSMax -1", "Lease 1ms"} {
		if err == nil || !contains(err.Error(), want) {
			t.Errorf("New: %v, want it to name %q", err, want)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// With Redis unreachable, Acquire fails open: the job runs without a slot
// (no new task can be dequeued meanwhile, see Acquire), and Release gives up
// once the lease the slot would have had is over.
func TestAcquireFailsOpenWithoutRedis(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: every dial is refused
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer rdb.Close()
	l := newLimiter(t, rdb, limits.Config{VPSMax: 1, TenantMax: 1, Lease: 300 * time.Millisecond})
	for range 3 { // more than the limits allow, had Redis answered
		slot, err := l.Acquire(t.Context(), "vps_a", "ten_a")
		if err != nil || slot == nil {
			t.Fatalf("Acquire without Redis = %v, %v; want an empty slot", slot, err)
		}
		slot.Release(t.Context())
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := l.Acquire(ctx, "vps_a", "ten_a"); !errors.Is(err, context.Canceled) {
		t.Errorf("Acquire with a cancelled context = %v, want context.Canceled", err)
	}
}

// A slot released while Redis does not answer (a Sentinel failover, the
// master dead and the replica not yet promoted) is released once Redis
// answers again, within the release's retry window, not left taken until its
// lease runs out: without the retry every slot held at a failover stays
// taken for up to a lease (30s), and tasks that could run are deferred
// (TestSentinelMasterKilled measured its last operation 24.6s after the
// kill, 7 to 9 deferred attempts each, with one release attempt).
func TestReleaseRetriesWhileRedisIsAway(t *testing.T) {
	t.Parallel()
	db := testenv.Redis(t)
	proxy := testenv.NewProxy(t, db.Addr)
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DB: db.DB, MaxRetries: -1, DialTimeout: time.Second})
	defer rdb.Close()
	const lease = 30 * time.Second
	l := newLimiter(t, rdb, limits.Config{VPSMax: 1, TenantMax: 1, Lease: lease})
	other := newLimiter(t, db.Client(t), limits.Config{VPSMax: 1, TenantMax: 1, Lease: lease})
	slot, err := l.Acquire(t.Context(), "vps_fo", "ten_fo")
	if err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	const away = time.Second
	restored := make(chan time.Time, 1)
	go func() {
		time.Sleep(away)
		proxy.Restore()
		restored <- time.Now()
	}()
	start := time.Now()
	slot.Release(t.Context())
	took := time.Since(start)
	back := <-restored
	n, err := other.InUse(t.Context(), limits.KindVPS, "vps_fo")
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("Release returned after %s with Redis away for %s; the slot is still taken (%d in use), until its lease", took, away, n)
	}
	t.Logf("Redis away for %s: Release returned %s after Redis answered again, the slot freed", away, time.Since(back).Round(time.Millisecond))
	if s, err := other.Acquire(t.Context(), "vps_fo", "ten_fo"); err != nil {
		t.Errorf("slot after release: %v", err)
	} else {
		s.Release(t.Context())
	}
}

// TestLimitsOnRedisCluster: the limits and the queue on a Redis Cluster of
// three masters and three replicas, through CHOM's redis-cluster:// client.
// Two worker processes with 6 slots each run 12 tasks of two tenants, all on
// one server whose limit is 3 and each tenant's 2: never more than 3 run at
// once on the server nor 2 for a tenant, and both limits are reached. The
// acquire script takes keys of a VPS and of a tenant in one call: outside one
// hash slot it would fail with CROSSSLOT, and Acquire, which fails open when
// Redis errs, would let every task through.
func TestLimitsOnRedisCluster(t *testing.T) {
	t.Parallel()
	start := time.Now()
	rc := testenv.StartRedisCluster(t, testenv.RedisClusterConfig{Password: "limits-pw"})
	up := time.Since(start)
	newClient := func() redis.UniversalClient {
		c, err := queue.NewRedisClient(rc.URL, 8)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	const vpsMax, tenantMax, n = 3, 2, 12
	l := newLimiter(t, newClient(), limits.Config{VPSMax: vpsMax, TenantMax: tenantMax})
	g := newGauge(150 * time.Millisecond)
	f := startFleet(t, newClient, 2, 6, l.Provisioner(g))
	for i := range n {
		f.enqueue(t, job{Site: fmt.Sprintf("site_%d", i), Tenant: fmt.Sprintf("ten_%d", i%2), VPS: "vps_one"})
	}
	f.wait(t, 60*time.Second)
	if p := g.peak.Load(); p != vpsMax {
		t.Errorf("peak concurrency on the server = %d, want exactly the limit %d", p, vpsMax)
	}
	g.mu.Lock()
	reached := false
	for ten, m := range g.tenMax {
		if m > tenantMax {
			t.Errorf("tenant %s peaked at %d jobs at once, over its limit %d", ten, m, tenantMax)
		}
		reached = reached || m == tenantMax
	}
	g.mu.Unlock()
	if !reached {
		t.Errorf("no tenant reached its limit %d", tenantMax)
	}
	if f.deferred.Load() == 0 {
		t.Error("no attempt met a busy limit; the test proves nothing")
	}
	ctx := t.Context()
	for _, k := range []struct{ kind, id string }{{limits.KindVPS, "vps_one"}, {limits.KindTenant, "ten_0"}, {limits.KindTenant, "ten_1"}} {
		if got, err := l.InUse(ctx, k.kind, k.id); err != nil || got != 0 {
			t.Errorf("%s %s: slots held after all tasks = %d, %v; want 0", k.kind, k.id, got, err)
		}
	}
	// Where the keys live: the semaphores share one slot, the queue's keys
	// another (asynq's "{default}" tag).
	lm, _, err := rc.Owners(ctx, "{chom:limits}")
	if err != nil {
		t.Fatal(err)
	}
	qm, _, err := rc.Owners(ctx, "asynq:{default}:pending")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster up in %s; %d tasks of 2 tenants on one server (limits %d per server, %d per tenant): peak %d, %d deferred attempts, retried %d; "+
		"limits on master %s, default queue on master %s", up.Round(time.Millisecond), n, vpsMax, tenantMax, g.peak.Load(), f.deferred.Load(), f.retried.Load(), lm.Addr, qm.Addr)
}
