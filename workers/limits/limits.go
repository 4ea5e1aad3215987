package limits

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chomhq/chom/drivers"
)

// ErrBusy is wrapped by Acquire's error when the VPS or the tenant already
// holds as many slots as it may. It wraps drivers.ErrDeferred: not a failure.
var ErrBusy = fmt.Errorf("limits: concurrency limit reached: %w", drivers.ErrDeferred)

// Config configures a Limiter. Zero values take the defaults named on each field.
type Config struct {
	// Redis holds the semaphores. Required.
	Redis redis.UniversalClient
	// VPSMax is how many jobs may work on one server at once. Default 4.
	VPSMax int
	// TenantMax is how many jobs of one tenant may work at once, whatever
	// their servers. Default 8.
	TenantMax int
	// Lease is how long a slot stays held without renewal; the holder renews
	// it every Lease/3, so a killed worker's slot frees itself within Lease.
	// Default 30s.
	Lease time.Duration
	// Prefix starts every key (inside the Cluster hash tag). Default
	// "chom:limits".
	Prefix string
	// Logger is required.
	Logger *slog.Logger
}

// Validate reports every problem with c at once, or nil.
func (c Config) Validate() error {
	var errs []error
	if c.Redis == nil {
		errs = append(errs, errors.New("Redis is required"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("Logger is required"))
	}
	if c.VPSMax < 0 {
		errs = append(errs, fmt.Errorf("VPSMax %d must not be negative", c.VPSMax))
	}
	if c.TenantMax < 0 {
		errs = append(errs, fmt.Errorf("TenantMax %d must not be negative", c.TenantMax))
	}
	if c.Lease < 0 || (c.Lease > 0 && c.Lease < 30*time.Millisecond) {
		errs = append(errs, fmt.Errorf("Lease %s must be at least 30ms", c.Lease))
	}
	return errors.Join(errs...)
}

// Defaults of Config, used when a field is zero; the assembly's settings
// table takes CHOM_VPS_MAX_JOBS', CHOM_TENANT_MAX_JOBS' and
// CHOM_JOB_SLOT_LEASE's defaults from these.
const (
	DefaultVPSMax    = 4
	DefaultTenantMax = 8
	DefaultLease     = 30 * time.Second
)

func (c *Config) setDefaults() {
	if c.VPSMax == 0 {
		c.VPSMax = DefaultVPSMax
	}
	if c.TenantMax == 0 {
		c.TenantMax = DefaultTenantMax
	}
	if c.Lease == 0 {
		c.Lease = DefaultLease
	}
	if c.Prefix == "" {
		c.Prefix = "chom:limits"
	}
}

// Limiter hands out per-VPS and per-tenant slots. It is safe for concurrent use
// and shared by every job of a worker process.
type Limiter struct {
	cfg Config
	rdb redis.UniversalClient
	log *slog.Logger
}

// New returns a Limiter for cfg, or an error naming every problem with cfg.
func New(cfg Config) (*Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("limits: invalid config: %w", err)
	}
	cfg.setDefaults()
	return &Limiter{cfg: cfg, rdb: cfg.Redis, log: cfg.Logger}, nil
}

// Kinds of semaphore, as InUse takes them.
const (
	KindVPS    = "vps"
	KindTenant = "tenant"
)

func (l *Limiter) key(kind, id string) string {
	return "{" + l.cfg.Prefix + "}:" + kind + ":" + id
}

// now is Redis server time in milliseconds; TIME before writes is allowed
// because scripts replicate their effects (the default since Redis 5).
const nowLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
`

// acquireScript takes a slot of every key or of none. KEYS are semaphores,
// ARGV[1] the slot's token, ARGV[2] the lease in ms, ARGV[2+i] the limit of
// KEYS[i]. It returns 0 on success, else the index of the first full key.
var acquireScript = redis.NewScript(nowLua + `
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZSCORE', key, ARGV[1]) == false and redis.call('ZCARD', key) >= tonumber(ARGV[2 + i]) then
    return i
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, ARGV[1])
  redis.call('PEXPIRE', key, lease * 2)
end
return 0
`)

// renewScript extends the lease of a held slot on every key; it returns how
// many of them no longer held it (the lease had expired and was taken).
var renewScript = redis.NewScript(nowLua + `
local lost = 0
for _, key in ipairs(KEYS) do
  if redis.call('ZSCORE', key, ARGV[1]) == false then
    lost = lost + 1
  else
    redis.call('ZADD', key, now + lease, ARGV[1])
    redis.call('PEXPIRE', key, lease * 2)
  end
end
return lost
`)

// releaseScript gives the slot back on every key.
var releaseScript = redis.NewScript(`
for _, key in ipairs(KEYS) do
  redis.call('ZREM', key, ARGV[1])
