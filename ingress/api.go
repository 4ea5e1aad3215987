package ingress

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/chomhq/chom/metrics"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// Enqueuer puts an accepted operation's task on the queue.
type Enqueuer interface {
	EnqueueOperation(ctx context.Context, op *models.Operation) error
}

// SiteCreator records a site and its provision operation: models.Store does it
// one transaction per request, models.SiteAcceptor group-commits concurrent ones.
type SiteCreator interface {
	CreateSite(ctx context.Context, p models.CreateSiteParams) (*models.Accepted, error)
}

// QueueInspector reports queue health for /health/detailed and removes the task
// of an operation cancelled before it started.
type QueueInspector interface {
	Ping(ctx context.Context) error
	Depths(ctx context.Context) ([]queue.QueueDepth, error)
	DeletePending(ctx context.Context, queueName, id string) error
}

// OperationWatcher wakes long polls when an operation changes, and tells the
// operation cache what to drop.
type OperationWatcher interface {
	Watch(opID string) (<-chan struct{}, func())
	OnChange(fn func(opID string))
}

// ReadRouter picks the store a read goes to: models.Reads sends it to a
// streaming replica when that has replayed every commit the primary had made
// when the read arrived, else to the primary.
type ReadRouter interface {
	Store(ctx context.Context) *models.Store
}

// OperationNotifier announces an operation changed by the API itself (a cancel) to
// every ingress process.
type OperationNotifier interface {
	OperationChanged(ctx context.Context, opID string)
}

// Config configures the API.
type Config struct {
	Store     *models.Store
	Enqueuer  Enqueuer
	Inspector QueueInspector
	Logger    *slog.Logger
	// Sites creates sites; defaults to Store (one transaction per request).
	Sites SiteCreator
	// Reads chooses the store of the reads callers repeat most: polls of an
	// operation (long polls included), listings of operations and sites, and
	// a site by ID. Optional: without it they read Store. Every other read
	// (tokens, quotas, backups, servers) and every write uses Store.
	Reads ReadRouter
	// Watcher is optional: without it long polls re-read the database every
	// PollInterval.
	Watcher OperationWatcher
	// Notifier announces the operations the API changes itself (cancels).
	// Optional.
	Notifier OperationNotifier
	// OperationCacheTTL is how long an unfinished operation read by a poller is
	// reused when no change is announced (finished ones are kept 10 minutes: they
	// never change). Default 250ms; negative disables the cache. It only takes
	// effect with a Watcher, which drops entries as workers announce changes.
	OperationCacheTTL time.Duration
	// OpsUI is the asynq web UI with every action, served at /ops/queues to
	// admin tokens. Optional: without it the ops UI is not served at all.
	OpsUI http.Handler
	// OpsUIReadOnly is the same UI built read-only (asynqmon's ReadOnly), served
	// to tokens with the ops scope but not admin. Optional: without it such
	// tokens get 403 and only admin tokens see the UI.
	OpsUIReadOnly http.Handler
	// TokenCacheTTL is how long a successful token lookup is reused. Default 30s;
	// negative disables the cache.
	TokenCacheTTL time.Duration
	// TokenDefaultTTL is the lifetime of a token created through the API
	// without ttl_seconds. Zero: such tokens never expire.
	TokenDefaultTTL time.Duration
	// EnqueueTimeout bounds the enqueue after the commit; on timeout the request
	// still succeeds and the reconciler enqueues later. Default 2s.
	EnqueueTimeout time.Duration
	// PollInterval is how often a long poll re-reads the operation when no
	// notification arrives. Default 1s.
	PollInterval time.Duration
	// RateLimit is the sustained requests per second allowed to one API token,
	// RateBurst the bucket size. Zero RateLimit disables the limit.
	RateLimit float64
	RateBurst int
	// AuthFailRate is the sustained failed authentications per second allowed
	// to one client address (the TCP peer's IP, an IPv6 one by its /64; never
	// X-Forwarded-For), AuthFailBurst the bucket size (default 5×AuthFailRate).
	// A request with a missing, malformed, unknown, revoked or expired token
	// takes one attempt; once an address has none left, its requests whose
	// token is not in the token cache are answered 429 with Retry-After before
	// any database lookup. Zero AuthFailRate disables the limit.
	AuthFailRate  float64
	AuthFailBurst int
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Metrics, when set, records every request (chom_http_*), the token and
	// operation caches and rate-limited requests, and is served unauthenticated
	// at GET /metrics (outside /api/v1, for Prometheus). New creates the
	// request counter of every route and status code the OpenAPI document lists
	// at zero (metrics.InitHTTP), so they are there before any traffic.
	// Optional: nil means no metrics and no /metrics route.
	Metrics *metrics.Metrics
	// Backups configures the backup routes (download links, archive streaming,
	// default retention). The zero value works: links signed with a random key.
	Backups BackupConfig
	// PublicURL is the API's external base URL, e.g. https://api.example.com:
	// what comes before /api/v1, with a path prefix when a proxy serves the
	// API under one (https://example.com/chom). The absolute URLs the API
	// hands out (backup download links) start with it. It must be an absolute
	// http or https URL without user info, query or fragment; a trailing
	// slash is ignored. Empty: the request's own scheme (https when it reached
	// this process over TLS, else http) and Host header. X-Forwarded-* headers
	// are never trusted, so behind a proxy or load balancer set PublicURL.
	PublicURL string
	// Certificates stores uploaded certificates, keys sealed with the
	// platform's key ring (CHOM_CERT_ENCRYPTION_KEYS). Optional: without it
	// the platform cannot keep a certificate key, and POST and PUT
	// /sites/{id}/certificate answer 409 https-not-configured (GET still
	// reads the records).
	Certificates *models.CertificateStore
}

