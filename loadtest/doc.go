// Package loadtest is CHOM's load harness: the five scenarios of the old
// performance report (ramp-up, sustained, spike, soak, stress) played by virtual
// users against the HTTP API, the naive accept handler they are compared with,
// and the report (result.json, report.md, chart.png) that puts every figure
// beside the old report's targets.
//
// A [Runner] drives virtual users against one base URL. Each user is a goroutine
// that runs the user mix in a loop (create a site, wait for its operation, list
// sites, read the site, back it up when the API has backups, delete it and wait
// again) and records every request as a vegeta [vegeta.Result] with the route it
// hit. [Runner.Run] plays a [Scenario] stage by stage and returns a
// [ScenarioResult] with percentiles, throughput, errors by class, the ledger of
// accepted operations and, for stress, the breaking point. A [Report] gathers the
// scenarios and the accept comparison and writes the files.
//
// The harness sends load only to loopback addresses unless told otherwise
// ([Config.AllowRemote]): its dialer refuses any other destination, so a
// redirect or a DNS answer cannot send load elsewhere either.
//
// `chom-loadtest` (cmd/chom-loadtest) wires it to a running CHOM or to a full stack it
// starts in-process on real PostgreSQL and Redis.
package loadtest
