package main

import (
	"log/slog"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/breaker"
	"github.com/chomhq/chom/workers/limits"
)

// vpsBreakers returns the process's per-VPS circuit breakers, built on first
// use, so the SSH health probe and every job of a worker share one breaker per
// server (CHOM_HEALTH_BREAKER_FAILURES, CHOM_HEALTH_BREAKER_OPEN). Their states
// are reported as chom_circuit_breaker_state{breaker="vps_<id>"}.
func (b *backends) vpsBreakers(c config, log *slog.Logger) (*breaker.Registry, error) {
	if b.breakers != nil {
		return b.breakers, nil
	}
	r, err := breaker.New(breaker.Config{Failures: uint32(c.HealthBreakerFailures), OpenTimeout: c.HealthBreakerOpen,
		Logger: log.With("component", "breaker")})
	if err != nil {
		return nil, err
	}
	if b.metrics != nil {
		b.metrics.TrackBreakers(r.States)
	}
	b.breakers = r
	return r, nil
}

// jobLimiter returns the process's per-VPS and per-tenant concurrency limits
// (CHOM_VPS_MAX_JOBS, CHOM_TENANT_MAX_JOBS), built on first use. They live in
// Redis, so they hold across every worker process of the fleet.
func (b *backends) jobLimiter(c config, log *slog.Logger) (*limits.Limiter, error) {
	if b.limiter != nil {
		return b.limiter, nil
	}
	l, err := limits.New(limits.Config{Redis: b.redis, VPSMax: c.VPSMaxJobs, TenantMax: c.TenantMaxJobs,
		Lease: c.JobSlotLease, Logger: log.With("component", "limits")})
	if err != nil {
		return nil, err
	}
	b.limiter = l
	return l, nil
}

// jobGuard is the protection of every job's driver call that changes a
// server (provisioning, backups, restores): the server's breaker first (an
// open one fails fast, before Redis is asked), then the server's and the
// tenant's concurrency limits. Both refusals wrap drivers.ErrDeferred, so the
// task is rescheduled without burning a retry (workers.IsFailure).
func jobGuard(c config, b *backends, log *slog.Logger) (drivers.Guard, error) {
	br, err := b.vpsBreakers(c, log)
	if err != nil {
		return nil, err
	}
	l, err := b.jobLimiter(c, log)
	if err != nil {
		return nil, err
	}
	return drivers.Chain(br.Guard, l.Guard), nil
}

// protectUsageProbe is probe as metering uses it: behind the server's breaker,
// so a dead server defers a tenant's meter at once instead of costing a dial
// timeout per site. It takes no concurrency slot: a measurement only reads
// (a `find` and the access logs), and one tenant's meter visits its sites one
// after the other.
func protectUsageProbe(c config, b *backends, log *slog.Logger, probe drivers.UsageProbe) (drivers.UsageProbe, error) {
	br, err := b.vpsBreakers(c, log)
	if err != nil {
		return nil, err
	}
	return br.WrapUsageProbe(probe), nil
}
