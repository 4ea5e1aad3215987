package stack

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/chomhq/chom/certs/devca"
	"github.com/chomhq/chom/certs/seal"
	"github.com/chomhq/chom/drivers/local"
	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// Dev seeds: the demo tenant, the platform tenant that owns the admin token,
// and the one local server that sites are placed on.
const (
	DevTenant      = "demo"
	DevAdminTenant = "platform"
	devVPSHostname = "vps1.dev.chom.internal"
)

// DevOptions are chom dev's flags.
type DevOptions struct {
	// DataDir holds the SQLite database, the tokens, the local servers' files,
	// the backups, the embedded broker's topics, the certificate encryption
	// key and the development CA's roots. Required.
	DataDir string
	// Listen overrides CHOM_LISTEN when set.
	Listen string
	// KafkaListen is the embedded broker's address (unless CHOM_KAFKA_BROKERS
	// is set); port 0 picks a free one.
	KafkaListen string
}

// Dev is `chom dev`: the ingress, a worker, the scheduler and the relay in
// one process, on SQLite, an in-process Redis and an in-process
// Kafka-protocol broker unless CHOM_DATABASE_URL, CHOM_REDIS_URL or
// CHOM_KAFKA_BROKERS name real ones; certificates come from an in-process
// development CA (certs/devca) unless CHOM_ACME_DIRECTORY_URL names a CA.
type Dev struct {
	// Config is the configuration the roles run with (embedded parts filled in).
	Config Config
	// Ingress is the API; DemoToken and AdminToken are the seeded tokens.
	Ingress               *Ingress
	DemoToken, AdminToken string

	proc    *Process
	closers []func()
	stdout  io.Writer
}

// NewDev loads chom dev's configuration (LoadDevConfig), starts the embedded
// parts it needs, seeds the demo tenant, its token, an admin token and one
// local server, and builds every role. It prints where everything is to
// stdout; Run runs it.
//
// Certificates: without CHOM_ACME_DIRECTORY_URL it starts the development
// CA, validating the local driver's sites over HTTP-01, and points
// Config.ACME at it (DirectoryURL, and CACerts: <data-dir>/dev-ca/acme-roots.pem);
// the root its certificates chain to is <data-dir>/dev-ca/root.pem. Without
// CHOM_CERT_ENCRYPTION_KEYS it seals with a key made on the first start and
// kept in <data-dir>/cert-encryption-keys (0600).
func NewDev(ctx context.Context, getenv func(string) string, o DevOptions, stdout, stderr io.Writer) (*Dev, error) {
	dir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	c, err := LoadDevConfig(getenv, dir)
	if err != nil {
		return nil, err
	}
	if o.Listen != "" {
		c.Listen = o.Listen
	}
	d := &Dev{stdout: stdout}
	if err := d.start(ctx, &c, dir, o, stderr); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

func (d *Dev) start(ctx context.Context, c *Config, dir string, o DevOptions, stderr io.Writer) error {
	log := NewLogger(stderr, *c).With("process", "dev")
	if c.RedisURL == "" {
		mr := miniredis.NewMiniRedis()
		if err := mr.StartAddr("127.0.0.1:0"); err != nil {
			return fmt.Errorf("start embedded redis: %w", err)
		}
		d.closers = append(d.closers, mr.Close)
		c.RedisURL = "redis://" + mr.Addr() + "/0"
	}
	kafkaDesc := strings.Join(c.KafkaBrokers, ",")
	if len(c.KafkaBrokers) == 0 {
		k, err := startEmbeddedKafka(o.KafkaListen, filepath.Join(dir, "kafka"))
		if err != nil {
			return err
		}
		d.closers = append(d.closers, k.Close)
		c.KafkaBrokers = []string{k.Addr()}
		kafkaDesc = k.Addr() + "   (embedded; any Kafka client can read it)"
	}
	https, err := d.startCertificates(ctx, c, dir, log)
	if err != nil {
		return err
	}
	d.Config = *c
	proc, err := build(ctx, *c, BackendOptions{Migrate: true, Reads: true}, func(b *Backends) ([]Runner, error) {
		b.TrackPlatform(ctx)
		if err := d.seed(ctx, b.Store, dir); err != nil {
			return nil, err
		}
		in, err := NewIngress(*c, b, log, Hooks{})
		if err != nil {
			return nil, err
		}
		d.Ingress = in
		w, err := NewWorker(*c, b, log, Hooks{})
		if err != nil {
			return nil, err
		}
		r, err := NewRelay(ctx, *c, b, log)
		if err != nil {
			return nil, err
		}
		s, err := NewScheduler(*c, log)
		if err != nil {
			return nil, err
		}
		return []Runner{in.Run, w.Run, r.Run, s.Run}, nil
	})
	if err != nil {
		return err
	}
	d.proc = proc
	fmt.Fprintf(d.stdout, `CHOM dev is running
  API          %[1]s/api/v1   (health: %[1]s/api/v1/health)
  ops UI       %[1]s/ops/queues   (user: anything, password: the admin token)
  metrics      %[1]s/metrics   (Prometheus, no auth)
  database     %[2]s
  redis        %[3]s
  kafka        %[9]s
  topics       %[10]s
  local VPS    %[4]s
  https        %[12]s
  usage        metered every %[11]s (CHOM_METERING_INTERVAL): GET %[1]s/api/v1/usage
  demo token   %[5]s   (also in %[6]s)
  admin token  %[7]s   (also in %[8]s)

Try:
  curl -s -X POST %[1]s/api/v1/sites -H "Authorization: Bearer $(cat %[6]s)" \
       -H 'Content-Type: application/json' -d '{"domain":"hello.example","site_type":"html"}'
Press Ctrl-C to stop.
`, d.Ingress.URL(), models.RedactURL(c.DatabaseURL), queue.RedactURL(c.RedisURL), c.LocalRoot, d.DemoToken, filepath.Join(dir, "dev-token"),
		d.AdminToken, filepath.Join(dir, "admin-token"), kafkaDesc, devTopics(c.KafkaTopicPrefix), c.MeteringEvery, https)
	return nil
}

// Run runs every role until ctx ends, then stops the embedded parts.
func (d *Dev) Run(ctx context.Context) error {
	defer d.close()
	err := d.proc.Run(ctx)
	fmt.Fprintln(d.stdout, "CHOM dev stopped")
	return err
}

func (d *Dev) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
	d.closers = nil
}

