package fleetsim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/chomhq/chom/drivers"
)

// Outcomes of one check, as Sweep records them.
const (
	OutcomeOK          = "ok"          // measured
	OutcomeUnreachable = "unreachable" // dialled and failed
	OutcomeOpen        = "open"        // refused by an open breaker: no dial
	OutcomeMismatch    = "mismatch"    // host key mismatch
	OutcomeError       = "error"       // anything else
)

// Result is what one check found.
type Result struct {
	Outcome string  `json:"outcome"`
	Load1   float64 `json:"load1,omitempty"`
	Error   string  `json:"error,omitempty"`
}

// SweepResult is what one sweep found.
type SweepResult struct {
	Duration time.Duration     `json:"duration_ns"`
	Results  map[string]Result `json:"results"` // by VPS ID
	Counts   map[string]int    `json:"counts"`  // by outcome
	// P50 and P99 are the latencies of the checks, dead ones included.
	P50, P99 time.Duration `json:"-"`
}

// Sweep checks every target once through probe, at most concurrency at a
// time, and returns what each check found. It stops early when ctx ends (the
// checks not run are missing from Results).
func Sweep(ctx context.Context, probe drivers.HealthProbe, targets []drivers.HealthTarget, concurrency int) SweepResult {
	start := time.Now()
	res := SweepResult{Results: make(map[string]Result, len(targets)), Counts: map[string]int{}}
	var mu sync.Mutex
	lat := make([]time.Duration, 0, len(targets))
	work := make(chan drivers.HealthTarget)
	var wg sync.WaitGroup
	for range max(concurrency, 1) {
		wg.Go(func() {
			for t := range work {
				s := time.Now()
				r, err := probe.Probe(ctx, t)
				d := time.Since(s)
				out := classify(r, err)
				mu.Lock()
				res.Results[t.Server.ID] = out
				res.Counts[out.Outcome]++
				lat = append(lat, d)
				mu.Unlock()
			}
		})
	}
feed:
	for _, t := range targets {
		select {
		case work <- t:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	res.Duration = time.Since(start)
	if len(lat) > 0 {
		slices.Sort(lat)
		res.P50, res.P99 = lat[len(lat)/2], lat[len(lat)*99/100]
	}
	return res
}

func classify(r drivers.HealthReport, err error) Result {
	switch {
	case err == nil:
		return Result{Outcome: OutcomeOK, Load1: r.Load1}
	case errors.Is(err, drivers.ErrHostKeyMismatch):
		return Result{Outcome: OutcomeMismatch, Error: err.Error()}
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		return Result{Outcome: OutcomeOpen}
	case errors.Is(err, drivers.ErrUnreachable):
		return Result{Outcome: OutcomeUnreachable, Error: err.Error()}
	default:
		return Result{Outcome: OutcomeError, Error: err.Error()}
	}
}

// WorkerReply is what RunWorker writes, one JSON line per sweep.
type WorkerReply struct {
	SweepResult
	// CPU is the worker process's CPU time (user+system) so far.
	CPU time.Duration `json:"cpu_ns"`
}

// RunWorker is the loop of a sweep worker process: for each line read from in
// ("sweep") it sweeps targets through probe and writes a WorkerReply as one
// JSON line to out. It returns when in ends, or with ctx.
func RunWorker(ctx context.Context, in io.Reader, out io.Writer, probe drivers.HealthProbe, targets []drivers.HealthTarget, concurrency int, cpu func() time.Duration) error {
	sc := bufio.NewScanner(in)
	enc := json.NewEncoder(out)
	for sc.Scan() {
		if sc.Text() != "sweep" {
			return fmt.Errorf("fleetsim worker: unknown command %q", sc.Text())
		}
		res := Sweep(ctx, probe, targets, concurrency)
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := enc.Encode(WorkerReply{SweepResult: res, CPU: cpu()}); err != nil {
			return fmt.Errorf("fleetsim worker: write reply: %w", err)
		}
	}
	return sc.Err()
}
