package e2e_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/internal/fleetsim"
	"github.com/chomhq/chom/internal/fleetsim/e2e"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

var chomBin string

func TestMain(m *testing.M) { testenv.ChomMain(m, "sweep-e2e", false, &chomBin) }

// A sweep goes end to end through the queue: the tick enqueued as the
// scheduler enqueues it, two `chom worker` processes taking the sweep and the
// 200 per-server checks off asynq, probing a simulated fleet over SSH (10
// closed ports and 4 black holes among them) and recording the results. The
// ledger of each period: every server exactly one check, live servers
// measured (their load read back), dead ones unreachable, and one event per
// status change — 200 on the first sweep (unknown → a status), then exactly
// the 10 servers whose load was raised between the sweeps (healthy →
// unhealthy, hysteresis 1).
func TestSweepThroughWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the chom binary")
	}
	const size = 200
	ctx := t.Context()
	dsn := testenv.PostgresDSN(t)
	rdb := testenv.Redis(t)
	if _, err := fleetsim.RaiseFileLimit(); err != nil {
		t.Fatal(err)
	}
	fleet, err := fleetsim.Start(fleetsim.Config{Size: size, ClosedEvery: 20, BlackholeEvery: 50,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fleet.Close)
	t.Logf("fleet: %d servers: %v", size, fleet.Counts())

	db, err := models.Open(ctx, dsn, models.PoolConfig{MaxOpenConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if _, err := models.MigrateUp(ctx, db); err != nil {
		t.Fatal(err)
	}
	created := time.Now().Add(-time.Minute)
	if err := e2e.Register(ctx, db, fleet.Servers, created); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	keyFile := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(keyFile, fleet.ClientKeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &testenv.SyncBuffer{}
	cfg := e2e.WorkerConfig{Chom: chomBin, DatabaseURL: dsn, RedisURL: rdb.URL, KeyFile: keyFile,
		HTTPPort: fleet.HTTPPort, LocalRoot: filepath.Join(dir, "vps"), Stderr: logs,
		Env: []string{"CHOM_HEALTH_HYSTERESIS=1", "CHOM_WORKER_CONCURRENCY=16", "CHOM_DB_MAX_CONNS=8"}}
	var procs []*e2e.Worker
	for range 2 {
		w, err := e2e.StartWorker(ctx, cfg)
		if err != nil {
			t.Fatalf("%v\n%s", err, logs)
		}
		procs = append(procs, w)
		t.Cleanup(w.Stop)
	}
	alive := func() error {
		for i, w := range procs {
			if w.Exited() {
				return fmt.Errorf("worker %d exited: %v\n%s", i, w.Cmd.ProcessState, logs)
			}
		}
		return nil
	}
	opt, err := asynq.ParseRedisURI(rdb.URL)
	if err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClient(opt)
	t.Cleanup(func() { _ = client.Close() })

	raised := map[string]bool{} // the servers made unhealthy before sweep 2
	for i, s := range fleet.Servers {
		if s.Kind == fleetsim.KindLive && len(raised) < 10 && i%7 == 3 {
			raised[s.Target.Server.ID] = true
		}
	}
	period := time.Now().Truncate(time.Second)
	for sweep := 1; sweep <= 2; sweep++ {
		if sweep == 2 {
			for i, s := range fleet.Servers {
				if raised[s.Target.Server.ID] {
					fleet.SetLoad(i, 9) // 4.5 per CPU: unhealthy
				}
			}
			next := period.Add(time.Second)
			time.Sleep(time.Until(next))
			period = next
		}
		before := fleet.Stats()
		start := time.Now()
		if err := e2e.EnqueueTick(ctx, client, period, time.Minute); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		_, err := e2e.WaitChecks(wctx, db, period, size, alive)
		cancel()
		if err != nil {
			t.Fatalf("sweep %d: %v\n%s", sweep, err, logs)
		}
		after := fleet.Stats()
		t.Logf("sweep %d: %d checks recorded in %v; the fleet saw %d SSH handshakes and %d probe commands",
			sweep, size, time.Since(start).Round(time.Millisecond), after.Handshakes-before.Handshakes, after.Sessions-before.Sessions)
		// A late duplicate would land after the count is reached: give the
		// workers a moment to write one before the ledger is read.
		time.Sleep(500 * time.Millisecond)
		l, err := e2e.ReadLedger(ctx, db, period)
		if err != nil {
			t.Fatal(err)
		}
		if l.Checks != size || l.Servers != size || l.MaxPerServer != 1 {
			t.Errorf("sweep %d: %d checks of %d servers (at most %d per server), want exactly one check of each of %d",
				sweep, l.Checks, l.Servers, l.MaxPerServer, size)
		}
		wantEvents := size
		if sweep == 2 {
			wantEvents = len(raised)
		}
		if l.Events != wantEvents || l.EventServers != wantEvents {
			t.Errorf("sweep %d: %d health events naming %d servers, want %d, one per server whose status changed",
				sweep, l.Events, l.EventServers, wantEvents)
		}
		for i, s := range fleet.Servers {
			id := s.Target.Server.ID
			c, ok := l.ByID[id]
			if !ok {
				continue // counted above
			}
			if n := l.EventsByID[id]; n > 1 || (sweep == 2 && (n == 1) != raised[id]) {
				t.Errorf("sweep %d: %s: %d events (raised %v)", sweep, id, n, raised[id])
			}
			switch {
			case s.Kind != fleetsim.KindLive:
				if c.Reachable || c.Result != models.HealthUnhealthy {
					t.Errorf("sweep %d: %s server %s: reachable %v result %s (%s), want unreachable and unhealthy",
						sweep, s.Kind, id, c.Reachable, c.Result, c.Reason)
				}
			case !c.Reachable || c.Load1 != fleet.Load(i) || c.HTTPStatus != 200:
				t.Errorf("sweep %d: live %s: reachable %v load %.2f http %d (%s), want reachable, load %.2f, http 200",
					sweep, id, c.Reachable, c.Load1, c.HTTPStatus, c.Reason, fleet.Load(i))
			case raised[id] && sweep == 2 && (c.Result != models.HealthUnhealthy || c.StatusAfter != models.HealthUnhealthy):
				t.Errorf("sweep 2: raised %s: result %s status %s (%s), want unhealthy", id, c.Result, c.StatusAfter, c.Reason)
			case (!raised[id] || sweep == 1) && c.Result != models.HealthHealthy:
				t.Errorf("sweep %d: live %s: result %s (%s), want healthy", sweep, id, c.Result, c.Reason)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}
}
