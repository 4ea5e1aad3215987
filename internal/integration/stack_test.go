package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/local"
	"github.com/chomhq/chom/ingress"
	assembly "github.com/chomhq/chom/internal/stack"
	"github.com/chomhq/chom/internal/stack/stacktest"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/metrics"
	"github.com/chomhq/chom/models"
)

func init() { gin.SetMode(gin.ReleaseMode) }

// stack is one CHOM installation for one test, started by the production
// wiring's test kit (stacktest): its own database (schema or file), its own
// Redis database, a local-driver root, the API on a loopback port and
// (unless stackOpts.noWorker) a running worker with the guard, breakers and
// limits that ship. The API reaches Redis through a proxy the test can cut.
type stack struct {
	t           testing.TB
	kit         *stacktest.Stack
	db          *bun.DB
	store       *models.Store
	redisDB     testenv.RedisDB
	workerRedis redis.UniversalClient
	proxy       *testenv.Proxy
	api         *ingress.API
	url         string
	root        string
	metrics     *metrics.Metrics
	provision   *jobs.ProvisionSite
	deprovision *jobs.DeprovisionSite
	reconciler  *jobs.Reconciler
	healthSweep *jobs.SweepHealth
	healthCheck *jobs.CheckHealth
	meterSweep  *jobs.MeterSweep
	meter       *jobs.MeterUsage
	// backups are the backup handlers over the local driver's BackupSource
	// and the filesystem store in backupDir; signingKey signs download links.
	backups    *jobs.Backups
	backupDir  string
	signingKey []byte

	tokenA, tokenB, admin string
	tenantA, tenantB      string
	vpsID                 string
}

type stackOpts struct {
	noWorker    bool
	vpsCapacity []int // one shared server per entry; default one server of 100
	tokenTTL    time.Duration
	rateLimit   float64 // per-token requests/s; 0 = off
	rateBurst   int
	// wrapDriver wraps the local driver, to count calls or inject failures.
	wrapDriver func(p *local.Provisioner) drivers.Provisioner
	// healthProbe is the probe of the health checks; default the local one.
	healthProbe drivers.HealthProbe
	// metrics, when set, is the registry every part reports to (else a new one).
	metrics *metrics.Metrics
	// meterNow is the usage meter's clock (it meters only periods that have
	// ended by it); default time.Now.
	meterNow func() time.Time
	// remote, when set, replaces the local driver (e.g. the SSH driver over a
	// vpsenv.VPS), and the stack's servers are registered at its SSH port
	// with its host key pinned, so placement sends sites there. wrapDriver is
	// not applied.
	remote *remoteDriver
	// relay runs the outbox relay to this Kafka.
	relay *testenv.KafkaTopics
	// env are CHOM_* settings for the production loader, over the kit's.
	env map[string]string
}

// remoteDriver is a driver that reaches a real server, and where that server is.
type remoteDriver struct {
	driver interface {
		drivers.Provisioner
		drivers.BackupSource
		drivers.UsageProbe
	}
	sshPort int    // the server's SSH port on 127.0.0.1
	hostKey string // the server's host key, authorized_keys form
}

// backends runs fn on PostgreSQL and on SQLite.
func backends(t *testing.T, fn func(t *testing.T, db *bun.DB)) {
	testenv.Backends(t, fn)
}

func testLogger(testing.TB) *slog.Logger { return stacktest.Logger() }

