// Package metrics is CHOM's Prometheus instrumentation: one registry per process
// (never the global DefaultRegisterer) holding every chom_* series, the Go and
// process collectors, and the /metrics handler over them.
//
// It is a leaf: it imports only the Prometheus client, bun (for the query hook)
// and the standard library. The components it measures do not appear here; they
// report through small methods (ObserveHTTP, ObserveJob, Cache, RateLimited) or
// are read at scrape time through functions the process wires in (TrackQueues,
// TrackStatuses, TrackRelay, TrackBreaker), so ingress and workers can import it
// without a cycle and cmd/chom decides what each process reports.
//
// Every family is registered by New, whether or not the process feeds it, so
// Names lists the same set everywhere (the dashboards test checks its expressions
// against it). A family nothing feeds has no series in a scrape.
//
// The scrape-time figures (queue depths, site and backup counts, outbox lag) are
// platform-wide: every process that reports them reports the same values, so
// aggregate them with max, not sum. /metrics carries no tenant data (no label is
// a tenant, site or token), but it is unauthenticated, as Prometheus scrapes it:
// do not expose it publicly.
package metrics
