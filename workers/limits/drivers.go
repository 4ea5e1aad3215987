package limits

import (
	"context"
	"io"

	"github.com/chomhq/chom/drivers"
)

// Provisioner runs a drivers.Provisioner under a Limiter: each call holds a
// slot of its spec's server and tenant for its duration.
type Provisioner struct {
	inner drivers.Provisioner
	l     *Limiter
}

var _ drivers.Provisioner = (*Provisioner)(nil)

// Provisioner returns inner under l's limits. A nil inner panics: it is
// wiring, done once at start-up.
func (l *Limiter) Provisioner(inner drivers.Provisioner) *Provisioner {
	if inner == nil {
		panic("limits: Provisioner of a nil provisioner")
	}
	return &Provisioner{inner: inner, l: l}
}

// Provision takes the slots of site.Server.ID and site.TenantID and runs
// inner's Provision; when either is full it returns at once an error wrapping
// ErrBusy and drivers.ErrDeferred without calling inner.
func (p *Provisioner) Provision(ctx context.Context, site drivers.SiteSpec, progress drivers.ProgressFunc) (drivers.Result, error) {
	slot, err := p.l.Acquire(ctx, site.Server.ID, site.TenantID)
	if err != nil {
		return drivers.Result{}, err
	}
	defer slot.Release(ctx)
	return p.inner.Provision(ctx, site, progress)
}

// Deprovision runs inner's Deprovision under the slots, like Provision.
func (p *Provisioner) Deprovision(ctx context.Context, site drivers.SiteSpec) error {
	slot, err := p.l.Acquire(ctx, site.Server.ID, site.TenantID)
	if err != nil {
		return err
	}
	defer slot.Release(ctx)
	return p.inner.Deprovision(ctx, site)
}

// BackupSource runs a drivers.BackupSource under a Limiter, like Provisioner.
type BackupSource struct {
	inner drivers.BackupSource
	l     *Limiter
}

var _ drivers.BackupSource = (*BackupSource)(nil)

// BackupSource returns inner under l's limits. A nil inner panics.
func (l *Limiter) BackupSource(inner drivers.BackupSource) *BackupSource {
	if inner == nil {
		panic("limits: BackupSource of a nil backup source")
	}
	return &BackupSource{inner: inner, l: l}
}

// Archive runs inner's Archive under the slots of the site's server and
// tenant; a full one fails at once and writes nothing to w.
func (b *BackupSource) Archive(ctx context.Context, site drivers.SiteSpec, kind string, w io.Writer) error {
	slot, err := b.l.Acquire(ctx, site.Server.ID, site.TenantID)
	if err != nil {
		return err
	}
	defer slot.Release(ctx)
	return b.inner.Archive(ctx, site, kind, w)
}

// Restore runs inner's Restore under the slots; a full one fails at once
// without reading r.
func (b *BackupSource) Restore(ctx context.Context, site drivers.SiteSpec, kind string, r io.Reader) error {
	slot, err := b.l.Acquire(ctx, site.Server.ID, site.TenantID)
	if err != nil {
		return err
	}
	defer slot.Release(ctx)
	return b.inner.Restore(ctx, site, kind, r)
}
