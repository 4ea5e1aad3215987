// Package breaker gives every VPS its own circuit breaker around every call
// that reaches it (health probes, provisioning, backups, metering), so a dead server
// costs a map lookup instead of a dial and a timeout on every sweep and every
// job.
//
// A Registry holds one gobreaker.CircuitBreaker per VPS ID, created on first
// use and bounded in number. Wrap (a drivers.HealthProbe), WrapProvisioner,
// WrapBackupSource and WrapUsageProbe share those breakers: the health sweep
// and the jobs (metering included) see one
// breaker per server, so failed health checks open it for jobs and failed
// jobs open it for health checks. While a server's breaker is open, a call
// returns at once with an error wrapping drivers.ErrUnreachable,
// drivers.ErrDeferred and gobreaker.ErrOpenState, without touching the
// network; job code returns that error as is and the worker reschedules the
// task without counting a retry. Only unreachability counts as a failure: a server that answers
// with garbage is reachable, a cancelled check is nobody's fault, and a host
// key mismatch is passed through untouched and never trips or hides behind
// the breaker (it is a security event, not an outage). A spec rejected as
// invalid (drivers.ErrInvalidSpec) is a reachable server, and a call another
// protection layer deferred (drivers.ErrDeferred, e.g. a busy concurrency
// limit) neither trips nor closes the breaker.
package breaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/chomhq/chom/drivers"
)

// State names, as States reports them (gobreaker's own names).
const (
	StateClosed   = "closed"
	StateHalfOpen = "half-open"
	StateOpen     = "open"
)

// Config configures a Registry. Zero values take the defaults named on each
// field.
type Config struct {
	// Failures is how many checks in a row must find the server unreachable
	// before its breaker opens. Default 3 (three sweeps, about three minutes
	// at the default interval, so one lost packet never hides a server).
	Failures uint32
	// OpenTimeout is how long an open breaker refuses checks before it lets
	// HalfOpenProbes through to see whether the server is back. Default 5m.
	OpenTimeout time.Duration
	// HalfOpenProbes is how many checks a half-open breaker lets through; as
	// many successes in a row close it, one failure opens it again. Default 1.
	HalfOpenProbes uint32
	// MaxServers bounds the number of breakers kept; beyond it the least
	// recently used closed breaker is forgotten (an open one only when all are
	// open). Default 100000.
	MaxServers int
	// OnStateChange, when set, is called on every transition with the breaker
	// name (see Name) and the new state, e.g. to update a metric. It runs
	// under the breaker's lock: keep it short and do not call the Registry.
	OnStateChange func(name, from, to string)
	// Logger is required.
	Logger *slog.Logger
}

// Defaults of Config, used when a field is zero; the assembly's settings
// table takes CHOM_HEALTH_BREAKER_FAILURES' and CHOM_HEALTH_BREAKER_OPEN's
// defaults from these.
const (
	DefaultFailures    = 3
	DefaultOpenTimeout = 5 * time.Minute
)

// Validate reports every problem with c at once, or nil.
func (c Config) Validate() error {
	var errs []error
	if c.OpenTimeout < 0 {
		errs = append(errs, errors.New("OpenTimeout must not be negative"))
	}
	if c.MaxServers < 0 {
		errs = append(errs, errors.New("MaxServers must not be negative"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("Logger is required"))
	}
	return errors.Join(errs...)
}

func (c *Config) setDefaults() {
	if c.Failures == 0 {
		c.Failures = DefaultFailures
	}
	if c.OpenTimeout == 0 {
		c.OpenTimeout = DefaultOpenTimeout
	}
	if c.HalfOpenProbes == 0 {
		c.HalfOpenProbes = 1
	}
	if c.MaxServers == 0 {
		c.MaxServers = 100_000
	}
}

// The breakers hold any: one breaker guards calls of every result type
// (health reports, provisioning results, none for backups).
type entry struct {
	cb       *gobreaker.CircuitBreaker[any]
	lastUsed time.Time
}

// Registry holds one circuit breaker per VPS ID. It is safe for concurrent use.
type Registry struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	breakers map[string]*entry
}

// New returns a Registry for cfg, or an error naming every problem with cfg.
func New(cfg Config) (*Registry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("breaker: invalid config: %w", err)
	}
	cfg.setDefaults()
	return &Registry{cfg: cfg, log: cfg.Logger, breakers: map[string]*entry{}}, nil
}

// Name returns the breaker name of a VPS: its ID when that already starts with
// "vps_" (as CHOM's IDs do), else "vps_" + id.
func Name(vpsID string) string {
	if strings.HasPrefix(vpsID, "vps_") {
		return vpsID
	}
	return "vps_" + vpsID
}

// breaker returns the breaker of vpsID, creating it on first use.
func (r *Registry) breaker(vpsID string) *gobreaker.CircuitBreaker[any] {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.breakers[vpsID]; ok {
		e.lastUsed = now
		return e.cb
	}
	if len(r.breakers) >= r.cfg.MaxServers {
		r.evictLocked()
	}
	name := Name(vpsID)
	cb := gobreaker.NewCircuitBreaker[any](gobreaker.Settings{
		Name:        name,
		MaxRequests: r.cfg.HalfOpenProbes,
		Timeout:     r.cfg.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= r.cfg.Failures },
		// Only an unreachable server is a failure of the server.
		IsSuccessful: func(err error) bool { return !errors.Is(err, drivers.ErrUnreachable) },
		// A cancelled check says nothing about the server; a host key
		// mismatch must neither trip the breaker (and hide behind it) nor
		// close it; a deferred call never reached the server.
		IsExcluded: func(err error) bool {
			return errors.Is(err, context.Canceled) || errors.Is(err, drivers.ErrHostKeyMismatch) ||
				errors.Is(err, drivers.ErrDeferred)
		},
		OnStateChange: func(name string, from, to gobreaker.State) {
			r.log.Info("vps circuit breaker", "vps_id", vpsID, "breaker", name, "from", from.String(), "to", to.String())
			if r.cfg.OnStateChange != nil {
				r.cfg.OnStateChange(name, from.String(), to.String())
			}
		},
	})
	r.breakers[vpsID] = &entry{cb: cb, lastUsed: now}
	return cb
}