func newStack(t testing.TB, db *bun.DB, o stackOpts) *stack {
	t.Helper()
	env := maps.Clone(o.env)
	if env == nil {
		env = map[string]string{}
	}
	if o.tokenTTL != 0 {
		env["CHOM_TOKEN_CACHE_TTL"] = o.tokenTTL.String()
	}
	if o.rateLimit > 0 {
		env["CHOM_RATE_LIMIT"] = strconv.FormatFloat(o.rateLimit, 'f', -1, 64)
		env["CHOM_RATE_BURST"] = strconv.Itoa(max(o.rateBurst, 1))
	}
	hooks := assembly.Hooks{HealthProbe: o.healthProbe, MeterNow: o.meterNow}
	switch {
	case o.remote != nil:
		hooks.Driver = &assembly.Driver{Provisioner: o.remote.driver, Backups: o.remote.driver, Usage: o.remote.driver}
		if d, ok := o.remote.driver.(drivers.TLSDeployer); ok {
			hooks.Driver.TLS = d
		}
	case o.wrapDriver != nil:
		hooks.WrapProvisioner = func(p drivers.Provisioner) drivers.Provisioner { return o.wrapDriver(p.(*local.Provisioner)) }
	}
	if o.relay != nil {
		env["CHOM_KAFKA_BROKERS"] = strings.Join(o.relay.Brokers, ",")
		env["CHOM_KAFKA_TOPIC_PREFIX"] = o.relay.Prefix
	}
	kit := stacktest.Start(t, stacktest.Options{DB: db, Env: env, NoWorker: o.noWorker, Relay: o.relay != nil,
		Hooks: hooks, Metrics: o.metrics})
	w := kit.Worker
	s := &stack{t: t, kit: kit, db: db, store: kit.Store, redisDB: kit.Redis, workerRedis: kit.WorkerRedis, proxy: kit.Proxy,
		api: kit.Ingress.API, url: kit.URL, root: kit.Root, metrics: kit.Metrics,
		provision: w.Provision, deprovision: w.Deprovision, reconciler: w.Reconciler, healthSweep: w.HealthSweep,
		healthCheck: w.HealthCheck, meterSweep: w.MeterSweep, meter: w.Meter, backups: w.Backups,
		backupDir: kit.BackupDir, signingKey: []byte(stacktest.SigningKey)}
	ctx := context.Background()
	s.tokenA, s.tenantA = s.issue("tenant-a", models.ScopeRead, models.ScopeWrite)
	s.tokenB, s.tenantB = s.issue("tenant-b", models.ScopeRead, models.ScopeWrite)
	s.admin, _ = s.issue("platform", models.ScopeAdmin)
	caps := o.vpsCapacity
	if len(caps) == 0 {
		caps = []int{100}
	}
	sshPort, hostKey := 22, ""
	if o.remote != nil {
		sshPort, hostKey = o.remote.sshPort, o.remote.hostKey
	}
	for i, c := range caps {
		v, _, err := s.store.RegisterVPS(ctx, models.Accept{}, models.RegisterVPSParams{
			Hostname: "vps" + string(rune('a'+i)) + ".test.example", IPAddress: "127.0.0.1", SSHPort: sshPort, HostKey: hostKey,
			Provider: "local", Region: "test", Allocation: models.AllocationShared, SiteCapacity: c,
		})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			s.vpsID = v.ID
		}
	}
	return s
}

// needBackups fails the test when the local driver has no BackupSource.
func (s *stack) needBackups() {
	s.t.Helper()
	if s.backups == nil {
		s.t.Fatal("the local driver does not implement drivers.BackupSource: backups cannot run")
	}
}

// startWorker runs the worker for the rest of the test.
func (s *stack) startWorker() { s.kit.StartWorker() }

func (s *stack) issue(tenant string, scopes ...string) (token, tenantID string) {
	s.t.Helper()
	ctx := context.Background()
	tn, err := s.store.EnsureTenant(ctx, tenant)
	if err != nil {
		s.t.Fatal(err)
	}
	tok, _, err := s.store.CreateToken(ctx, models.NewTokenParams{TenantID: tn.ID, Name: "test", Scopes: scopes})
	if err != nil {
		s.t.Fatal(err)
	}
	return tok, tn.ID
}

// response is an HTTP answer read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// do sends a request; body may be a string (sent as is) or a value (JSON-encoded).
func (s *stack) do(method, path, token string, body any, headers ...string) response {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	r := response{status: res.StatusCode, header: res.Header, body: raw}
	checkOpenAPI(s.t, method, path, r) // openapi_test.go
	return r
}

// createSite posts a site and returns the accepted operation.
func (s *stack) createSite(token, domain, siteType string, headers ...string) ingress.OperationView {
	s.t.Helper()
	r := s.do("POST", "/api/v1/sites", token, map[string]string{"domain": domain, "site_type": siteType}, headers...)
	if r.status != http.StatusAccepted {
		s.t.Fatalf("POST /sites %s: %d %s", domain, r.status, r.body)
	}
	var op ingress.OperationView
	r.json(s.t, &op)
	return op
}

// waitOp long-polls an operation until it finishes (or fails the test after 30s).
func (s *stack) waitOp(token, id string) ingress.OperationView {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		r := s.do("GET", "/api/v1/operations/"+id+"?wait=5s", token, nil)
		if r.status != http.StatusOK {
			s.t.Fatalf("GET operation %s: %d %s", id, r.status, r.body)
		}
		var op ingress.OperationView
		r.json(s.t, &op)
		if models.IsTerminal(op.Status) {
			return op
		}
	}
	s.t.Fatalf("operation %s did not finish in 30s", id)
	return ingress.OperationView{}
}

// count returns the number of rows of table matching the optional where clause.
func (s *stack) count(table, where string, args ...any) int {
	s.t.Helper()
	q := s.db.NewSelect().Table(table)
	if where != "" {
		q = q.Where(where, args...)
	}
	n, err := q.Count(context.Background())
	if err != nil {
		s.t.Fatal(err)
	}
	return int(n)
}
