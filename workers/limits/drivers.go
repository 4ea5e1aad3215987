package limits

import (
	"context"

	"github.com/chomhq/chom/drivers"
)

// Guard takes the slots of site.Server.ID and site.TenantID, runs call and
// releases them: it is the drivers.Guard of Provisioner and BackupSource. When
// either slot is full it returns at once an error wrapping ErrBusy and
// drivers.ErrDeferred without running call.
func (l *Limiter) Guard(ctx context.Context, site drivers.SiteSpec, call func() error) error {
	slot, err := l.Acquire(ctx, site.Server.ID, site.TenantID)
	if err != nil {
		return err
	}
	defer slot.Release(ctx)
	return call()
}

// Provisioner returns inner with each call holding a slot of its spec's server
// and tenant for its duration (see Guard). A nil inner panics: it is wiring,
// done once at start-up.
func (l *Limiter) Provisioner(inner drivers.Provisioner) drivers.Provisioner {
	return drivers.GuardProvisioner(inner, l.Guard)
}

// BackupSource returns inner under l's limits, like Provisioner; a full slot
// fails at once, writing nothing to Archive's writer and reading nothing from
// Restore's reader. A nil inner panics.
func (l *Limiter) BackupSource(inner drivers.BackupSource) drivers.BackupSource {
	return drivers.GuardBackupSource(inner, l.Guard)
}