end
return 0
`)

// Slot is a held pair of slots (VPS and tenant). Release it when the work is
// done; until then its lease is renewed in the background.
type Slot struct {
	l     *Limiter
	keys  []string
	token string
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
	// expires is when the lease runs out unless renewed: set by Acquire and
	// by each renewal, read by Release once the renewals have stopped.
	expires time.Time
}

// How Release retries: every releaseEvery, each call bounded by
// releaseTimeout, for at most releaseRetryFor and never past the lease (by
// then the slot is free anyway).
const (
	releaseEvery    = 200 * time.Millisecond
	releaseTimeout  = 2 * time.Second
	releaseRetryFor = 15 * time.Second
)

// Acquire takes one slot of vpsID's semaphore and one of tenantID's, both or
// neither, without waiting. A full semaphore is an error wrapping ErrBusy (and
// so drivers.ErrDeferred) that names it. An empty ID skips that semaphore. The
// slot's lease is renewed until Release.
//
// When Redis cannot be reached, Acquire fails open: it logs and returns a slot
// that holds nothing, and the job runs. While Redis is down no worker can
// dequeue a new task, so the only jobs that get here are those already
// dequeued, at most one worker's concurrency: nothing the limits guard against
// can pile up, while failing them would strand their tasks (asynq cannot move
// a failed task back to the queue without Redis either) until its lease
// recovery, a minute or more after Redis is back.
func (l *Limiter) Acquire(ctx context.Context, vpsID, tenantID string) (*Slot, error) {
	type sem struct {
		kind, id string
		max      int
	}
	var sems []sem
	if vpsID != "" {
		sems = append(sems, sem{KindVPS, vpsID, l.cfg.VPSMax})
	}
	if tenantID != "" {
		sems = append(sems, sem{KindTenant, tenantID, l.cfg.TenantMax})
	}
	if len(sems) == 0 {
		return &Slot{l: l}, nil
	}
	token, err := newToken()
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(sems))
	args := []any{token, l.cfg.Lease.Milliseconds()}
	for i, s := range sems {
		keys[i] = l.key(s.kind, s.id)
		args = append(args, s.max)
	}
	full, err := acquireScript.Run(ctx, l.rdb, keys, args...).Int()
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("limits: acquire slot of vps %s, tenant %s: %w", vpsID, tenantID, ctx.Err())
		}
		l.log.WarnContext(ctx, "concurrency limits unavailable (Redis unreachable): running without a slot",
			"vps_id", vpsID, "tenant_id", tenantID, "error", err)
		// The script may have run and only its answer been lost (the master
		// died before replying, and its replica, promoted, has the slot):
		// Release still removes the token, which is a no-op if it never
		// got there, so such a slot does not hold a place until its lease.
		done := make(chan struct{})
		close(done)
		return &Slot{l: l, keys: keys, token: token, stop: make(chan struct{}), done: done,
			expires: time.Now().Add(l.cfg.Lease)}, nil
	}
	if full > 0 {
		s := sems[full-1]
		return nil, fmt.Errorf("%w: %s %s runs %d jobs already", ErrBusy, s.kind, s.id, s.max)
	}
	slot := &Slot{l: l, keys: keys, token: token, stop: make(chan struct{}), done: make(chan struct{}),
		expires: time.Now().Add(l.cfg.Lease)}
	go slot.renew(context.WithoutCancel(ctx))
	return slot, nil
}

// renew extends the lease every Lease/3 until Release.
func (s *Slot) renew(ctx context.Context) {
	defer close(s.done)
	every := s.l.cfg.Lease / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, every)
		sent := time.Now()
		lost, err := renewScript.Run(rctx, s.l.rdb, s.keys, s.token, s.l.cfg.Lease.Milliseconds()).Int()
		cancel()
		if err == nil {
			s.expires = sent.Add(s.l.cfg.Lease)
		}
		switch {
		case err != nil:
			s.l.log.WarnContext(ctx, "could not renew concurrency slot; it frees itself if this lasts", "keys", s.keys, "error", err)
		case lost > 0:
			s.l.log.WarnContext(ctx, "concurrency slot lease expired while held", "keys", s.keys, "lost", lost)
		}
	}
}

// Release gives the slot back. It is safe to call more than once. When Redis
// does not answer (a Sentinel failover: the master is gone and no replica is
// promoted yet) it retries every 200ms, for up to 15s and never past the
// slot's lease, so a slot does not stay taken on the new master until its
// lease runs out: a failover would otherwise cost the fleet every slot held
// at that moment for up to a lease (30s), deferring tasks that could run. A
// failure after that is logged, not returned: the lease frees the slot.
func (s *Slot) Release(ctx context.Context) {
	if s == nil || len(s.keys) == 0 {
		return
	}
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		ctx := context.WithoutCancel(ctx)
		deadline := time.Now().Add(releaseRetryFor)
		if s.expires.Before(deadline) {
			deadline = s.expires
		}
		start := time.Now()
		for attempt := 1; ; attempt++ {
			rctx, cancel := context.WithTimeout(ctx, releaseTimeout)
			err := releaseScript.Run(rctx, s.l.rdb, s.keys, s.token).Err()
			cancel()
			switch {
			case err == nil && attempt > 1:
				s.l.log.InfoContext(ctx, "concurrency slot released once Redis answered", "keys", s.keys,
					"attempts", attempt, "waited", time.Since(start).Round(time.Millisecond).String())
				return
			case err == nil:
				return
			case time.Now().Add(releaseEvery).After(deadline):
				s.l.log.WarnContext(ctx, "could not release concurrency slot; its lease frees it", "keys", s.keys,
					"attempts", attempt, "error", err)
				return
			}
			time.Sleep(releaseEvery)
		}
	})
}

// InUse returns how many live slots the semaphore of kind (KindVPS or
// KindTenant) and id holds.
func (l *Limiter) InUse(ctx context.Context, kind, id string) (int, error) {
	key := l.key(kind, id)
	n, err := inUseScript.Run(ctx, l.rdb, []string{key}).Int()
	if err != nil {
		return 0, fmt.Errorf("limits: count %s: %w", key, err)
	}
	return int(n), nil
}

// inUseScript counts the unexpired slots of KEYS[1] by Redis time.
var inUseScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
`)

func newToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("limits: slot token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
