package jobs

import (
	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/queue"
)

// Route binds one task type (a stable wire name from package queue) to the
// handler that runs it.
type Route struct {
	Type    string
	Handler asynq.Handler
}

// Every job family names the task types it handles: the worker registers what
// each family's Routes returns, so adding a job touches the job, its task
// contract in queue, and one line of the assembly's job table.

// Routes is site:provision.
func (h *ProvisionSite) Routes() []Route { return []Route{{queue.TypeSiteProvision, h}} }

// Routes is site:deprovision.
func (h *DeprovisionSite) Routes() []Route { return []Route{{queue.TypeSiteDeprovision, h}} }

// Routes is operations:reconcile.
func (h *Reconciler) Routes() []Route { return []Route{{queue.TypeOperationsReconcile, h}} }

// Routes is vps:health_sweep.
func (h *SweepHealth) Routes() []Route { return []Route{{queue.TypeVPSHealthSweep, h}} }

// Routes is vps:health_check.
func (h *CheckHealth) Routes() []Route { return []Route{{queue.TypeVPSHealthCheck, h}} }

// Routes is usage:meter_sweep.
func (h *MeterSweep) Routes() []Route { return []Route{{queue.TypeUsageMeterSweep, h}} }

// Routes is usage:meter.
func (h *MeterUsage) Routes() []Route { return []Route{{queue.TypeUsageMeter, h}} }

// Routes is every backup task: create, restore, delete, prune and the
// booking of scheduled backups.
func (b *Backups) Routes() []Route {
	return []Route{
		{queue.TypeBackupCreate, b.Create},
		{queue.TypeBackupRestore, b.Restore},
		{queue.TypeBackupDelete, b.Delete},
		{queue.TypeBackupPrune, b.Prune},
		{queue.TypeBackupSchedules, b.Schedules},
	}
}
