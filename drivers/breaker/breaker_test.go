package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sony/gobreaker/v2"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/breaker"
)

// fakeProbe is a drivers.HealthProbe built from a function field; it counts
// the calls that reached it (the "dials").
type fakeProbe struct {
	calls   atomic.Int64
	ProbeFn func(ctx context.Context, t drivers.HealthTarget) (drivers.HealthReport, error)
}

func (f *fakeProbe) Probe(ctx context.Context, t drivers.HealthTarget) (drivers.HealthReport, error) {
	f.calls.Add(1)
	return f.ProbeFn(ctx, t)
}

func target(id string) drivers.HealthTarget {
	return drivers.HealthTarget{Server: drivers.Server{ID: id, IPAddress: "192.0.2.1", SSHPort: 22}}
}

func newRegistry(t *testing.T, cfg breaker.Config) *breaker.Registry {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := breaker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var errDown = fmt.Errorf("%w: dial: connection refused", drivers.ErrUnreachable)

func TestBreakerOutcomes(t *testing.T) {
	t.Parallel()
	mismatch := fmt.Errorf("%w: server presented another key", drivers.ErrHostKeyMismatch)
	garbage := errors.New("parse probe output: loadavg: section missing")
	tests := []struct {
		name      string
		err       error // what the inner probe returns on every call
		calls     int   // checks made
		wantInner int64 // checks that reached the inner probe
		wantState string
		wantIs    []error // the last error wraps each
	}{
		{"unreachable trips after 3 and then costs nothing", errDown, 10, 3, breaker.StateOpen,
			[]error{drivers.ErrUnreachable, gobreaker.ErrOpenState}},
		{"two failures keep it closed", errDown, 2, 2, breaker.StateClosed, []error{drivers.ErrUnreachable}},
		{"host key mismatch is never hidden", mismatch, 10, 10, breaker.StateClosed, []error{drivers.ErrHostKeyMismatch}},
		{"garbage output is a reachable server", garbage, 10, 10, breaker.StateClosed, []error{garbage}},
		{"cancellation is nobody's fault", context.Canceled, 10, 10, breaker.StateClosed, []error{context.Canceled}},
		{"healthy", nil, 5, 5, breaker.StateClosed, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := newRegistry(t, breaker.Config{Failures: 3, OpenTimeout: time.Hour})
			fake := &fakeProbe{ProbeFn: func(context.Context, drivers.HealthTarget) (drivers.HealthReport, error) {
				return drivers.HealthReport{Reachable: tt.err == nil}, tt.err
			}}
			p := reg.Wrap(fake)
			var err error
			for range tt.calls {
				_, err = p.Probe(t.Context(), target("vps_a"))
			}
			if got := fake.calls.Load(); got != tt.wantInner {
				t.Errorf("inner probe called %d times, want %d", got, tt.wantInner)
			}
			if got := reg.State("vps_a"); got != tt.wantState {
				t.Errorf("state %q, want %q", got, tt.wantState)
			}
			if tt.wantIs == nil && err != nil {
				t.Errorf("err = %v, want nil", err)
			}
			for _, want := range tt.wantIs {
				if !errors.Is(err, want) {
					t.Errorf("err = %v, does not wrap %v", err, want)
				}
			}
		})
	}
}

func TestBreakerHalfOpenRecovers(t *testing.T) {
	t.Parallel()
	var changes []string
	var mu sync.Mutex
	reg := newRegistry(t, breaker.Config{Failures: 1, OpenTimeout: 50 * time.Millisecond,
		OnStateChange: func(name, from, to string) {
			mu.Lock()
			defer mu.Unlock()
			changes = append(changes, name+":"+from+"->"+to)
		}})
	var up atomic.Bool
	fake := &fakeProbe{ProbeFn: func(context.Context, drivers.HealthTarget) (drivers.HealthReport, error) {
		if up.Load() {
			return drivers.HealthReport{Reachable: true}, nil
		}
		return drivers.HealthReport{}, errDown
	}}
	p := reg.Wrap(fake)
	ctx := t.Context()
	if _, err := p.Probe(ctx, target("x1")); !errors.Is(err, drivers.ErrUnreachable) {
		t.Fatalf("first check: %v", err)
	}
	if _, err := p.Probe(ctx, target("x1")); !errors.Is(err, gobreaker.ErrOpenState) {
		t.Fatalf("open breaker: %v", err)
	}
	if got := reg.States(); !cmp.Equal(got, map[string]string{"vps_x1": "open"}) {
		t.Errorf("States() = %v", got)
	}
	up.Store(true)
	time.Sleep(80 * time.Millisecond)
	r, err := p.Probe(ctx, target("x1"))
	if err != nil || !r.Reachable {
		t.Fatalf("half-open probe: %+v, %v", r, err)
	}
	if got := fake.calls.Load(); got != 2 {
		t.Errorf("inner calls %d, want 2 (the open period cost nothing)", got)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"vps_x1:closed->open", "vps_x1:open->half-open", "vps_x1:half-open->closed"}
	if diff := cmp.Diff(want, changes); diff != "" {
		t.Errorf("state changes (-want +got):\n%s", diff)
	}
}

func TestBreakerPerServerAndBounded(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t, breaker.Config{Failures: 1, OpenTimeout: time.Hour, MaxServers: 3})
	fake := &fakeProbe{ProbeFn: func(_ context.Context, t drivers.HealthTarget) (drivers.HealthReport, error) {
		if t.Server.ID == "vps_dead" {
			return drivers.HealthReport{}, errDown
		}
		return drivers.HealthReport{Reachable: true}, nil
	}}
	p := reg.Wrap(fake)
	ctx := t.Context()
	_, _ = p.Probe(ctx, target("vps_dead"))
	for _, id := range []string{"vps_a", "vps_b", "vps_c", "vps_d"} {
		if _, err := p.Probe(ctx, target(id)); err != nil {
			t.Errorf("%s: a dead neighbour affected a live server: %v", id, err)
		}
	}
	if n := reg.Len(); n != 3 {
		t.Errorf("registry holds %d breakers, want the bound 3", n)
	}
	// The open breaker outlives closed ones under eviction.
	if got := reg.State("vps_dead"); got != breaker.StateOpen {
		t.Errorf("vps_dead state %q after eviction, want open", got)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	_, err := breaker.New(breaker.Config{OpenTimeout: -1})
	if err == nil {
		t.Fatal("New accepted a config without logger and with a negative timeout")
	}
	for _, want := range []string{"OpenTimeout", "Logger"} {
		if !contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
