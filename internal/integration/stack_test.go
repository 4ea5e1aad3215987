package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/fsstore"
	"github.com/chomhq/chom/drivers/local"
	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/metrics"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
	"github.com/chomhq/chom/workers"
)

func init() { gin.SetMode(gin.ReleaseMode) }

// stack is one CHOM installation for one test: its own database (schema or file),
// its own Redis database, a local-driver root, the API on an httptest server, and
// (unless stackOpts.noWorker) a running worker. The API reaches Redis through a
// proxy the test can cut; the worker connects directly.
type stack struct {
	t           testing.TB
	db          *bun.DB
	store       *models.Store
	redisDB     testenv.RedisDB
	workerRedis redis.UniversalClient
	proxy       *testenv.Proxy
	api         *ingress.API
	srv         *httptest.Server
	root        string
	provision   *jobs.ProvisionSite
	deprovision *jobs.DeprovisionSite
	reconciler  *jobs.Reconciler
	healthSweep *jobs.SweepHealth
	healthCheck *jobs.CheckHealth
	metrics     *metrics.Metrics
	meterSweep  *jobs.MeterSweep
	meter       *jobs.MeterUsage
	// backups are the backup handlers over the local driver's BackupSource
	// and a filesystem store in backupDir; signingKey signs download links.
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
	// metrics, when set, instruments the database, the API (which then serves
	// /metrics) and the worker, as cmd/chom does.
	metrics *metrics.Metrics
	// meterNow is the usage meter's clock (it meters only periods that have
	// ended by it); default time.Now.
	meterNow func() time.Time
	// remote, when set, replaces the local driver in the provision,
	// deprovision and backup jobs (e.g. the SSH driver over a vpsenv.VPS),
	// and the stack's servers are registered at its SSH port with its host
	// key pinned, so placement sends sites there. wrapDriver is not applied.
	remote *remoteDriver
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

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("CHOM_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newStack(t testing.TB, db *bun.DB, o stackOpts) *stack {
	t.Helper()
	ctx := context.Background()
	if o.metrics != nil {
		db.AddQueryHook(o.metrics.QueryHook())
	}
	if _, err := models.MigrateUp(ctx, db); err != nil {
		t.Fatal(err)
	}
	store, err := models.New(models.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	// The local driver writes its root into config files, so it takes only plain
	// path characters; test names (and so t.TempDir) may have others.
	root, err := os.MkdirTemp("", "chom-vps-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	s := &stack{t: t, db: db, store: store, redisDB: testenv.Redis(t), root: root, metrics: o.metrics}
	s.workerRedis = s.redisDB.Client(t)
	s.proxy = testenv.NewProxy(t, s.redisDB.Addr)
	apiRedis := redis.NewClient(&redis.Options{Addr: s.proxy.Addr(), DB: s.redisDB.DB,
		DialTimeout: 300 * time.Millisecond, ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond, MaxRetries: 0})
	t.Cleanup(func() { _ = apiRedis.Close() })

	log := testLogger(t)
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
		v, _, err := store.RegisterVPS(ctx, models.Accept{}, models.RegisterVPSParams{
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

	watcher := queue.NewWatcher(apiRedis)
	wctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	go watcher.Run(wctx)
	opt, err := queue.RedisOptions(s.redisDB.URL)
	if err != nil {
		t.Fatal(err)
	}
	ttl := o.tokenTTL
	if ttl == 0 {
		ttl = -1 // no cache: tests revoke tokens and expect it at once
	}
	acceptor, err := models.NewSiteAcceptor(models.SiteAcceptorConfig{Store: store, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithCancel(ctx)
	adone := make(chan struct{})
	go func() { _ = acceptor.Run(actx); close(adone) }()
	t.Cleanup(func() { acancel(); <-adone })
	if s.backupDir, err = os.MkdirTemp("", "chom-backups-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(s.backupDir) })
	archives, err := fsstore.New(fsstore.Config{Dir: s.backupDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = archives.Close() })
	s.signingKey = []byte("integration-test-signing-key-0123456789")
	s.api, err = ingress.New(ingress.Config{
		Store: store, Sites: acceptor, Enqueuer: queue.NewEnqueuer(apiRedis), Inspector: queue.NewInspector(apiRedis),
		Watcher: watcher, Notifier: queue.NewNotifier(apiRedis), Logger: log, OpsUI: queue.NewOpsUI(opt, false, ""), TokenCacheTTL: ttl,
		EnqueueTimeout: time.Second, PollInterval: 100 * time.Millisecond,
		RateLimit: o.rateLimit, RateBurst: o.rateBurst, Metrics: o.metrics,
		Backups: ingress.BackupConfig{Archives: archives, SigningKey: s.signingKey,
			IsNotFound: func(err error) bool { return errors.Is(err, drivers.ErrNotFound) }},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.srv = httptest.NewServer(s.api.Handler())
	t.Cleanup(s.srv.Close)

	prov, err := local.New(local.Config{Root: s.root, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	var driver drivers.Provisioner = prov
	switch {
	case o.remote != nil:
		driver = o.remote.driver
	case o.wrapDriver != nil:
		driver = o.wrapDriver(prov)
	}
	deps := jobs.Deps{Store: store, Provisioner: driver, Notifier: queue.NewNotifier(s.workerRedis), Logger: log}
	if s.provision, err = jobs.NewProvisionSite(deps); err != nil {
		t.Fatal(err)
	}
	if s.deprovision, err = jobs.NewDeprovisionSite(deps); err != nil {
		t.Fatal(err)
	}
	s.reconciler, err = jobs.NewReconciler(jobs.ReconcilerConfig{Store: store, Inspector: queue.NewInspector(s.workerRedis),
		Enqueuer: queue.NewEnqueuer(s.workerRedis), Logger: log, Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	if o.healthProbe == nil {
		if o.healthProbe, err = local.NewHealthProbe(local.HealthConfig{Root: s.root}); err != nil {
			t.Fatal(err)
		}
	}
	if s.healthCheck, err = jobs.NewCheckHealth(jobs.HealthCheckConfig{Store: store, Probe: o.healthProbe, Logger: log,
		Notifier: queue.NewNotifier(s.workerRedis), Hysteresis: 3, CheckTimeout: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if s.healthSweep, err = jobs.NewSweepHealth(jobs.HealthSweepConfig{Store: store, Enqueuer: queue.NewEnqueuer(s.workerRedis),
		Logger: log, Interval: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if s.meterSweep, err = jobs.NewMeterSweep(jobs.MeterSweepConfig{Store: store, Enqueuer: queue.NewEnqueuer(s.workerRedis),
		Logger: log}); err != nil {
		t.Fatal(err)
	}
	// The meter measures through the remote driver when there is one.
	var usage drivers.UsageProbe = prov
	if o.remote != nil {
		usage = o.remote.driver
	}
	if s.meter, err = jobs.NewMeterUsage(jobs.MeterUsageConfig{Store: store, Probe: usage, Logger: log, Now: o.meterNow}); err != nil {
		t.Fatal(err)
	}
	// The local driver's BackupSource (helper "stores"): backups run through
	// the same (possibly wrapped) driver value when it has one.
	src, ok := any(driver).(drivers.BackupSource)
	if !ok {
		src, ok = any(prov).(drivers.BackupSource)
	}
	if ok {
		if s.backups, err = jobs.NewBackups(jobs.BackupConfig{Store: store, Source: src, Backups: archives,
			Enqueuer: queue.NewEnqueuer(s.workerRedis), Notifier: queue.NewNotifier(s.workerRedis), Logger: log}); err != nil {
			t.Fatal(err)
		}
	}
	if !o.noWorker {
		s.startWorker()
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

// startWorker runs an asynq worker for the rest of the test.
func (s *stack) startWorker() {
	s.t.Helper()
	w, err := workers.New(workers.Config{
		Redis: s.workerRedis, Logger: testLogger(s.t), Provision: s.provision, Deprovision: s.deprovision,
		Reconciler: s.reconciler, Concurrency: 8, RetryBase: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond,
		HealthSweep: s.healthSweep, HealthCheck: s.healthCheck, MeterSweep: s.meterSweep, Meter: s.meter, Backups: s.backups,
		ShutdownTimeout: 5 * time.Second, PollInterval: 20 * time.Millisecond, RetryCheckInterval: 50 * time.Millisecond,
		Metrics: s.metrics,
	})
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	s.t.Cleanup(func() { cancel(); <-done })
}

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
	req, err := http.NewRequest(method, s.srv.URL+path, rd)
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
