// Package queue is CHOM's contract with asynq: task type names (stable wire names,
// never renamed once shipped), queue names and weights, typed payloads, task
// constructors that set each type's defaults (queue, retries, timeout, retention,
// and task ID = operation ID), the Redis connection options every client of a
// process is built from (single server, Sentinel: SentinelOptions, or Redis
// Cluster: ClusterOptions), the
// enqueuer and its background retry (Backlog), the inspector, the
// operation-change notifier, and the asynqmon handler.
package queue
