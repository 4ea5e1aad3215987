package drivers

import (
	"context"
	"io"
	"time"
)

// Guard runs call, one driver call that reaches site's server, under a
// protection: a per-server circuit breaker (drivers/breaker), per-server and
// per-tenant concurrency limits (workers/limits). It returns call's error, or
// its own without running call (an open breaker, a full limit). A Guard must
// be safe for concurrent use.
type Guard func(ctx context.Context, site SiteSpec, call func() error) error

// Chain returns the guard that runs each call under every one of guards, the
// first outermost: Chain(a, b) asks a, then b, then runs the call. A refusal
// by an outer guard never reaches the inner ones.
func Chain(guards ...Guard) Guard {
	return func(ctx context.Context, site SiteSpec, call func() error) error {
		run := call
		for i := len(guards) - 1; i >= 0; i-- {
			g, inner := guards[i], run
			run = func() error { return g(ctx, site, inner) }
		}
		return run()
	}
}

// GuardProvisioner returns inner with each of its calls run under g. A nil
// inner or g panics: it is wiring, done once at start-up.
func GuardProvisioner(inner Provisioner, g Guard) Provisioner {
	mustGuard(inner == nil, g)
	return guardedProvisioner{inner: inner, g: g}
}

// GuardBackupSource returns inner with each of its calls run under g. When g
// refuses, Archive writes nothing and Restore reads nothing. A nil inner or g
// panics.
func GuardBackupSource(inner BackupSource, g Guard) BackupSource {
	mustGuard(inner == nil, g)
	return guardedBackupSource{inner: inner, g: g}
}

// GuardUsageProbe returns inner with each of its calls run under g. A nil
// inner or g panics.
func GuardUsageProbe(inner UsageProbe, g Guard) UsageProbe {
	mustGuard(inner == nil, g)
	return guardedUsageProbe{inner: inner, g: g}
}

func mustGuard(nilInner bool, g Guard) {
	if nilInner || g == nil {
		panic("drivers: a guard needs a driver and a Guard")
	}
}

type guardedProvisioner struct {
	inner Provisioner
	g     Guard
}

func (p guardedProvisioner) Provision(ctx context.Context, site SiteSpec, progress ProgressFunc) (Result, error) {
	var res Result
	err := p.g(ctx, site, func() (err error) {
		res, err = p.inner.Provision(ctx, site, progress)
		return err
	})
	return res, err
}

func (p guardedProvisioner) Deprovision(ctx context.Context, site SiteSpec) error {
	return p.g(ctx, site, func() error { return p.inner.Deprovision(ctx, site) })
}

type guardedBackupSource struct {
	inner BackupSource
	g     Guard
}

func (b guardedBackupSource) Archive(ctx context.Context, site SiteSpec, kind string, w io.Writer) error {
	return b.g(ctx, site, func() error { return b.inner.Archive(ctx, site, kind, w) })
}

func (b guardedBackupSource) Restore(ctx context.Context, site SiteSpec, kind string, r io.Reader) error {
	return b.g(ctx, site, func() error { return b.inner.Restore(ctx, site, kind, r) })
}

type guardedUsageProbe struct {
	inner UsageProbe
	g     Guard
}

func (u guardedUsageProbe) DiskBytes(ctx context.Context, site SiteSpec) (int64, error) {
	var n int64
	err := u.g(ctx, site, func() (err error) {
		n, err = u.inner.DiskBytes(ctx, site)
		return err
	})
	return n, err
}

func (u guardedUsageProbe) Bandwidth(ctx context.Context, site SiteSpec, start, end time.Time) (Bandwidth, error) {
	var bw Bandwidth
	err := u.g(ctx, site, func() (err error) {
		bw, err = u.inner.Bandwidth(ctx, site, start, end)
		return err
	})
	return bw, err
}

// GuardLayoutMigrator returns inner with each MigrateLayout run under g. A nil
// inner or g panics.
func GuardLayoutMigrator(inner LayoutMigrator, g Guard) LayoutMigrator {
	mustGuard(inner == nil, g)
	return guardedLayoutMigrator{inner: inner, g: g}
}

type guardedLayoutMigrator struct {
	inner LayoutMigrator
	g     Guard
}

func (m guardedLayoutMigrator) MigrateLayout(ctx context.Context, site SiteSpec) (bool, error) {
	var changed bool
	err := m.g(ctx, site, func() (err error) {
		changed, err = m.inner.MigrateLayout(ctx, site)
		return err
	})
	return changed, err
}

// GuardTLSDeployer returns inner with each of its calls run under g: a
// challenge put, a certificate deploy or removal reaches the server like a
// provision does. A nil inner or g panics.
func GuardTLSDeployer(inner TLSDeployer, g Guard) TLSDeployer {
	mustGuard(inner == nil, g)
	return guardedTLSDeployer{inner: inner, g: g}
}

type guardedTLSDeployer struct {
	inner TLSDeployer
	g     Guard
}

func (d guardedTLSDeployer) PutChallenge(ctx context.Context, site SiteSpec, token, keyAuth string) error {
	return d.g(ctx, site, func() error { return d.inner.PutChallenge(ctx, site, token, keyAuth) })
}

func (d guardedTLSDeployer) RemoveChallenge(ctx context.Context, site SiteSpec, token string) error {
	return d.g(ctx, site, func() error { return d.inner.RemoveChallenge(ctx, site, token) })
}

func (d guardedTLSDeployer) DeployCertificate(ctx context.Context, site SiteSpec, cert TLSCertificate, opts TLSOptions) error {
	return d.g(ctx, site, func() error { return d.inner.DeployCertificate(ctx, site, cert, opts) })
}

func (d guardedTLSDeployer) RemoveCertificate(ctx context.Context, site SiteSpec) error {
	return d.g(ctx, site, func() error { return d.inner.RemoveCertificate(ctx, site) })
}
