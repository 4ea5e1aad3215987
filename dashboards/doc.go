// Package dashboards holds CHOM's Grafana dashboards and Prometheus alert
// rules, and the tests that keep them honest against the code. It has no Go
// API: the files are the product.
//
//   - api.json, queues.json, fleet.json, billing.json: Grafana dashboards
//     (JSON model, schemaVersion 39), each with a `datasource` variable so
//     they work with any Prometheus data source.
//   - provisioning/dashboards.yml and provisioning/datasources.yml: Grafana
//     provisioning that loads the dashboards from a folder.
//   - alerts/chom.rules.yml: Prometheus alerting rules, grouped by area.
//   - prometheus.yml: an example scrape configuration that loads the rules.
//   - testdata/chom.rules.test.yml: promtool unit tests for some alerts.
//
// `go test ./dashboards/` parses every PromQL expression of every dashboard
// and rule with Prometheus' own parser and fails when one names a metric that
// metrics.New() does not register (histogram `_bucket`, `_sum` and `_count`
// series count as their family; `up` and `ALERTS` are Prometheus' own). It
// also fails when a chom_* metric the code registers is on no dashboard, so a
// new metric arrives with its panel. With promtool on PATH it runs
// `promtool check rules`, `promtool test rules` and `promtool check config`;
// without it the test is skipped, or fails when CI is set.
//
// Gauges that snapshot shared state (queue depth, fleet health, outbox lag,
// sites) may be exported by every chom process at once, so dashboards and
// rules aggregate them with max, never sum, across instances.
package dashboards
