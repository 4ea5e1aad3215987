// Package stack is CHOM's one assembly: it turns configuration into running
// processes.
//
// LoadConfig (and LoadDevConfig for `chom dev`) read every CHOM_* setting from
// the environment; the table in settings.go is the only place a default lives,
// and the configuration reference (docs/configuration.md) and each command's
// --help are generated from it. One constructor per role (NewIngress,
// NewWorker, NewScheduler, NewRelay, NewBillingConsumer, NewDev) wires the
// packages below it — models, queue, drivers, jobs, workers, ingress, events,
// metrics — and returns something with Run(ctx) error. `cmd/chom` only parses
// a subcommand and calls these; the test kit (package stacktest) and the load
// harness (`cmd/chom-loadtest`) start the same constructors, so what the tests
// and the load runs exercise is what ships.
package stack
