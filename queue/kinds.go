package queue

import (
	"slices"
	"strings"
)

// TaskKind is a task type and the queue its constructor puts it on.
type TaskKind struct {
	Type, Queue string
}

// periodicKinds are the tasks no operation carries out, with the queue their
// constructors (NewReconcileTask, NewHealthSweepTask, …) set.
var periodicKinds = []TaskKind{
	{TypeOperationsReconcile, QueueCritical},
	{TypeVPSHealthSweep, QueueCritical},
	{TypeVPSHealthCheck, QueueDefault},
	{TypeUsageMeterSweep, QueueLow},
	{TypeUsageMeter, QueueLow},
	{TypeBackupPrune, QueueLow},
	{TypeBackupSchedules, QueueDefault},
	{TypeSiteMigrateLayout, QueueLow},
	{TypeSiteMigrateLayoutSweep, QueueLow},
	{TypeCertificateRenewSweep, QueueDefault},
	{TypeOperationsPrune, QueueLow},
}

// TaskKinds returns every task type of the package with its queue, sorted by
// type then queue and without duplicates: the task kinds a worker documents in
// its metrics (workers.ObserveTasks hands them to metrics.InitJobs). A type
// enqueued on two queues (an on-demand health check and a sweep's) is listed
// once per queue. TestTaskKinds checks each against its constructor.
func TaskKinds() []TaskKind {
	out := slices.Clone(periodicKinds)
	for _, s := range specs {
		out = append(out, TaskKind{Type: s.taskType, Queue: s.spec.Queue})
	}
	slices.SortFunc(out, func(a, b TaskKind) int {
		if c := strings.Compare(a.Type, b.Type); c != 0 {
			return c
		}
		return strings.Compare(a.Queue, b.Queue)
	})
	return slices.Compact(out)
}
