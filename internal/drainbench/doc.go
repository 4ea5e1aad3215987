// Package drainbench measures how close CHOM's workers come to asynq's own
// throughput: N site provisions, accepted with the rows the ingress writes,
// drained end to end by two worker processes (the production assembly,
// internal/stack, over a no-op driver), against two bare asynq servers of the
// same concurrency draining N no-op tasks of the same payload size on the
// same Redis, in the same run; and the floor under both (floor_test.go):
// PostgreSQL alone writing the rows a provision changes. See
// scripts/load/drain.sh and the section
// "Workers against the queue's ceiling" of docs/performance.md.
//
// It is test tooling: only its own tests import it, so the no-op driver
// (NoopDriver) can never be chosen by a production process (CHOM_DRIVER
// knows only local and ssh).
package drainbench
