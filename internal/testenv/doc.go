// Package testenv hands tests an isolated piece of a real server: a fresh
// PostgreSQL schema, a file-backed SQLite database, a Redis logical database or
// a Kafka topic prefix, each torn down by t.Cleanup. It is imported only from
// _test.go files.
//
// # Where the servers come from
//
// The servers are found through environment variables, which
// scripts/test-services.sh exports after starting a throwaway PostgreSQL, Redis
// and Kafka on loopback (`go tool task test` runs the whole suite that way):
//
//	CHOM_TEST_DATABASE_URL    postgres://user@host:port/db?sslmode=disable
//	CHOM_TEST_REDIS_URL       redis://host:port/0 (the server needs --databases 1024)
//	CHOM_TEST_KAFKA_BROKERS   host:port[,host:port…] of an Apache Kafka broker
//	CHOM_TEST_KAFKA_LAUNCHER  scripts/kafka.sh, for tests that run a broker of their own
//
// When a variable is unset, a test that asks for that server is skipped on a
// developer machine, so `go test -short ./...` works without services. When the
// CI variable is non-empty the same test fails instead: CI must never report a
// green run in which the integration tests did not run. A variable that is set
// but points at a server that does not answer is always a failure.
//
// [StartS3Server] needs no variable: it starts moto (an S3-compatible server
// from PyPI, in a venv that scripts/moto.sh builds under .cache/ on first use)
// on a loopback port of the test's own; without python3 it skips, or fails
// under CI.
//
// # Isolation
//
// [Postgres] creates a schema named t_<16 hex digits> and returns a pool whose
// every connection has search_path set to it as a startup parameter, so tests
// run in parallel against one server without seeing each other's tables. The
// schema is dropped (CASCADE) on cleanup. [PostgresDSN] does the same for tests
// that hand a connection string to a subprocess.
//
// [Redis] takes a logical database 1..1023 from a counter on database 0
// (INCR chom:testenv:next-db), so test binaries running at the same time get
// different databases; it is flushed before use and on cleanup.
//
// [SQLite] opens a new file under t.TempDir() with WAL journaling,
// busy_timeout=5000 and foreign keys on. The pool holds a single connection:
// SQLite has one writer at a time anyway, and a single connection can never
// hit SQLITE_BUSY, nor lose per-connection pragmas. The price is that a test
// that keeps a transaction open and then queries through the *bun.DB (not
// the transaction) from the same goroutine blocks forever; that code would
// also exhaust a PostgreSQL pool under load, so it is a bug worth finding.
//
// [Kafka] hands out a topic prefix of the test's own ("t" + 16 hex digits) on
// the shared broker, whose topics are deleted on cleanup; [Records] and
// [WaitRecords] read a topic whole. [StartKafkaServer] runs a broker of the
// test's own through scripts/kafka.sh, which the test can stop, kill and start
// again to simulate an outage. [KafkaSASL] starts, once per test binary, a
// broker whose only client listener is SASL_SSL (PLAIN and SCRAM-SHA-512, a CA
// and certificate made for it) with ACLs enforced; the package's TestMain
// stops it with [StopKafkaSASL]. [Kcat] finds the kcat client, a non-Go reader.
//
// # Private servers
//
// A fault test that must stop, kill or flush a server cannot use the shared
// ones. [StartRedisServer] and [StartPostgresServer] start a throwaway
// redis-server or PostgreSQL cluster (initdb, then postgres as the postgres
// user when the test runs as root) on a free loopback port, with its files in
// a fresh directory; both are stopped and the directory removed when the test
// ends. Their Stop, Kill and Start methods take the server down, cleanly or
// not, and bring it back on the same port with the same data. A missing
// binary skips the test on a developer machine and fails it when CI is set.
// [StartPostgresReplica] adds a hot standby of such a primary (pg_basebackup,
// optionally synchronous) that a test can pause (PauseReplay) or promote
// (Promote); [MultiHostURL] is the failover URL over both.
//
// [Backends] runs one test body against PostgreSQL and SQLite, for the code
// that `chom dev` runs on SQLite and production runs on PostgreSQL.
package testenv
