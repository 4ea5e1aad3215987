// Package faults is CHOM's fault suite (issue 6): each test runs a real stack —
// the chom binary's ingress, worker and scheduler as subprocesses, on real
// PostgreSQL and Redis — injects one fault, and then checks the ledger:
//
//   - every accepted operation reached a final state;
//   - each side effect happened exactly once: one site row per accepted create,
//     one nginx server block under the local driver's root per active site and
//     none for any other, vps_servers.site_count equal to the live sites bound
//     to the server;
//   - exactly one outbox event per finished operation that must have one
//     (site.provisioned.v1, site.provision_failed.v1, site.deleted.v1), and no
//     other.
//
// The ledger is printed with t.Logf, so CI output shows it.
//
// The faults: a worker killed with SIGKILL mid-provision, a worker stopped
// with SIGTERM during work, the queue's Redis killed and restarted (AOF) and
// flushed, the master of a Sentinel-managed Redis killed under load,
// PostgreSQL stopped under the API, and the VPS sites are placed on
// becoming unreachable (TestVPSUnreachable: its breaker opens, tasks are
// deferred without burning retries, and all succeed once it is back). On a
// three-broker Kafka cluster, TestKafkaBrokerKilled kills the active
// controller (a partition leader too) while the relay publishes a stream of
// usage events and the billing consumer bills them; its ledger is every
// outbox row on Kafka at least once and billed exactly once, each tenant's
// events in outbox order on Kafka and on the invoices, and totals equal to the
// usage sum.
//
// The package holds tests only. It builds cmd/chom once per test binary (in
// TestMain) and finds its servers like every integration test (internal/testenv):
// the shared ones from CHOM_TEST_DATABASE_URL and CHOM_TEST_REDIS_URL, and a
// private redis-server or PostgreSQL cluster where the test must kill one. A
// missing server skips the tests on a developer machine and fails them when CI
// is set. With -short they are skipped: they take a minute or more.
package faults
