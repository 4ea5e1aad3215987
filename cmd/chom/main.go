// Command chom is CHOM's single binary. Its subcommands run each part of the
// platform (ingress, worker, scheduler, relay, billing consumer), the whole
// platform on embedded parts (dev), the schema migrations, and admin tasks such
// as issuing tokens. The wiring lives in internal/stack; this package only
// parses the command line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/chomhq/chom/internal/stack"
)

// defaultGCPercent is used when GOGC is not set. CHOM's live heap is small and
// its hot path allocates per request; collecting less often bought 12% more
// accepted requests per second and halved the p99 in the load run
// (scripts/load/accept.sh).
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

// errUsage marks a command line that cannot be run; main exits 2 on it.
var errUsage = errors.New("usage error")

// env is what a command runs with: its arguments after the flags, its
// output streams and the environment (os.Getenv, injected for tests).
type env struct {
	args           []string
	stdout, stderr io.Writer
	getenv         func(string) string
}

// command is one subcommand: how it is called, what it does, which settings
// it reads (for --help) and its flags.
type command struct {
	name    string
	args    string // the synopsis after the name
	summary string
	role    stack.Role
	dev     bool // --help shows chom dev's defaults
	// flags declares the command's flags on fs and returns its body, run
	// after they are parsed.
	flags func(fs *flag.FlagSet) func(ctx context.Context, e env) error
	// subs are the subcommands (chom token create|list|revoke); a command
	// with subs has no flags or body of its own.
	subs []command
}

func commands() []command {
	noFlags := func(body func(ctx context.Context, e env) error) func(*flag.FlagSet) func(context.Context, env) error {
		return func(*flag.FlagSet) func(context.Context, env) error { return body }
	}
	server := func(start func(context.Context, stack.Config, io.Writer) (*stack.Process, error)) func(context.Context, env) error {
		return func(ctx context.Context, e env) error {
			c, err := stack.LoadConfig(e.getenv)
			if err != nil {
				return err
			}
			p, err := start(ctx, c, e.stderr)
			if err != nil {
				return err
			}
			return p.Run(ctx)
		}
	}
	return []command{
		{name: "dev", summary: "run everything in one process (API, worker, scheduler, relay) on embedded parts",
			role: stack.RoleDev, dev: true, flags: devFlags},
		{name: "ingress", summary: "run the HTTP API (and /ops/queues, /metrics)", role: stack.RoleIngress,
			flags: noFlags(server(stack.IngressProcess))},
		{name: "worker", summary: "run a queue worker (provisioning, backups, health checks, metering)", role: stack.RoleWorker,
			flags: noFlags(server(stack.WorkerProcess))},
		{name: "scheduler", summary: "run the periodic-task scheduler", role: stack.RoleScheduler,
			flags: noFlags(server(stack.SchedulerProcess))},
		{name: "relay", summary: "publish the outbox to Kafka (run two or more: one leads)", role: stack.RoleRelay,
			flags: noFlags(server(stack.RelayProcess))},
		{name: "billing-consumer", summary: "bill usage events from Kafka (the reference consumer)", role: stack.RoleBilling,
			flags: noFlags(server(stack.BillingProcess))},
		{name: "migrate", args: "up|down|status", summary: "manage the database schema", role: stack.RoleAdmin, flags: migrateFlags},
		{name: "token", args: "create|list|revoke", summary: "issue, list and revoke API tokens", role: stack.RoleAdmin, subs: tokenCommands()},
		{name: "certificates", args: "reseal", summary: "maintain the keys sealed at rest (key rotation)", role: stack.RoleAdmin, subs: certificateCommands()},
		{name: "healthcheck", summary: "exit 0 when the CHOM process on this machine answers its health endpoint (a container's HEALTHCHECK)",
			flags: healthcheckFlags},
		{name: "version", summary: "print the version and the commit it was built from", flags: noFlags(printVersion)},
	}
}

// run dispatches to a subcommand.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		writeUsage(stderr)
		return fmt.Errorf("%w: no command", errUsage)
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			return run(ctx, []string{args[1], "--help"}, stdout, stderr, getenv)
		}
		writeUsage(stdout)
		return nil
	}
	for _, cmd := range commands() {
		if cmd.name == args[0] {
			return cmd.run(ctx, args[1:], env{stdout: stdout, stderr: stderr, getenv: getenv})
		}
	}
	writeUsage(stderr)
	return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
}