// evictLocked forgets the least recently used closed breaker, or the least
// recently used of all when every one is open or half-open.
func (r *Registry) evictLocked() {
	var oldestID, oldestClosedID string
	var oldest, oldestClosed time.Time
	for id, e := range r.breakers {
		if oldestID == "" || e.lastUsed.Before(oldest) {
			oldestID, oldest = id, e.lastUsed
		}
		if e.cb.State() == gobreaker.StateClosed && (oldestClosedID == "" || e.lastUsed.Before(oldestClosed)) {
			oldestClosedID, oldestClosed = id, e.lastUsed
		}
	}
	if oldestClosedID != "" {
		oldestID = oldestClosedID
	}
	delete(r.breakers, oldestID)
}

// State returns the state of vpsID's breaker ("closed" for one never used).
func (r *Registry) State(vpsID string) string {
	r.mu.Lock()
	e, ok := r.breakers[vpsID]
	r.mu.Unlock()
	if !ok {
		return StateClosed
	}
	return e.cb.State().String()
}

// States returns every breaker's state by name (see Name): "closed",
// "half-open" or "open". The map is a snapshot the caller owns.
func (r *Registry) States() map[string]string {
	r.mu.Lock()
	cbs := make([]*gobreaker.CircuitBreaker[any], 0, len(r.breakers))
	for _, e := range r.breakers {
		cbs = append(cbs, e.cb)
	}
	r.mu.Unlock()
	out := make(map[string]string, len(cbs))
	for _, cb := range cbs {
		out[cb.Name()] = cb.State().String()
	}
	return out
}

// Len returns how many breakers the registry holds.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.breakers)
}

// execute runs fn through vpsID's breaker. While the breaker is open (or
// half-open with its probes in flight) it returns at once an error wrapping
// drivers.ErrUnreachable, drivers.ErrDeferred and gobreaker.ErrOpenState (or
// gobreaker.ErrTooManyRequests); otherwise fn's result and error unchanged.
func (r *Registry) execute(ctx context.Context, vpsID string, fn func() (any, error)) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cb := r.breaker(vpsID)
	v, err := cb.Execute(fn)
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return nil, fmt.Errorf("%w: %w: %s: %w", drivers.ErrUnreachable, drivers.ErrDeferred, cb.Name(), err)
	}
	return v, err
}

// Probe runs a drivers.HealthProbe through the per-VPS breakers of a Registry.
type Probe struct {
	inner drivers.HealthProbe
	reg   *Registry
}

var _ drivers.HealthProbe = (*Probe)(nil)

// Wrap returns a probe that runs inner through r's breaker of each target's
// server ID. Wrap(nil, r) panics: it is wiring, done once at start-up.
func (r *Registry) Wrap(inner drivers.HealthProbe) *Probe {
	if inner == nil {
		panic("breaker: Wrap of a nil probe")
	}
	return &Probe{inner: inner, reg: r}
}

// Probe checks target through its server's breaker. While the breaker is open
// (or half-open with its probes in flight) it returns at once an empty report
// and an error wrapping drivers.ErrUnreachable, drivers.ErrDeferred and
// gobreaker.ErrOpenState (or gobreaker.ErrTooManyRequests); otherwise it
// returns the inner probe's report and error unchanged.
func (p *Probe) Probe(ctx context.Context, target drivers.HealthTarget) (drivers.HealthReport, error) {
	v, err := p.reg.execute(ctx, target.Server.ID, func() (any, error) {
		return p.inner.Probe(ctx, target)
	})
	report, _ := v.(drivers.HealthReport)
	return report, err
}

// Guard runs call through the breaker of site.Server.ID: it is the
// drivers.Guard of WrapProvisioner, WrapBackupSource and WrapUsageProbe. While
// the breaker is open it returns at once an error wrapping
// drivers.ErrUnreachable, drivers.ErrDeferred and gobreaker.ErrOpenState,
// without running call; otherwise call's error unchanged.
func (r *Registry) Guard(ctx context.Context, site drivers.SiteSpec, call func() error) error {
	_, err := r.execute(ctx, site.Server.ID, func() (any, error) { return nil, call() })
	return err
}

// WrapProvisioner returns inner with every call through r's breaker of the
// spec's server (see Guard). A nil inner panics: it is wiring, done once at
// start-up.
func (r *Registry) WrapProvisioner(inner drivers.Provisioner) drivers.Provisioner {
	return drivers.GuardProvisioner(inner, r.Guard)
}

// WrapBackupSource returns inner with every call through r's breakers; an open
// breaker fails fast, writing nothing to Archive's writer and reading nothing
// from Restore's reader. A nil inner panics.
func (r *Registry) WrapBackupSource(inner drivers.BackupSource) drivers.BackupSource {
	return drivers.GuardBackupSource(inner, r.Guard)
}

// WrapUsageProbe returns inner with every call through r's breakers. A nil
// inner panics.
func (r *Registry) WrapUsageProbe(inner drivers.UsageProbe) drivers.UsageProbe {
	return drivers.GuardUsageProbe(inner, r.Guard)
}
