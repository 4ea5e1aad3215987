package fleetsim_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/breaker"
	sshprobe "github.com/chomhq/chom/drivers/ssh"
	"github.com/chomhq/chom/internal/fleetsim"
)

// Environment of a worker process (the test binary re-executed).
const (
	envWorker      = "CHOM_FLEETSIM_WORKER" // targets file: run as a worker
	envKey         = "CHOM_FLEETSIM_KEY"
	envHTTPPort    = "CHOM_FLEETSIM_HTTP_PORT"
	envConcurrency = "CHOM_FLEETSIM_CONCURRENCY"
	envDialTimeout = "CHOM_FLEETSIM_DIAL_TIMEOUT"
	envCPUProfile  = "CHOM_FLEETSIM_CPUPROFILE"
)

// EnvFleetSize sets the size of the fleet of TestFleetSweep (default 200).
const EnvFleetSize = "CHOM_FLEET_SIZE"

func TestMain(m *testing.M) {
	if path := os.Getenv(envWorker); path != "" {
		if err := worker(path); err != nil {
			fmt.Fprintln(os.Stderr, "fleetsim worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// worker is a sweep worker process: an SSH probe pool with per-VPS breakers,
// as a CHOM worker runs it, fed with its share of the fleet.
func worker(targetsPath string) error {
	if _, err := fleetsim.RaiseFileLimit(); err != nil {
		return err
	}
	b, err := os.ReadFile(targetsPath)
	if err != nil {
		return err
	}
	var targets []drivers.HealthTarget
	if err := json.Unmarshal(b, &targets); err != nil {
		return err
	}
	httpPort, _ := strconv.Atoi(os.Getenv(envHTTPPort))
	concurrency, _ := strconv.Atoi(os.Getenv(envConcurrency))
	dialTimeout, _ := time.ParseDuration(os.Getenv(envDialTimeout))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	probe, err := sshprobe.New(sshprobe.Config{
		KeyFile:     os.Getenv(envKey),
		HTTPPort:    httpPort,
		DialTimeout: dialTimeout,
		MaxConns:    len(targets),
		Logger:      log,
	})
	if err != nil {
		return err
	}
	defer probe.Close()
	// One failed sweep opens a dead server's breaker, so the second sweep
	// shows what open breakers cost (production default: 3 failures).
	reg, err := breaker.New(breaker.Config{Failures: 1, OpenTimeout: 10 * time.Minute, Logger: log})
	if err != nil {
		return err
	}
	if p := os.Getenv(envCPUProfile); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	return fleetsim.RunWorker(ctx, os.Stdin, os.Stdout, reg.Wrap(probe), targets, concurrency, cpuTime)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type workerProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// TestFleetSweep sweeps a simulated fleet twice with two worker processes of
// 200 checks in flight each: cold (every check dials and handshakes), then
// warm (pooled connections; dead servers' breakers open, so no dial). Every
// live server must be measured (its load read back exactly) and every dead one
// marked unreachable, then refused by its open breaker. With CHOM_FLEET_SIZE
// (scripts/fleet-sweep.sh: 10000) it is the scale proof and prints the figures.
func TestFleetSweep(t *testing.T) {
	t.Parallel()
	// The small fleet of the normal (race-enabled) suite runs fewer
	// handshakes at once: the race detector makes each one ~10x dearer, and
	// 200 at once on two cores would all outlast the dial timeout.
	size, workers, concurrency := 200, 2, 16
	// The production default; lower would make the race-enabled run flaky on
	// a loaded machine. It is what each black hole costs its worker's slot.
	dialTimeout := 5 * time.Second
	if s := os.Getenv(EnvFleetSize); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("%s=%q: %v", EnvFleetSize, s, err)
		}
		size, concurrency = n, 200
	}
	files, err := fleetsim.RaiseFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	if need := uint64(size + 2000); files < need { // one pooled connection per server, plus slack
		t.Fatalf("RLIMIT_NOFILE is %d, a fleet of %d needs about %d: run as root or raise the hard limit", files, size, need)
	}
	fleet, err := fleetsim.Start(fleetsim.Config{Size: size, ClosedEvery: 50, BlackholeEvery: 100,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fleet.Close)
	counts := fleet.Counts()
	t.Logf("fleet: %d servers on 127.1.0.1.. ports ssh %d http %d: %v", size, fleet.SSHPort, fleet.HTTPPort, counts)

	dir := t.TempDir()
	keyPath := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(keyPath, fleet.ClientKeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	procs := make([]*workerProc, workers)
	for w := range workers {
		// Worker w takes every workers-th server, as asynq would spread the
		// per-server tasks of a sweep over the worker processes.
		var share []drivers.HealthTarget
		for i := w; i < size; i += workers {
			share = append(share, fleet.Servers[i].Target)
		}
		b, err := json.Marshal(share)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, fmt.Sprintf("targets%d.json", w))
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envWorker+"="+path, envKey+"="+keyPath,
			envHTTPPort+"="+strconv.Itoa(fleet.HTTPPort), envConcurrency+"="+strconv.Itoa(concurrency),
			envDialTimeout+"="+dialTimeout.String())
		if dir := os.Getenv("CHOM_FLEET_PROFILE_DIR"); dir != "" {
			cmd.Env = append(cmd.Env, envCPUProfile+"="+filepath.Join(dir, fmt.Sprintf("worker%d.pprof", w)))
		}
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p := &workerProc{cmd: cmd, in: in, out: bufio.NewReaderSize(out, 1<<20)}
		procs[w] = p
		t.Cleanup(func() {
			_ = p.in.Close() // ends RunWorker
			done := make(chan struct{})
			go func() { _ = p.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = p.cmd.Process.Kill()
				<-done
			}
		})
	}

	prevCPU := make([]time.Duration, workers) // each worker's CPU time after the previous sweep
	for sweep := 1; sweep <= 2; sweep++ {
		simCPU := cpuTime()
		start := time.Now()
		for _, p := range procs {
			if _, err := io.WriteString(p.in, "sweep\n"); err != nil {
				t.Fatal(err)
			}
		}
		merged := map[string]fleetsim.Result{}
		var workerCPU time.Duration
		for w, p := range procs {
			line, err := p.out.ReadBytes('\n')
			if err != nil {
				t.Fatalf("worker %d: %v", w, err)
			}
			var r fleetsim.WorkerReply
			if err := json.Unmarshal(line, &r); err != nil {
				t.Fatalf("worker %d reply: %v", w, err)
			}
			for id, res := range r.Results {
				merged[id] = res
			}
			workerCPU += r.CPU - prevCPU[w]
			prevCPU[w] = r.CPU
			t.Logf("sweep %d worker %d: %d checks in %v: %v", sweep, w, len(r.Results), r.Duration.Round(time.Millisecond), r.Counts)
		}
		wall := time.Since(start)
		name := map[int]string{1: "cold", 2: "warm"}[sweep]
		figure := fmt.Sprintf("FLEET sweep=%d (%s) servers=%d workers=%d concurrency=%d wall=%v simulator_cpu=%v workers_cpu_total=%v",
			sweep, name, size, workers, concurrency, wall.Round(time.Millisecond),
			(cpuTime() - simCPU).Round(time.Millisecond), workerCPU.Round(time.Millisecond))
		t.Log(figure)
		if os.Getenv(EnvFleetSize) != "" {
			fmt.Println(figure)
		}

		wantDead := fleetsim.OutcomeUnreachable
		if sweep == 2 {
			wantDead = fleetsim.OutcomeOpen
		}
		bad := 0
		for _, s := range fleet.Servers {
			got, ok := merged[s.Target.Server.ID]
			switch {
			case !ok:
				t.Errorf("sweep %d: %s was not checked", sweep, s.Target.Server.ID)
			case s.Kind == fleetsim.KindLive && (got.Outcome != fleetsim.OutcomeOK || got.Load1 != s.Load1):
				t.Errorf("sweep %d: live %s: %+v, want ok with load %.2f", sweep, s.Target.Server.ID, got, s.Load1)
			case s.Kind != fleetsim.KindLive && got.Outcome != wantDead:
				t.Errorf("sweep %d: %s %s: %+v, want %s", sweep, s.Kind, s.Target.Server.ID, got, wantDead)
			default:
				continue
			}
			if bad++; bad >= 10 {
				t.Fatalf("sweep %d: too many wrong results", sweep)
			}
		}
		if os.Getenv(EnvFleetSize) != "" && sweep == 2 && wall > 60*time.Second {
			t.Errorf("warm sweep of %d servers took %v, more than the 60s interval", size, wall)
		}
	}
}
