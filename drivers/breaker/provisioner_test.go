package breaker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/breaker"
)

// fakeDriver is a drivers.Provisioner, drivers.BackupSource and
// drivers.UsageProbe whose every method returns err and counts the calls that
// reached it.
type fakeDriver struct {
	calls atomic.Int64
	err   atomic.Value // error wrapper
}

type errBox struct{ err error }

func (f *fakeDriver) set(err error) { f.err.Store(errBox{err}) }
func (f *fakeDriver) result() error {
	f.calls.Add(1)
	b, _ := f.err.Load().(errBox)
	return b.err
}

func (f *fakeDriver) Provision(context.Context, drivers.SiteSpec, drivers.ProgressFunc) (drivers.Result, error) {
	if err := f.result(); err != nil {
		return drivers.Result{}, err
	}
	return drivers.Result{DocumentRoot: "/srv/x"}, nil
}
func (f *fakeDriver) Deprovision(context.Context, drivers.SiteSpec) error { return f.result() }
func (f *fakeDriver) Archive(_ context.Context, _ drivers.SiteSpec, _ string, w io.Writer) error {
	if err := f.result(); err != nil {
		return err
	}
	_, err := io.WriteString(w, "archive")
	return err
}
func (f *fakeDriver) Restore(_ context.Context, _ drivers.SiteSpec, _ string, r io.Reader) error {
	if err := f.result(); err != nil {
		return err
	}
	_, err := io.Copy(io.Discard, r)
	return err
}

func (f *fakeDriver) DiskBytes(context.Context, drivers.SiteSpec) (int64, error) {
	if err := f.result(); err != nil {
		return 0, err
	}
	return 4096, nil
}
func (f *fakeDriver) Bandwidth(context.Context, drivers.SiteSpec, time.Time, time.Time) (drivers.Bandwidth, error) {
	if err := f.result(); err != nil {
		return drivers.Bandwidth{}, err
	}
	return drivers.Bandwidth{Bytes: 10, Requests: 1, Files: 1}, nil
}

func spec(vpsID string) drivers.SiteSpec {
	return drivers.SiteSpec{ID: "site_a", TenantID: "ten_a", Domain: "a.example", SiteType: drivers.SiteTypeHTML,
		Server: drivers.Server{ID: vpsID}}
}

// wrapped are the breaker's wrappers of one fake driver.
type wrapped struct {
	prov    drivers.Provisioner
	backups drivers.BackupSource
	usage   drivers.UsageProbe
}

// TestProvisionerBreaker: N unreachable failures open the breaker, after which
// every driver method fails fast (wrapping ErrUnreachable, ErrDeferred and
// ErrOpenState) without calling the inner driver; permanent errors never trip it.
func TestProvisionerBreaker(t *testing.T) {
	t.Parallel()
	mismatch := fmt.Errorf("%w: server presented another key", drivers.ErrHostKeyMismatch)
	invalid := fmt.Errorf("local: provision: %w: domain", drivers.ErrInvalidSpec)
	nginx := errors.New("nginx -t failed")
	busy := fmt.Errorf("limits: vps_a busy: %w", drivers.ErrDeferred)
	tests := []struct {
		name      string
		err       error
		calls     int
		wantInner int64
		wantState string
		wantIs    []error
	}{
		{"unreachable trips after 3", errDown, 10, 3, breaker.StateOpen,
			[]error{drivers.ErrUnreachable, drivers.ErrDeferred, gobreaker.ErrOpenState}},
		{"invalid spec never trips", invalid, 10, 10, breaker.StateClosed, []error{drivers.ErrInvalidSpec}},
		{"host key mismatch never trips", mismatch, 10, 10, breaker.StateClosed, []error{drivers.ErrHostKeyMismatch}},
		{"a failing command is a reachable server", nginx, 10, 10, breaker.StateClosed, []error{nginx}},
		{"a deferred call never reached the server", busy, 10, 10, breaker.StateClosed, []error{drivers.ErrDeferred}},
	}
	methods := []struct {
		name string
		call func(ctx context.Context, w wrapped) error
	}{
		{"Provision", func(ctx context.Context, w wrapped) error {
			_, err := w.prov.Provision(ctx, spec("vps_a"), nil)
			return err
		}},
		{"Deprovision", func(ctx context.Context, w wrapped) error {
			return w.prov.Deprovision(ctx, spec("vps_a"))
		}},
		{"Archive", func(ctx context.Context, w wrapped) error {
			return w.backups.Archive(ctx, spec("vps_a"), drivers.BackupFull, io.Discard)
		}},
		{"Restore", func(ctx context.Context, w wrapped) error {
			return w.backups.Restore(ctx, spec("vps_a"), drivers.BackupFull, strings.NewReader("x"))
		}},
		{"DiskBytes", func(ctx context.Context, w wrapped) error {
			_, err := w.usage.DiskBytes(ctx, spec("vps_a"))
			return err
		}},
		{"Bandwidth", func(ctx context.Context, w wrapped) error {
			_, err := w.usage.Bandwidth(ctx, spec("vps_a"), time.Now().Add(-time.Hour), time.Now())
			return err
		}},
	}
	for _, tt := range tests {
		for _, m := range methods {
			t.Run(tt.name+"/"+m.name, func(t *testing.T) {
				t.Parallel()
				reg := newRegistry(t, breaker.Config{Failures: 3, OpenTimeout: time.Hour})
				fake := &fakeDriver{}
				fake.set(tt.err)
				w := wrapped{reg.WrapProvisioner(fake), reg.WrapBackupSource(fake), reg.WrapUsageProbe(fake)}
				var err error
				for range tt.calls {
					err = m.call(t.Context(), w)
				}
				if got := fake.calls.Load(); got != tt.wantInner {
					t.Errorf("inner calls = %d, want %d", got, tt.wantInner)
				}
				if got := reg.State("vps_a"); got != tt.wantState {
					t.Errorf("state = %s, want %s", got, tt.wantState)
				}
				for _, want := range tt.wantIs {
					if !errors.Is(err, want) {
						t.Errorf("last error %v does not wrap %v", err, want)
					}
				}
				if tt.wantState == breaker.StateClosed && errors.Is(err, gobreaker.ErrOpenState) {
					t.Errorf("closed breaker answered %v", err)
				}
			})
		}
	}
}