// Validate reports every missing dependency.
func (c Config) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("ingress: Store is required"))
	}
	if c.Enqueuer == nil {
		errs = append(errs, errors.New("ingress: Enqueuer is required"))
	}
	if c.Inspector == nil {
		errs = append(errs, errors.New("ingress: Inspector is required"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("ingress: Logger is required"))
	}
	if c.PublicURL != "" {
		if _, err := ParsePublicURL(c.PublicURL); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ParsePublicURL checks a public base URL (Config.PublicURL, CHOM_PUBLIC_URL)
// and returns it without a trailing slash.
func ParsePublicURL(raw string) (string, error) {
	// The errors quote the URL redacted: one with user info may carry a password.
	shown := models.RedactURL(raw)
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text quotes the URL whole
		}
		return "", fmt.Errorf("ingress: PublicURL %q: %w", shown, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("ingress: PublicURL %q: must be an absolute http or https URL", shown)
	case u.Host == "" || u.Opaque != "":
		return "", fmt.Errorf("ingress: PublicURL %q: must name a host (https://api.example.com)", shown)
	case u.User != nil:
		return "", fmt.Errorf("ingress: PublicURL %q: must not carry user info", shown)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(raw, "#"):
		return "", fmt.Errorf("ingress: PublicURL %q: must not have a query or fragment", shown)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// API is CHOM's HTTP API.
type API struct {
	store          *models.Store
	reads          ReadRouter
	sites          SiteCreator
	enqueuer       Enqueuer
	inspector      QueueInspector
	watcher        OperationWatcher
	log            *slog.Logger
	tokens         *tokenCache
	enqueueTimeout time.Duration
	pollInterval   time.Duration
	now            func() time.Time
	limiter        *rateLimiter
	// failures limits failed authentications per client address; nil: off.
	failures *failLimiter
	ops      *opCache
	notifier OperationNotifier
	metrics  *metrics.Metrics
	opStats  *metrics.CacheStats
	engine   *gin.Engine
	// opsReadOnly is whether a read-only ops UI exists for ops-scope tokens.
	opsReadOnly bool
	// opsCSP is the ops UI's Content-Security-Policy (opsHeaders).
	opsCSP  string
	backups *backupRoutes
	// tokenTTL is Config.TokenDefaultTTL.
	tokenTTL time.Duration
	// publicURL is Config.PublicURL without a trailing slash; empty: links
	// start with the request's own scheme and host.
	publicURL string
	// certs is Config.Certificates; nil: HTTPS is not configured.
	certs *models.CertificateStore
}

// baseURL is what the absolute URLs handed to the client of r start with:
// Config.PublicURL, else r's scheme (https over TLS, else http) and Host (or,
// for a request without one, the local address it arrived on).
func (a *API) baseURL(r *http.Request) string {
	if a.publicURL != "" {
		return a.publicURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host := r.Host
	if host == "" {
		if addr, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			host = addr.String()
		}
	}
	return scheme + "://" + host
}

// Defaults of Config, used when a field is zero; the assembly's settings
// table (internal/stack) takes CHOM_TOKEN_CACHE_TTL's and
// CHOM_OPERATION_CACHE_TTL's defaults from these.
const (
	DefaultTokenCacheTTL     = 30 * time.Second
	DefaultOperationCacheTTL = 250 * time.Millisecond
)

// New builds the API and its routes.
func New(cfg Config) (*API, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.TokenCacheTTL == 0 {
		cfg.TokenCacheTTL = DefaultTokenCacheTTL
	}
	if cfg.EnqueueTimeout <= 0 {
		cfg.EnqueueTimeout = 2 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sites == nil {
		cfg.Sites = cfg.Store
	}
	a := &API{
		store: cfg.Store, reads: cfg.Reads, sites: cfg.Sites, enqueuer: cfg.Enqueuer, inspector: cfg.Inspector, watcher: cfg.Watcher,
		log: cfg.Logger, enqueueTimeout: cfg.EnqueueTimeout, pollInterval: cfg.PollInterval, now: cfg.Now,
		tokens:  newTokenCache(cfg.Store, cfg.TokenCacheTTL, 100_000, cfg.Now),
		metrics: cfg.Metrics, opStats: cfg.Metrics.Cache("operation"),
	}
	a.tokens.stats = cfg.Metrics.Cache("token")
	a.tokens.log = cfg.Logger
	a.tokenTTL = cfg.TokenDefaultTTL
	if cfg.OperationCacheTTL == 0 {
		cfg.OperationCacheTTL = DefaultOperationCacheTTL
	}
	if cfg.Watcher != nil && cfg.OperationCacheTTL > 0 {
		a.ops = newOpCache(cfg.OperationCacheTTL, 100_000, cfg.Now)
		cfg.Watcher.OnChange(a.ops.forget)
	}
	a.notifier = cfg.Notifier
	a.certs = cfg.Certificates
	if cfg.RateLimit > 0 {
		if cfg.RateBurst <= 0 {
			cfg.RateBurst = int(math.Max(1, 2*cfg.RateLimit))
		}
		a.limiter = newRateLimiter(cfg.RateLimit, cfg.RateBurst, cfg.Now)
	}
	if cfg.AuthFailRate > 0 {
		if cfg.AuthFailBurst <= 0 {
			cfg.AuthFailBurst = int(math.Max(1, 5*cfg.AuthFailRate))
		}
		a.failures = newFailLimiter(cfg.AuthFailRate, cfg.AuthFailBurst, 100_000, cfg.Now)
	}
	a.opsReadOnly = cfg.OpsUIReadOnly != nil
	var err error
	if cfg.PublicURL != "" {
		if a.publicURL, err = ParsePublicURL(cfg.PublicURL); err != nil {
			return nil, err
		}
	}
	if a.backups, err = newBackupRoutes(cfg.Backups); err != nil {
		return nil, err
	}
	if cfg.OpsUI != nil {
		a.opsCSP = opsContentSecurityPolicy(cfg.OpsUI, cfg.OpsUIReadOnly)
	}
	a.engine = a.routes(cfg.OpsUI, cfg.OpsUIReadOnly)
	if cfg.Metrics != nil {
		documented, err := documentedRoutes(a.engine.Routes())
		if err != nil {
			return nil, err
		}
		cfg.Metrics.InitHTTP(documented)
	}
	return a, nil
}

// reader returns the store a read-your-writes read arriving now uses (see
// Config.Reads).
func (a *API) reader(ctx context.Context) *models.Store {
	if a.reads == nil {
		return a.store
	}
	return a.reads.Store(ctx)
}

// Handler returns the HTTP handler of the whole API.
func (a *API) Handler() http.Handler { return a.engine }

// Routes lists every registered method and path, for tests that must cover each.
func (a *API) Routes() []gin.RouteInfo { return a.engine.Routes() }

func (a *API) routes(opsUI, opsUIReadOnly http.Handler) *gin.Engine {
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.ContextWithFallback = true
	if a.metrics != nil {
		r.Use(a.observe)
		r.GET(MetricsPath, gin.WrapH(a.metrics.Handler()))
	}
	r.Use(a.requestID, a.recover, a.accessLog)
	r.NoRoute(func(c *gin.Context) { a.fail(c, errRouteMissing) })
	r.NoMethod(func(c *gin.Context) { a.fail(c, errMethod) })

	v1 := r.Group("/api/v1")
	v1.GET("/health", a.health)
	v1.GET("/health/detailed", a.healthDetailed)
	v1.GET("/openapi.json", a.openAPI)

	read := v1.Group("", a.requireScope(models.ScopeRead), a.rateLimit)
	write := v1.Group("", a.requireScope(models.ScopeWrite), a.rateLimit)
	admin := v1.Group("", a.requireScope(models.ScopeAdmin), a.rateLimit)

	write.POST("/sites", a.createSite)
	read.GET("/sites", a.listSites)
	read.GET("/sites/:id", a.getSite)
	write.DELETE("/sites/:id", a.deleteSite)
	read.GET("/sites/:id/verification", a.getVerification)
	write.POST("/sites/:id/verification", a.startVerification)
	read.GET("/sites/:id/certificate", a.getCertificate)
	write.POST("/sites/:id/certificate", a.issueCertificate)
	write.PUT("/sites/:id/certificate", a.uploadCertificate)

	read.GET("/operations", a.listOperations)
	read.GET("/operations/:id", a.getOperation)
	write.POST("/operations/:id/cancel", a.cancelOperation)

	read.GET("/usage", a.listUsage)

	write.POST("/sites/:id/backups", a.createBackup)
	read.GET("/sites/:id/backups", a.listBackups)
	write.PUT("/sites/:id/backup-schedule", a.putBackupSchedule)
	read.GET("/sites/:id/backup-schedule", a.getBackupSchedule)
	write.DELETE("/sites/:id/backup-schedule", a.deleteBackupSchedule)
	read.GET("/backups/:id", a.getBackup)
	write.DELETE("/backups/:id", a.deleteBackup)
	write.POST("/backups/:id/restore", a.restoreBackup)
	read.GET("/backups/:id/download", a.backupDownload)
	// The signed link is the credential: no bearer token.
	v1.GET("/backups/:id/archive", a.backupArchive)

	admin.POST("/vps", a.registerVPS)
	admin.GET("/vps", a.listVPS)
	admin.GET("/vps/:id", a.getVPS)
	admin.POST("/vps/:id/health-check", a.checkVPSHealth)
	admin.PUT("/vps/:id/host-key", a.pinVPSHostKey)
	a.tokenRoutes(admin)
	a.quotaRoutes(admin)

	if opsUI != nil {
		// The cross-site check runs after opsAuth, so an ops-scope token's
		// change is refused as read-only whatever its origin, and an admin's
		// only when it is cross-site.
		ops := r.Group(queue.OpsUIPath, a.opsHeaders, a.opsAuth, a.opsCrossSite)
		h := a.opsUI(opsUI, opsUIReadOnly)
		ops.Any("", h)
		ops.Any("/*path", h)
	}
	return r
}

const ctxOpsFull = "chom.ops_full"

// opsUI serves the full UI to a request opsAuth marked as admin, and the
// read-only one to the others (ops tokens).
func (a *API) opsUI(full, readOnly http.Handler) gin.HandlerFunc {
	return func(c *gin.Context) {
		if c.GetBool(ctxOpsFull) {
			full.ServeHTTP(c.Writer, c.Request)
			return
		}
		readOnly.ServeHTTP(c.Writer, c.Request)
	}
}

// opsAuth guards the asynq web UI. The credential is an API token, as a Bearer
// token or as the password of HTTP Basic auth (so a browser can log in):
//   - none, malformed, unknown, revoked or expired: 401 with a Basic challenge
//     that makes the browser ask;
//   - a token with neither the ops nor the admin scope: 403 problem+json;
//   - admin: the full UI (pause queues, delete, run, archive tasks);
//   - ops (an operator): the read-only UI, and any request other than GET or
//     HEAD is refused here with 403 before it reaches asynqmon, whose ReadOnly
//     mode also refuses mutating API calls (405): two locks, one per layer.
//
// A failed token lookup other than "no such token" (the database is down) is
// the API's usual 503, not a 401 that would make the browser ask again.
func (a *API) opsAuth(c *gin.Context) {
	p, err := a.authenticate(c)
	if errors.Is(err, errUnauthorized) {
		// Not writeProblem: its challenge is Bearer, and a browser only asks for
		// a password after a Basic one.
		c.Header("WWW-Authenticate", `Basic realm="chom-ops", charset="UTF-8"`)
		c.Header("Cache-Control", "no-store")
		c.Header("Content-Type", "application/problem+json")
		c.AbortWithStatusJSON(http.StatusUnauthorized, Problem{Type: problemAuth, Title: "Unauthorized",
			Status: http.StatusUnauthorized, Detail: "an API token with the ops or admin scope is required (as the Basic auth password or a Bearer token)",
			Instance: c.Request.URL.Path, RequestID: c.GetString(ctxRequestID)})
		return
	}
	if err != nil {
		a.fail(c, err)
		c.Abort()
		return
	}
	c.Set(ctxPrincipal, p)
	c.Header("Cache-Control", "no-store")
	full := models.ScopeAllows(p.Scopes, models.ScopeAdmin)
	switch {
	case full:
	case !models.ScopeAllows(p.Scopes, models.ScopeOps) || !a.opsReadOnly:
		a.metrics.AuthFailed(metrics.AuthScope)
		writeProblem(c, Problem{Type: problemForbidden, Title: "Forbidden", Status: http.StatusForbidden,
			Detail: "the ops UI needs a token with the ops scope (read-only) or the admin scope", Instance: c.Request.URL.Path})
		c.Abort()
		return
	case c.Request.Method != http.MethodGet && c.Request.Method != http.MethodHead:
		writeProblem(c, Problem{Type: problemForbidden, Title: "Forbidden", Status: http.StatusForbidden,
			Detail: "the ops scope is read-only: changing queues or tasks needs the admin scope", Instance: c.Request.URL.Path})
		c.Abort()
		return
	}
	c.Set(ctxOpsFull, full)
	c.Next()
}

const ctxRequestID = "chom.request_id"

// requestID takes a well-formed X-Request-ID from the caller or makes one, and
// echoes it on the response.
func (a *API) requestID(c *gin.Context) {
	id := c.GetHeader("X-Request-ID")
	if !wellFormedRequestID(id) {
		var b [12]byte
		_, _ = rand.Read(b[:])
		id = "req_" + hex.EncodeToString(b[:])
	}
	c.Set(ctxRequestID, id)
	c.Header("X-Request-ID", id)
	c.Next()
}

func wellFormedRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		ch := id[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_' || ch == '.') {
			return false
		}
	}
	return true
}

// recover turns a panic into a logged 500 problem.
func (a *API) recover(c *gin.Context) {
	defer func() {
		if r := recover(); r != nil {
			if r == http.ErrAbortHandler {
				panic(r)
			}
			a.log.Error("panic in handler", "request_id", c.GetString(ctxRequestID), "route", c.FullPath(), "panic", r)
			writeProblem(c, Problem{Type: problemInternal, Title: "Internal error", Status: http.StatusInternalServerError})
		}
	}()
	c.Next()
}

// accessLog logs every request at debug level and server errors at error level,
// with the request and tenant IDs.
func (a *API) accessLog(c *gin.Context) {
	start := time.Now()
	c.Next()
	status := c.Writer.Status()
	level := slog.LevelDebug
	if status >= 500 {
		level = slog.LevelError
	}
	if !a.log.Enabled(c.Request.Context(), level) {
		return
	}
	a.log.Log(c.Request.Context(), level, "http request",
		"request_id", c.GetString(ctxRequestID), "tenant_id", principal(c).TenantID,
		"method", c.Request.Method, "route", c.FullPath(), "status", status,
		"duration_ms", float64(time.Since(start).Microseconds())/1000)
}
