// Package limits bounds how many jobs run at once on one VPS and for one
// tenant, across every worker process, with counting semaphores in Redis.
//
// A semaphore is a sorted set per VPS and per tenant whose members are the
// slots held and whose scores are their lease expiries (Redis server time, so
// worker clocks do not matter). Acquire takes a slot of the VPS and of the
// tenant together, in one Lua script, or neither; the holder renews its lease
// every Lease/3 while it runs, and a killed worker's slot frees itself when
// its lease expires. A full semaphore is not waited on: Acquire fails at once
// with an error wrapping ErrBusy and drivers.ErrDeferred, the job returns it,
// and the worker reschedules the task after a short delay without counting a
// retry (see workers.IsFailure). Because a deferred task frees its worker at
// once, one tenant's burst occupies at most TenantMax slots and the worker
// time it leaves is picked up by other tenants' tasks.
//
// Provisioner and BackupSource wrap the drivers so every call that works on a
// server holds both slots for its duration: the limits apply to what a job
// does on the server, which is where the VPS ID is known (provisioning picks
// the server inside the job). All keys share one Redis Cluster hash slot
// ("{chom:limits}"), so the multi-key script also runs on a cluster.
package limits
