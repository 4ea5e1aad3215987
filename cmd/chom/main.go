// Command chom is CHOM's single binary. Its subcommands run each part of the
// platform (ingress, worker, scheduler), the whole platform on embedded parts
// (dev), the outbox relay to Kafka and the reference billing consumer, the schema
// migrations, and admin tasks such as issuing tokens.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

const usage = `chom: the CHOM hosting control plane

Usage:
  chom dev [--data-dir DIR] [--listen ADDR] [--kafka-listen ADDR]
                                              run everything in one process on embedded parts
  chom ingress                                run the HTTP API
  chom worker                                 run a queue worker
  chom scheduler                              run the periodic-task scheduler
  chom relay                                  publish the outbox to Kafka
  chom billing-consumer                       bill usage events from Kafka (reference consumer)
  chom migrate up|down|status                 manage the database schema
  chom token create --tenant NAME [--scope read,write,admin] [--name N] [--expires DURATION]
  chom loadtest [--scenario all|NAME,...] [--scale F] [--out DIR] [--url URL --token T]
                                              run the load scenarios and the baseline; see the README

Configuration comes from CHOM_* environment variables; see the README.
`

// defaultGCPercent is used when GOGC is not set. CHOM's live heap is small and its
// hot path allocates per request; collecting less often bought 12% more accepted
// requests per second and halved the p99 in the load run (scripts/load/accept.sh).
const defaultGCPercent = 400

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "chom:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage error")

// run dispatches to a subcommand. getenv is os.Getenv, injected for tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "dev":
		return runDev(ctx, args[1:], stdout, stderr, getenv)
	case "ingress":
		return runIngress(ctx, stderr, getenv)
	case "worker":
		return runWorker(ctx, stderr, getenv)
	case "scheduler":
		return runScheduler(ctx, stderr, getenv)
	case "relay":
		return runRelay(ctx, stderr, getenv)
	case "billing-consumer":
		return runBillingConsumer(ctx, stderr, getenv)
	case "migrate":
		return runMigrate(ctx, args[1:], stdout, getenv)
	case "token":
		return runToken(ctx, args[1:], stdout, getenv)
	case "loadtest":
		return runLoadtest(ctx, args[1:], stdout, stderr, getenv)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
}
