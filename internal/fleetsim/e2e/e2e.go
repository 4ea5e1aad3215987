// Package e2e runs the health sweep end to end against a simulated fleet: the
// fleet's servers registered as VPS rows (with their pinned host keys), the
// sweep's tick enqueued as the scheduler enqueues it, and real `chom worker`
// processes taking the sweep and the per-server checks off asynq, probing the
// fleet over SSH and recording the results in PostgreSQL. It measures from the
// tick to the last check recorded, and reads back the ledger of a period:
// checks per server, results, events.
//
// scripts/load/sweep.sh measures with it (scripts/load/sweep) and the test of
// this package proves with it, on a small fleet with dead servers, that every
// server gets exactly one check per period and each transition one event. It
// is test tooling: no production code imports it.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/internal/fleetsim"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
	"github.com/chomhq/chom/workers"
)

// Register inserts one active VPS row per server of the fleet, each with the
// host key its server presents pinned and created at createdAt (before the
// first period swept), in batches of 1,000 rows.
func Register(ctx context.Context, db *bun.DB, servers []fleetsim.Server, createdAt time.Time) error {
	const batch = 1000
	createdAt = createdAt.UTC().Truncate(time.Microsecond)
	for start := 0; start < len(servers); start += batch {
		rows := make([]models.VPSServer, 0, batch)
		for _, s := range servers[start:min(start+batch, len(servers))] {
			t := s.Target
			rows = append(rows, models.VPSServer{
				ID: t.Server.ID, Hostname: t.Server.Hostname, IPAddress: t.Server.IPAddress, SSHPort: t.Server.SSHPort,
				Provider: "fleetsim", Region: "loopback", Allocation: models.AllocationShared, SiteCapacity: 100,
				Status: models.VPSStatusActive, HealthStatus: models.HealthUnknown, HostKey: t.HostKey,
				CreatedAt: createdAt, UpdatedAt: createdAt,
			})
		}
		if _, err := db.NewInsert().Model(&rows).Exec(ctx); err != nil {
			return fmt.Errorf("register servers %d..%d: %w", start, start+len(rows)-1, err)
		}
	}
	return nil
}

// WorkerConfig says how to run the `chom worker` processes.
type WorkerConfig struct {
	// Chom is the path of the chom binary.
	Chom string
	// DatabaseURL and RedisURL are CHOM_DATABASE_URL and CHOM_REDIS_URL.
	DatabaseURL, RedisURL string
	// KeyFile is the private key the probe logs in with (CHOM_SSH_KEY_FILE).
	KeyFile string
	// HTTPPort is the fleet's HTTP port (CHOM_HEALTH_HTTP_PORT).
	HTTPPort int
	// LocalRoot is CHOM_LOCAL_ROOT (the worker's driver, unused by the sweep).
	LocalRoot string
	// Env is added to each worker's environment after the above
	// (CHOM_WORKER_CONCURRENCY, CHOM_HEALTH_HYSTERESIS, …).
	Env []string
	// Pprof, when set, gives each worker PPROF_LISTEN on a free loopback
	// port (a binary built with -tags pprof serves net/http/pprof there).
	Pprof bool
	// Stderr receives the workers' logs; nil discards them.
	Stderr io.Writer
}

// Worker is one running `chom worker` process.
type Worker struct {
	Cmd *exec.Cmd
	// PprofAddr is its net/http/pprof address ("" without WorkerConfig.Pprof).
	PprofAddr string
	done      chan struct{}
}

// StartWorker starts one `chom worker` with cfg and waits until it answers on
// its pprof address (with Pprof) or has run a second without exiting.
func StartWorker(ctx context.Context, cfg WorkerConfig) (*Worker, error) {
	env := append(os.Environ(),
		"CHOM_DATABASE_URL="+cfg.DatabaseURL, "CHOM_REDIS_URL="+cfg.RedisURL,
		"CHOM_DRIVER=local", "CHOM_LOCAL_ROOT="+cfg.LocalRoot,
		"CHOM_HEALTH_PROBE=ssh", "CHOM_SSH_KEY_FILE="+cfg.KeyFile, "CHOM_HEALTH_HTTP_PORT="+strconv.Itoa(cfg.HTTPPort),
		"CHOM_LOG_LEVEL=warn", "CHOM_METRICS_LISTEN=127.0.0.1:0")
	env = append(env, cfg.Env...)
	w := &Worker{done: make(chan struct{})}
	if cfg.Pprof {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		w.PprofAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		env = append(env, "PPROF_LISTEN="+w.PprofAddr)
	}
	w.Cmd = exec.Command(cfg.Chom, "worker")
	w.Cmd.Env = env
	w.Cmd.Stdout, w.Cmd.Stderr = cfg.Stderr, cfg.Stderr
	if err := w.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start chom worker: %w", err)
	}
	go func() { _ = w.Cmd.Wait(); close(w.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-w.done:
			return nil, fmt.Errorf("chom worker exited at start: %v", w.Cmd.ProcessState)
		case <-ctx.Done():
			w.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if w.PprofAddr == "" {
			if time.Until(deadline) < 29*time.Second {
				return w, nil
			}
			continue
		}
		if c, err := net.DialTimeout("tcp", w.PprofAddr, time.Second); err == nil {
			_ = c.Close()
			return w, nil
		}
		if time.Now().After(deadline) {
			w.Stop()
			return nil, fmt.Errorf("chom worker: pprof on %s did not answer within 30s (was the binary built with -tags pprof?)", w.PprofAddr)
		}
	}
}

