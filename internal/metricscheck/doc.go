// Package metricscheck holds the tests that hold every CHOM process's /metrics
// to the Prometheus conventions, as an operator's Prometheus would see it: the
// real chom binary (built once by TestMain) runs each process (ingress,
// worker, scheduler, relay, billing-consumer and dev) on real PostgreSQL, Redis
// and Kafka; its /metrics is scraped right after start-up, before any traffic,
// and
//
//   - piped to `promtool check metrics` (Debian's prometheus package), whose
//     output must be empty: counters end in _total and nothing else does, base
//     units, help on every family, no camelCase;
//   - searched for every documented labelled series, which must be there from
//     the start (at zero, for the event counters) rather than on first use.
//
// The documented label values come from their sources of truth: the OpenAPI
// document (routes and status codes), queue.TaskKinds and queue.Weights, the
// models' statuses, the meter's metrics and results and the billing consumer's
// results. Like the other integration tests it needs the servers of
// scripts/test-services.sh; without them it skips, and under CI it fails, as it
// does when promtool is missing. It has no code outside its tests.
package metricscheck