// TestSharedBreaker: health probes and jobs share one breaker per server, so
// failed probes make Provision fail fast, other servers are unaffected, and the
// breaker closes again once the server answers.
func TestSharedBreaker(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t, breaker.Config{Failures: 2, OpenTimeout: 50 * time.Millisecond})
	var down atomic.Bool
	down.Store(true)
	probe := &fakeProbe{ProbeFn: func(context.Context, drivers.HealthTarget) (drivers.HealthReport, error) {
		if down.Load() {
			return drivers.HealthReport{}, errDown
		}
		return drivers.HealthReport{Reachable: true}, nil
	}}
	fake := &fakeDriver{}
	hp, p := reg.Wrap(probe), reg.WrapProvisioner(fake)
	for range 2 {
		if _, err := hp.Probe(t.Context(), target("vps_a")); !errors.Is(err, drivers.ErrUnreachable) {
			t.Fatalf("probe: %v", err)
		}
	}
	if _, err := p.Provision(t.Context(), spec("vps_a"), nil); !errors.Is(err, gobreaker.ErrOpenState) || !errors.Is(err, drivers.ErrDeferred) {
		t.Fatalf("provision after failed probes: %v, want the open breaker", err)
	}
	if fake.calls.Load() != 0 {
		t.Fatalf("inner provisioner called %d times through an open breaker", fake.calls.Load())
	}
	res, err := p.Provision(t.Context(), spec("vps_b"), nil)
	if err != nil || res.DocumentRoot != "/srv/x" {
		t.Fatalf("another server: %v %+v", err, res)
	}
	down.Store(false)
	time.Sleep(80 * time.Millisecond) // past OpenTimeout: half-open
	if _, err := p.Provision(t.Context(), spec("vps_a"), nil); err != nil {
		t.Fatalf("provision once the server is back: %v", err)
	}
	if got := reg.State("vps_a"); got != breaker.StateClosed {
		t.Fatalf("state after a successful half-open call = %s", got)
	}
	if n, err := reg.WrapUsageProbe(fake).DiskBytes(t.Context(), spec("vps_a")); err != nil || n != 4096 {
		t.Fatalf("disk bytes through a closed breaker: %d, %v", n, err)
	}
	var buf bytes.Buffer
	if err := reg.WrapBackupSource(fake).Archive(t.Context(), spec("vps_a"), drivers.BackupFiles, &buf); err != nil || buf.String() != "archive" {
		t.Fatalf("archive: %v %q", err, buf.String())
	}
}