// Where chom dev keeps its certificate parts, under the data directory.
const (
	// DevEncryptionKeysFile holds the key ring chom dev made for
	// CHOM_CERT_ENCRYPTION_KEYS (0600), reused at every start.
	DevEncryptionKeysFile = "cert-encryption-keys"
	// DevCADir holds the development CA's PEM files, written at each start:
	// acme-roots.pem (what the worker trusts for the CA's directory,
	// CHOM_ACME_CA_CERTS) and root.pem (what the CA's certificates chain
	// to: trust it in a browser or with curl --cacert).
	DevCADir = "dev-ca"
)

// startCertificates fills in what issuance needs where the environment
// leaves it unset: the key ring sealing certificate and account keys (made
// once, kept in DevEncryptionKeysFile, so a restart opens what it sealed)
// and the CA (the development CA, validating the local driver's sites). It
// returns the banner's text about HTTPS.
func (d *Dev) startCertificates(ctx context.Context, c *Config, dir string, log *slog.Logger) (string, error) {
	if c.ACME.EncryptionKeys == "" {
		keys, err := devEncryptionKeys(filepath.Join(dir, DevEncryptionKeysFile), time.Now())
		if err != nil {
			return "", err
		}
		c.ACME.EncryptionKeys = keys
	}
	if c.ACME.DirectoryURL != "" {
		return "certificates from " + c.ACME.DirectoryURL + "   (CHOM_ACME_DIRECTORY_URL)", nil
	}
	if c.ACME.CACerts != "" {
		log.Warn("CHOM_ACME_CA_CERTS is replaced: without CHOM_ACME_DIRECTORY_URL chom dev issues from its development CA", "ignored", c.ACME.CACerts)
	}
	var answer http.Handler = http.NotFoundHandler()
	if c.Driver == "local" {
		p, err := local.New(local.Config{Root: c.LocalRoot, Logger: log.With("component", "devca")})
		if err != nil {
			return "", fmt.Errorf("development CA: %w", err)
		}
		answer = p.ChallengeHandler()
	} else {
		log.Warn("the development CA validates only the local driver's sites: set CHOM_ACME_DIRECTORY_URL to issue for real servers", "driver", c.Driver)
	}
	ca, err := devca.Start(ctx, devca.Config{HTTP01: answer, Logger: log.With("component", "devca")})
	if err != nil {
		return "", fmt.Errorf("development CA: %w", err)
	}
	d.closers = append(d.closers, func() { _ = ca.Close() })
	caDir := filepath.Join(dir, DevCADir)
	if err := os.MkdirAll(caDir, 0o700); err != nil {
		return "", fmt.Errorf("development CA: %w", err)
	}
	acmeRoots, root := filepath.Join(caDir, "acme-roots.pem"), filepath.Join(caDir, "root.pem")
	for _, f := range []struct {
		path string
		pem  []byte
	}{{acmeRoots, ca.ClientRootsPEM()}, {root, ca.IssuedRootsPEM()}} {
		if err := writeFileAtomic(f.path, f.pem, 0o644); err != nil {
			return "", fmt.Errorf("development CA: %w", err)
		}
	}
	c.ACME.DirectoryURL, c.ACME.CACerts = ca.DirectoryURL(), acmeRoots
	return "certificates from a development CA that no browser trusts; its root: " + root, nil
}

