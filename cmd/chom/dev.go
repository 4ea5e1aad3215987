package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/alicebob/miniredis/v2"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/metrics"
	"github.com/chomhq/chom/models"
)

// Dev seeds: the demo tenant, the platform tenant that owns the admin token, and
// the one local server that sites are placed on.
const (
	devTenant      = "demo"
	devAdminTenant = "platform"
	devVPSHostname = "vps1.dev.chom.internal"
)

// runDev runs the whole platform in one process: SQLite under the data directory
// (or CHOM_DATABASE_URL), an in-process Redis (or CHOM_REDIS_URL), the local
// driver with one registered server, an in-process Kafka broker (or
// CHOM_KAFKA_BROKERS), the API, a worker, the scheduler and the outbox relay.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "./.chom-dev", "where the SQLite database, tokens and local server files live")
	listen := fs.String("listen", "127.0.0.1:8080", "address of the HTTP API")
	kafkaListen := fs.String("kafka-listen", "127.0.0.1:9092", "address of the embedded Kafka broker (unless CHOM_KAFKA_BROKERS is set)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	c, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	if getenv("CHOM_LOG_FORMAT") == "" {
		c.LogFormat = "text"
	}
	c.Listen = *listen
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	log := newLogger(stderr, c).With("process", "dev")

	if c.DatabaseURL == "" {
		c.DatabaseURL = "sqlite://" + filepath.Join(dir, "chom.db")
	}
	if c.BackupDir == "" {
		c.BackupDir = filepath.Join(dir, "backups")
	}
	if c.RedisURL == "" {
		mr := miniredis.NewMiniRedis()
		if err := mr.StartAddr("127.0.0.1:0"); err != nil {
			return fmt.Errorf("start embedded redis: %w", err)
		}
		defer mr.Close()
		c.RedisURL = "redis://" + mr.Addr() + "/0"
	}
	kafkaDesc := strings.Join(c.KafkaBrokers, ",")
	if len(c.KafkaBrokers) == 0 {
		k, err := startEmbeddedKafka(*kafkaListen, filepath.Join(dir, "kafka"))
		if err != nil {
			return err
		}
		defer k.Close()
		c.KafkaBrokers = []string{k.Addr()}
		kafkaDesc = k.Addr() + "   (embedded; any Kafka client can read it)"
	}
	if getenv("CHOM_KAFKA_REPLICATION") == "" {
		c.KafkaReplication = 1 // one broker, embedded or local
	}
	// One registry for every part, served at /metrics on the API listener.
	m := metrics.New()
	b, err := openBackends(ctx, c, true, m)
	if err != nil {
		return err
	}
	defer b.Close()
	trackPlatform(ctx, m, b)

	tokens, err := seedDev(ctx, b.store, dir)
	if err != nil {
		return err
	}
	parts, err := newIngress(c, b, log)
	if err != nil {
		return err
	}
	root := c.LocalRoot
	if root == "" {
		root = filepath.Join(dir, "vps")
	}
	w, err := newWorker(c, b, log, root)
	if err != nil {
		return err
	}
	relay, err := newRelay(c, b.store, log)
	if err != nil {
		return err
	}
	trackRelay(ctx, m, relay)
	sched, err := newScheduler(c, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", c.Listen, err)
	}
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, `CHOM dev is running
  API          %[1]s/api/v1   (health: %[1]s/api/v1/health)
  ops UI       %[1]s/ops/queues   (user: anything, password: the admin token)
  metrics      %[1]s/metrics   (Prometheus, no auth)
  database     %[2]s
  redis        %[3]s
  kafka        %[9]s
  topics       %[10]s
  local VPS    %[4]s
  demo token   %[5]s   (also in %[6]s)
  admin token  %[7]s   (also in %[8]s)

Try:
  curl -s -X POST %[1]s/api/v1/sites -H "Authorization: Bearer $(cat %[6]s)" \
       -H 'Content-Type: application/json' -d '{"domain":"hello.example","site_type":"html"}'
Press Ctrl-C to stop.
`, base, models.RedactURL(c.DatabaseURL), c.RedisURL, root, tokens.demo, filepath.Join(dir, "dev-token"),
		tokens.admin, filepath.Join(dir, "admin-token"), kafkaDesc, devTopics(c.KafkaTopicPrefix))

	err = runAll(ctx, append(parts.runners(ln, c.ShutdownTimeout, log), w.Run, sched.Run, relay.Run)...)
	fmt.Fprintln(stdout, "CHOM dev stopped")
	return err
}

type devTokens struct{ demo, admin string }

// seedDev makes sure the demo and platform tenants, their tokens and the local
// server exist. A token saved by an earlier run is reused while it still works;
// otherwise a new one is issued and saved (mode 0600).
func seedDev(ctx context.Context, store *models.Store, dir string) (devTokens, error) {
	var out devTokens
	var err error
	out.demo, err = devToken(ctx, store, filepath.Join(dir, "dev-token"), devTenant, []string{models.ScopeRead, models.ScopeWrite})
	if err != nil {
		return out, err
	}
	out.admin, err = devToken(ctx, store, filepath.Join(dir, "admin-token"), devAdminTenant, []string{models.ScopeAdmin})
	if err != nil {
		return out, err
	}
	_, _, err = store.RegisterVPS(ctx, models.Accept{}, models.RegisterVPSParams{
		Hostname: devVPSHostname, IPAddress: "127.0.0.1", SSHPort: 22, Provider: "local", Region: "local",
		Allocation: models.AllocationShared, SiteCapacity: 1000,
	})
	if err != nil && !errors.Is(err, models.ErrConflict) {
		return out, err
	}
	return out, nil
}

func devToken(ctx context.Context, store *models.Store, path, tenant string, scopes []string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		tok := strings.TrimSpace(string(b))
		if models.WellFormedToken(tok) {
			if _, err := store.LookupToken(ctx, models.HashToken(tok)); err == nil {
				return tok, nil
			}
		}
	}
	tok, _, err := issueToken(ctx, store, tenant, "dev", scopes, 0)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("save token: %w", err)
	}
	return tok, nil
}

// devTopics lists the full names of the topics the relay publishes to.
func devTopics(prefix string) string {
	if prefix == "-" {
		prefix = ""
	}
	var names []string
	for _, t := range events.Topics() {
		names = append(names, events.FullTopic(prefix, t))
	}
	return strings.Join(names, ", ")
}
