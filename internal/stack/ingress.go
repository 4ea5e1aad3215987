package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// Ingress is the HTTP API role: the API with its long-poll watcher and its
// group-committing site acceptor, listening on CHOM_LISTEN.
type Ingress struct {
	API      *ingress.API
	watcher  *queue.Watcher
	backlog  *queue.Backlog // nil: failed enqueues are the reconciler's
	ln       net.Listener
	shutdown time.Duration
	log      *slog.Logger
}

// NewIngress builds the API over b and listens on c.Listen now, so a taken
// port fails the start. /metrics is served on the same listener.
func NewIngress(c Config, b *Backends, log *slog.Logger, h Hooks) (*Ingress, error) {
	watcher := queue.NewWatcher(b.Redis)
	acceptor, err := models.NewSiteAcceptor(models.SiteAcceptorConfig{Store: b.Store, Logger: log.With("component", "acceptor"),
		MaxBatch: c.AcceptBatch, Committers: c.AcceptCommitters})
	if err != nil {
		return nil, err
	}
	// Two asynqmon handlers, chosen per request by the token's scope: the full
	// UI for admin, the read-only one for ops.
	var opsUI, opsUIReadOnly http.Handler
	if c.OpsUI {
		opt, err := queue.RedisOptions(c.RedisURL)
		if err != nil {
			return nil, err
		}
		opsUI = queue.NewOpsUI(opt, false, c.PrometheusURL)
		opsUIReadOnly = queue.NewOpsUI(opt, true, c.PrometheusURL)
	}
	// An enqueue that fails (Redis away: a Sentinel failover, a restart) is
	// retried in the background for the reconciler's grace, the time the
	// reconciler leaves it to this enqueue; CHOM_RECONCILE_GRACE=0 leaves it
	// to the reconciler at once.
	var enqueuer ingress.Enqueuer = queue.NewEnqueuer(b.Redis)
	var backlog *queue.Backlog
	if c.ReconcileGrace > 0 {
		if backlog, err = queue.NewBacklog(queue.BacklogConfig{Redis: b.Redis, Logger: log.With("component", "enqueue_backlog"),
			RetryFor: c.ReconcileGrace}); err != nil {
			return nil, err
		}
		enqueuer = backlog
	}
	backups, err := backupAPIConfig(c)
	if err != nil {
		return nil, err
	}
	if c.BackupSigningKey == "" {
		log.Info("CHOM_BACKUP_SIGNING_KEY is not set: backup download links are signed with a random key and work only on this process")
	}
	var reads ingress.ReadRouter
	if b.ReadDB != nil {
		r, err := models.NewReads(models.ReadsConfig{Primary: b.Store, Replica: b.ReadDB, Logger: log.With("component", "reads")})
		if err != nil {
			return nil, fmt.Errorf("CHOM_DATABASE_READ_URL: %w", err)
		}
		reads = r
		log.Info("reads of operations and sites go to the read replica while it has replayed every prior commit",
			"read_url", models.RedactURL(c.DatabaseReadURL))
	}
	certificates, err := ingressCertificates(c, b.Store, log)
	if err != nil {
		return nil, err
	}
	gin.SetMode(gin.ReleaseMode)
	cfg := ingress.Config{
		Store:         b.Store,
		Reads:         reads,
		Sites:         acceptor,
		Enqueuer:      enqueuer,
		Inspector:     queue.NewInspector(b.Redis),
		Watcher:       watcher,
		Notifier:      queue.NewNotifier(b.Redis),
		Logger:        log,
		Metrics:       b.Metrics,
		OpsUI:         opsUI,
		OpsUIReadOnly: opsUIReadOnly,
		TokenCacheTTL: c.TokenCacheTTL,
		RateLimit:     c.RateLimit,
		RateBurst:     c.RateBurst,
		AuthFailRate:  c.AuthFailRate,
		AuthFailBurst: c.AuthFailBurst,
		// 0 from the environment means "off" to an operator; to the API it
		// means "default", so map it.
		OperationCacheTTL: offIsNegative(c.OpCacheTTL),
		Backups:           backups,
		PublicURL:         c.PublicURL,
		TokenDefaultTTL:   c.TokenDefaultTTL,
		Certificates:      certificates,
	}
	if h.Ingress != nil {
		h.Ingress(&cfg)
	}
	api, err := ingress.New(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", c.Listen, err)
	}
	return &Ingress{API: api, watcher: watcher, backlog: backlog, ln: ln, shutdown: c.ShutdownTimeout, log: log}, nil
}

// Addr is the address the API listens on.
func (i *Ingress) Addr() string { return i.ln.Addr().String() }

// URL is the API's base URL on this machine (http://host:port).
func (i *Ingress) URL() string { return "http://" + i.Addr() }

// Run serves the API until ctx ends, then drains it (CHOM_SHUTDOWN_TIMEOUT).
func (i *Ingress) Run(ctx context.Context) error {
	i.log.Info("ingress listening", "addr", i.Addr())
	return RunAll(ctx,
		func(ctx context.Context) error { i.watcher.Run(ctx); return nil },
		func(ctx context.Context) error {
			if i.backlog != nil {
				i.backlog.Run(ctx)
			}
			return nil
		},
		func(ctx context.Context) error { return ServeHTTP(ctx, i.ln, i.API.Handler(), i.shutdown, i.log) },
	)
}

// ingressCertificates is the certificate store the API seals uploaded keys
// with: nil without CHOM_CERT_ENCRYPTION_KEYS, and then the API refuses to
// issue or take certificates (409 https-not-configured) while still showing
// the records. The ingress needs the same ring as the workers, which open
// what it seals.
func ingressCertificates(c Config, store *models.Store, log *slog.Logger) (*models.CertificateStore, error) {
	certs, err := newCertificateStore(c, store)
	if errors.Is(err, ErrCertificatesOff) {
		log.Info("CHOM_CERT_ENCRYPTION_KEYS is not set: the API refuses certificate requests and uploads (409 https-not-configured)")
		return nil, nil
	}
	return certs, err
}

// offIsNegative maps a setting's 0 ("off" to an operator) to the negative
// value the components read as "disabled" (their 0 means "default").
func offIsNegative(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