// devEncryptionKeys reads the key ring kept at path, or makes one key
// ("dev<date>:<32 random bytes, base64>") and keeps it there (0600). A file
// that does not parse is an error, never replaced: what was sealed under it
// would no longer open.
func devEncryptionKeys(path string, now time.Time) (string, error) {
	for {
		keys, err := readDevKeyRing(path)
		if !errors.Is(err, fs.ErrNotExist) {
			return keys, err
		}
		secret := make([]byte, seal.KeySize)
		if _, err := rand.Read(secret); err != nil {
			return "", fmt.Errorf("certificate encryption keys: %w", err)
		}
		keys = "dev" + now.UTC().Format("20060102") + ":" + base64.StdEncoding.EncodeToString(secret)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue // another chom dev on this data directory made it first
		}
		if err != nil {
			return "", fmt.Errorf("certificate encryption keys: %w", err)
		}
		_, werr := f.WriteString(keys + "\n")
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			_ = os.Remove(path)
			return "", fmt.Errorf("certificate encryption keys: write %s: %w", path, err)
		}
		return keys, nil
	}
}

// readDevKeyRing reads the key ring chom dev keeps at path, checked; an
// error wrapping fs.ErrNotExist when there is none yet.
func readDevKeyRing(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("certificate encryption keys: %w", err)
	}
	keys := strings.TrimSpace(string(b))
	if _, err := seal.ParseKeys(keys); err != nil {
		return "", fmt.Errorf("%s (the key ring chom dev made; put it back, or remove it to make a new one: what was sealed under it is then lost): %w", path, err)
	}
	return keys, nil
}

// writeFileAtomic replaces path with data (mode perm) through a temporary
// file renamed over it, so a reader never sees half a file.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(data)
	if err := errors.Join(werr, tmp.Chmod(perm), tmp.Close()); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// seed makes sure the demo and platform tenants, their tokens and the local
// server exist. A token saved by an earlier run is reused while it still
// works; otherwise a new one is issued and saved (mode 0600).
func (d *Dev) seed(ctx context.Context, store *models.Store, dir string) error {
	var err error
	if d.DemoToken, err = devToken(ctx, store, filepath.Join(dir, "dev-token"), DevTenant, []string{models.ScopeRead, models.ScopeWrite}); err != nil {
		return err
	}
	if d.AdminToken, err = devToken(ctx, store, filepath.Join(dir, "admin-token"), DevAdminTenant, []string{models.ScopeAdmin}); err != nil {
		return err
	}
	_, _, err = store.RegisterVPS(ctx, models.Accept{}, models.RegisterVPSParams{
		Hostname: devVPSHostname, IPAddress: "127.0.0.1", SSHPort: 22, Provider: "local", Region: "local",
		Allocation: models.AllocationShared, SiteCapacity: 1000,
	})
	if err != nil && !errors.Is(err, models.ErrConflict) {
		return err
	}
	return nil
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
	tok, err := IssueToken(ctx, store, tenant, "dev", scopes, 0)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("save token: %w", err)
	}
	return tok, nil
}

// IssueToken creates the tenant if needed and a token for it with scopes,
// expiring after ttl (0: never).
func IssueToken(ctx context.Context, store *models.Store, tenant, name string, scopes []string, ttl time.Duration) (string, error) {
	t, err := store.EnsureTenant(ctx, tenant)
	if err != nil {
		return "", err
	}
	p := models.NewTokenParams{TenantID: t.ID, Name: name, Scopes: scopes}
	if ttl > 0 {
		exp := time.Now().Add(ttl).UTC()
		p.ExpiresAt = &exp
	}
	token, _, err := store.CreateToken(ctx, p)
	return token, err
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

// embeddedKafka is the in-process Kafka-protocol broker of chom dev
// (franz-go's kfake): one broker, any Kafka client can talk to it, topics
// and records kept under dir across restarts.
type embeddedKafka struct {
	cluster *kfake.Cluster
	addr    string
}

// startEmbeddedKafka serves a one-broker kfake cluster on listen (host:port;
// port 0 picks a free one), persisting its data under dir.
func startEmbeddedKafka(listen, dir string) (*embeddedKafka, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded kafka: %w", err)
	}
	// Bind first, so a busy address is a clear error before anything else starts.
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("embedded kafka: listen %s (--kafka-listen): %w", listen, err)
	}
	used := false
	cluster, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.ClusterID("chom-dev"),
		kfake.DataDir(dir),
		kfake.ListenFn(func(string, string) (net.Listener, error) {
			if used {
				return nil, errors.New("embedded kafka: one broker only")
			}
			used = true
			return ln, nil
		}),
	)
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("embedded kafka: %w", err)
	}
	return &embeddedKafka{cluster: cluster, addr: ln.Addr().String()}, nil
}

// Addr is the broker's host:port, as clients should dial it.
func (k *embeddedKafka) Addr() string { return k.addr }

// Close stops the broker, flushing its data to disk.
func (k *embeddedKafka) Close() { k.cluster.Close() }