// run parses the command's flags (--help prints its help to stdout and
// succeeds; a bad flag is a usage error) and runs it.
func (cmd command) run(ctx context.Context, args []string, e env) error {
	if len(cmd.subs) > 0 {
		return cmd.runSub(ctx, args, e)
	}
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // help and errors are written below
	body := cmd.flags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cmd.help(e.stdout, fs)
		}
		return fmt.Errorf("%w: chom %s: %v (see chom %s --help)", errUsage, cmd.name, err, cmd.name)
	}
	e.args = fs.Args()
	if cmd.args == "" && len(e.args) > 0 {
		return fmt.Errorf("%w: chom %s takes no arguments, got %q", errUsage, cmd.name, e.args)
	}
	return body(ctx, e)
}

// runSub runs the subcommand args[0] names; --help (or help) lists them all.
func (cmd command) runSub(ctx context.Context, args []string, e env) error {
	if len(args) > 0 {
		for _, sub := range cmd.subs {
			if sub.name == args[0] {
				sub.name = cmd.name + " " + sub.name
				if sub.role == 0 {
					sub.role = cmd.role
				}
				return sub.run(ctx, args[1:], e)
			}
		}
		if args[0] == "help" || wantsHelp(args[:1]) {
			return cmd.help(e.stdout, nil)
		}
		return fmt.Errorf("%w: chom %s: unknown subcommand %q, want %s (see chom %s --help)", errUsage, cmd.name, args[0], cmd.args, cmd.name)
	}
	return fmt.Errorf("%w: chom %s %s (see chom %s --help)", errUsage, cmd.name, cmd.args, cmd.name)
}

func wantsHelp(args []string) bool {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			return true
		}
	}
	return false
}

// help writes the command's synopsis, flags (or subcommands with theirs) and
// the variables it reads. fs is nil for a command with subcommands.
func (cmd command) help(w io.Writer, fs *flag.FlagSet) error {
	fmt.Fprintf(w, "Usage: chom %s %s\n\n%s.\n", cmd.name, strings.TrimSpace(cmd.args+" [flags]"), capitalize(cmd.summary))
	hasFlags := false
	if fs != nil {
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	}
	if hasFlags {
		fmt.Fprintln(w, "\nFlags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
	if len(cmd.subs) > 0 {
		fmt.Fprintln(w, "\nSubcommands:")
		for _, sub := range cmd.subs {
			fmt.Fprintf(w, "\n  chom %s %s\n      %s.\n", cmd.name, strings.TrimSpace(sub.name+" "+sub.args), capitalize(sub.summary))
			sfs := flag.NewFlagSet(sub.name, flag.ContinueOnError)
			sub.flags(sfs)
			sfs.SetOutput(w)
			sfs.PrintDefaults()
		}
		fmt.Fprintf(w, "\n`chom %s <subcommand> --help` shows one of them.\n", cmd.name)
	}
	if cmd.role != 0 {
		fmt.Fprintln(w)
		if err := stack.WriteEnvHelp(w, cmd.role, cmd.dev); err != nil {
			return err
		}
		fmt.Fprintln(w, "\nEvery variable: docs/configuration.md.")
	}
	return nil
}

func writeUsage(w io.Writer) {
	fmt.Fprint(w, "chom: the CHOM hosting control plane\n\nUsage:\n")
	for _, cmd := range commands() {
		fmt.Fprintf(w, "  chom %-34s %s\n", strings.TrimSpace(cmd.name+" "+cmd.args), cmd.summary)
	}
	fmt.Fprint(w, "\n`chom <command> --help` lists a command's flags and the CHOM_* variables it reads.\n"+
		"The load harness is its own binary: go run ./cmd/chom-loadtest --help\n")
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func devFlags(fs *flag.FlagSet) func(context.Context, env) error {
	var o stack.DevOptions
	fs.StringVar(&o.DataDir, "data-dir", "./.chom-dev", "where the SQLite database, tokens, local server files, backups and topics live")
	fs.StringVar(&o.Listen, "listen", "", "address of the HTTP API (default CHOM_LISTEN, else 127.0.0.1:8080)")
	fs.StringVar(&o.KafkaListen, "kafka-listen", "127.0.0.1:9092", "address of the embedded Kafka broker (unless CHOM_KAFKA_BROKERS is set)")
	return func(ctx context.Context, e env) error {
		d, err := stack.NewDev(ctx, e.getenv, o, e.stdout, e.stderr)
		if err != nil {
			return err
		}
		return d.Run(ctx)
	}
}

// printVersion prints the module version and the VCS commit of the build.
func printVersion(_ context.Context, e env) error {
	version, commit, modified, goVersion := "(unknown)", "unknown", false, ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		version, goVersion = bi.Main.Version, bi.GoVersion
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if modified {
		commit += " (modified)"
	}
	fmt.Fprintf(e.stdout, "chom %s\ncommit %s\n%s\n", version, commit, goVersion)
	return nil
}
