package stack

import (
	"time"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/workers"
)

// Hooks change how a role is built. Production passes none; the test kit
// (package stacktest) and the load harness use them to count or fail driver
// calls, reach a test server, fix a clock or shorten a poll, while everything
// else stays as it ships: the guard, breakers, limits, metrics and job table.
type Hooks struct {
	// WrapProvisioner wraps the driver's provisioner (under the guard, so the
	// wrapper sees only calls the breaker and limits let through). When the
	// wrapper is also a drivers.BackupSource, backups go through it too.
	WrapProvisioner func(drivers.Provisioner) drivers.Provisioner
	// Driver replaces the driver CHOM_DRIVER names (a test's SSH driver
	// pointed at a server of its own).
	Driver *Driver
	// HealthProbe replaces the probe CHOM_HEALTH_PROBE names.
	HealthProbe drivers.HealthProbe
	// MeterNow is the usage meter's clock; nil: time.Now.
	MeterNow func() time.Time
	// Ingress and Worker adjust the built component configuration last
	// (timings that have no CHOM_* setting, such as poll intervals).
	Ingress func(*ingress.Config)
	Worker  func(*workers.Config)
}

// Driver is what the worker's jobs use to reach servers: the provisioner and,
// when the driver has them, its BackupSource, UsageProbe and TLSDeployer
// (nil otherwise).
type Driver struct {
	Provisioner drivers.Provisioner
	Backups     drivers.BackupSource
	Usage       drivers.UsageProbe
	TLS         drivers.TLSDeployer
}
