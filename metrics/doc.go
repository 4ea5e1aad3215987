// Package metrics is CHOM's Prometheus instrumentation: one registry per process
// (never the global DefaultRegisterer) holding every chom_* series, the Go and
// process collectors, and the /metrics handler over them.
//
// It is a leaf: it imports only the Prometheus client, bun (for the query hook)
// and the standard library. The components it measures do not appear here; they
// report through small methods (ObserveHTTP, ObserveJob, Cache, RateLimited,
// AuthFailed, AuthRateLimited, CrossSiteRefused, SecurityRefused) or
// are read at scrape time through functions the process wires in (TrackQueues,
// TrackStatuses, TrackRelay, TrackBreaker), so ingress and workers can import it
// without a cycle and cmd/chom decides what each process reports.
//
// Every family is registered by New, whether or not the process feeds it, so
// Names lists the same set everywhere (the dashboards test checks its expressions
// against it). A family nothing feeds has no series in a scrape.
//
// # Conventions
//
// Names follow Prometheus' conventions as `promtool check metrics` checks them:
// counters end in _total and nothing else does (chom_sites and chom_backups are
// gauges), durations are _seconds, every family has help text, names are
// snake_case. TestLintClean runs the same linter over every family, and
// internal/metricscheck runs promtool on each process's /metrics.
//
// A labelled family a process feeds has its documented series from start-up,
// at zero, rather than from the first event, so that rates, ratios and alerts
// on increase() read 0 instead of nothing. What "documented" means is per
// family: the task kinds the caller passes to InitJobs (queue's task types
// with their queues), the routes and OpenAPI statuses passed to InitHTTP, the
// five database operations, the caches named with Cache, the sources a Track*
// call is given (chom_metrics_source_errors_total), and whatever keys a
// component's CountsFunc or CountersFunc returns (models and the job handlers
// return every known status and result, zeros included). A label value outside
// those (an undocumented status, a new breaker) appears on first use.
//
// The scrape-time figures (queue depths, site and backup counts, outbox lag) are
// platform-wide: every process that reports them reports the same values, so
// aggregate them with max, not sum. /metrics carries no tenant data (no label is
// a tenant, site or token), but it is unauthenticated, as Prometheus scrapes it:
// do not expose it publicly.
package metrics