// Stop asks the worker to shut down (SIGTERM) and kills it after 15 s.
func (w *Worker) Stop() {
	_ = w.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.done:
	case <-time.After(15 * time.Second):
		_ = w.Cmd.Process.Kill()
		<-w.done
	}
}

// Exited reports whether the worker has exited.
func (w *Worker) Exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// ProcCPU returns the CPU time (user + system) process pid has used.
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) start at state.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	const hz = 100 // USER_HZ, 100 on every Linux architecture Go supports
	return time.Duration(ut+st) * time.Second / hz, nil
}

// ProcRSS returns the resident set size of process pid in bytes.
func ProcRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// EnqueueTick enqueues the health sweep of the period starting at period
// exactly as the scheduler's tick does (same task, ID and retention), so the
// workers take it from there. period must be whole seconds: check task IDs
// carry it so.
func EnqueueTick(ctx context.Context, client *asynq.Client, period time.Time, interval time.Duration) error {
	if !period.Equal(period.Truncate(time.Second)) {
		return fmt.Errorf("tick %s: a period starts on a whole second", period.Format(time.RFC3339Nano))
	}
	task, err := queue.NewHealthSweepTask(period, interval)
	if err != nil {
		return err
	}
	_, err = client.EnqueueContext(ctx, task, asynq.TaskID(workers.PeriodicTaskID("health_sweep", period)), asynq.Retention(interval))
	if err != nil {
		return fmt.Errorf("enqueue health sweep tick %s: %w", period.Format(time.RFC3339), err)
	}
	return nil
}

// Progress is how far the checks of one period have come.
type Progress struct {
	// Checks is how many checks of the period are recorded.
	Checks int
	// Last is the latest check's checked_at.
	Last time.Time
}

// PeriodProgress reads the progress of the sweep period starting at period.
func PeriodProgress(ctx context.Context, db bun.IDB, period time.Time) (Progress, error) {
	var row struct {
		N    int        `bun:"n"`
		Last *time.Time `bun:"last"`
	}
	err := db.NewSelect().Model((*models.VPSHealthCheck)(nil)).ColumnExpr("COUNT(*) AS n, MAX(checked_at) AS last").
		Where("period_start = ? AND source = ?", period.UTC(), models.HealthSourceSweep).Scan(ctx, &row)
	if err != nil {
		return Progress{}, fmt.Errorf("progress of sweep %s: %w", period.Format(time.RFC3339), err)
	}
	p := Progress{Checks: row.N}
	if row.Last != nil {
		p.Last = row.Last.UTC()
	}
	return p, nil
}

// WaitChecks polls every 250 ms (a count over the period index; the sweep
// time comes from the checks' own checked_at) until n checks of the period are recorded, and
// returns the progress then. It fails when ctx ends first, or when alive
// reports an error (a worker died).
func WaitChecks(ctx context.Context, db bun.IDB, period time.Time, n int, alive func() error) (Progress, error) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var last Progress
	for {
		p, err := PeriodProgress(ctx, db, period)
		if err != nil {
			return last, err
		}
		last = p
		if p.Checks >= n {
			return p, nil
		}
		if alive != nil {
			if err := alive(); err != nil {
				return p, err
			}
		}
		select {
		case <-ctx.Done():
			return p, fmt.Errorf("sweep %s: %d of %d checks recorded: %w", period.Format(time.RFC3339), p.Checks, n, ctx.Err())
		case <-t.C:
		}
	}
}

// Ledger is what one period recorded, read back from the database.
type Ledger struct {
	// Checks is the number of checks of the period; Servers the servers
	// they cover; MaxPerServer the most checks any one server got.
	Checks, Servers, MaxPerServer int
	// ByID is each server's check of the period (the first, if several).
	ByID map[string]models.VPSHealthCheck
	// Events is the number of vps.health_changed events of the period's
	// checks; EventServers the servers they name; EventsByID each server's
	// count.
	Events, EventServers int
	EventsByID           map[string]int
}

// ReadLedger reads the ledger of the sweep period starting at period.
func ReadLedger(ctx context.Context, db bun.IDB, period time.Time) (Ledger, error) {
	key := period.UTC().Format(time.RFC3339)
	var checks []models.VPSHealthCheck
	if err := db.NewSelect().Model(&checks).Where("period_start = ? AND source = ?", period.UTC(), models.HealthSourceSweep).
		OrderExpr("id").Scan(ctx); err != nil {
		return Ledger{}, fmt.Errorf("checks of %s: %w", key, err)
	}
	l := Ledger{Checks: len(checks), ByID: map[string]models.VPSHealthCheck{}, EventsByID: map[string]int{}}
	per := map[string]int{}
	for _, c := range checks {
		if per[c.VPSID]++; per[c.VPSID] == 1 {
			l.ByID[c.VPSID] = c
		}
		l.MaxPerServer = max(l.MaxPerServer, per[c.VPSID])
	}
	l.Servers = len(per)
	var evs []models.OutboxEvent
	if err := db.NewSelect().Model(&evs).Where("event_type = ?", events.TypeVPSHealthChanged).Scan(ctx); err != nil {
		return Ledger{}, fmt.Errorf("health events: %w", err)
	}
	for _, e := range evs {
		if !strings.Contains(e.Data, `"check_key":"`+key+`"`) {
			continue
		}
		l.Events++
		l.EventsByID[e.Subject]++
	}
	l.EventServers = len(l.EventsByID)
	return l, nil
}

// freePort returns a TCP port free on 127.0.0.1 just now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
