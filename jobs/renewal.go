package jobs

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/certs"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// RenewalStore is what the renewal sweep needs of the database: the due list
// (models.CertificateStore) and the renewal records (models.Store).
type RenewalStore interface {
	DueForRenewal(ctx context.Context, now time.Time, limit int) ([]models.SiteCertificate, error)
	StartRenewal(ctx context.Context, siteID string) (*models.Operation, error)
	RenewalInfoDue(ctx context.Context, now time.Time, limit int) ([]models.RenewalInfoCheck, error)
	RecordRenewalInfo(ctx context.Context, siteID, serial string, renewAt *time.Time, nextCheck time.Time) (bool, error)
}

// RenewalAdvisor asks the CA for its ACME Renewal Information (RFC 9773) on
// a certificate it issued (acme.Issuer): the window to renew in, or nil when
// the CA offers none.
type RenewalAdvisor interface {
	RenewalWindow(ctx context.Context, leaf *x509.Certificate) (*certs.Window, error)
}

// Defaults of RenewSweepConfig.
const (
	// DefaultRenewBatch is the most renewals one sweep starts
	// (CHOM_CERT_RENEW_BATCH's default): at one sweep an hour, Let's
	// Encrypt's 300 new orders per account per 3 hours.
	DefaultRenewBatch = 100
	// DefaultARIInterval is how often the CA is asked about each certificate
	// (CHOM_CERT_ARI_INTERVAL's default): Let's Encrypt's own Retry-After.
	DefaultARIInterval = 6 * time.Hour
	// DefaultARIBatch is the most certificates one sweep asks the CA about
	// (CHOM_CERT_ARI_BATCH's default): 6,000 certificates asked every 6 h
	// at one sweep an hour.
	DefaultARIBatch = 1000
)

const (
	// ariParallel is how many questions to the CA are in flight at once.
	ariParallel = 4
	// maxARIRetryAfter caps the CA's Retry-After (RFC 9773 §4.3.3 suggests
	// treating more than a day as a day).
	maxARIRetryAfter = 24 * time.Hour
	// ariErrorLimit: after this many failed questions in one sweep the CA
	// is taken to be down, and the rest wait for the next sweep.
	ariErrorLimit = 10
)

// RenewSweepConfig configures the certificate:renew_sweep handler.
type RenewSweepConfig struct {
	Store    RenewalStore
	Enqueuer OperationEnqueuer
	// Advisor asks the CA for renewal windows; nil asks nothing (renewals
	// then follow CHOM's own times only).
	Advisor RenewalAdvisor
	Logger  *slog.Logger
	// Batch is the most renewals one sweep starts. Default DefaultRenewBatch.
	Batch int
	// ARIInterval is how long after asking the CA about a certificate it is
	// asked again (longer when the CA's Retry-After says so). Default
	// DefaultARIInterval; negative asks nothing.
	ARIInterval time.Duration
	// ARIBatch is the most certificates one sweep asks about. Default
	// DefaultARIBatch.
	ARIBatch int
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// RenewSweep handles certificate:renew_sweep. Each sweep first asks the CA
// for its renewal window on the certificates whose time to ask has come
// (ACME Renewal Information: a revoked certificate, or one the CA wants
// replaced early, becomes due at once), then starts a renewal
// (models.Store.StartRenewal) for each due certificate, the most overdue
// first, and enqueues it. The per-site jitter is in renew_after already: the
// sweep never sleeps. A certificate.issue operation does the renewal itself;
// its retries, backoff and the CA's rate-limit budget are that job's.
type RenewSweep struct {
	cfg RenewSweepConfig

	mu    sync.Mutex
	total RenewSweepReport
}

// RenewSweepReport counts what sweeps did.
type RenewSweepReport struct {
	// Due certificates listed; Started renewals; Skipped (nothing to start:
	// busy, inactive or deleted site, no longer due); Failed to start.
	Due, Started, Skipped, Failed int
	// EnqueueFailed renewals were recorded but not enqueued (the reconciler
	// enqueues them).
	EnqueueFailed int
	// ARIChecked certificates the CA was asked about, ARIMoved of them
	// made due earlier, ARIErrors questions that failed.
	ARIChecked, ARIMoved, ARIErrors int
}

func (r *RenewSweepReport) add(o RenewSweepReport) {
	r.Due += o.Due
	r.Started += o.Started
	r.Skipped += o.Skipped
	r.Failed += o.Failed
	r.EnqueueFailed += o.EnqueueFailed
	r.ARIChecked += o.ARIChecked
	r.ARIMoved += o.ARIMoved
	r.ARIErrors += o.ARIErrors
}

// NewRenewSweep validates cfg and returns the handler.
func NewRenewSweep(cfg RenewSweepConfig) (*RenewSweep, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("jobs: RenewSweep Store is required"))
	}
	if cfg.Enqueuer == nil {
		errs = append(errs, errors.New("jobs: RenewSweep Enqueuer is required"))
	}
	if cfg.Logger == nil {
		errs = append(errs, errors.New("jobs: RenewSweep Logger is required"))
	}
	if cfg.Batch < 0 || cfg.ARIBatch < 0 {
		errs = append(errs, errors.New("jobs: RenewSweep batches must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Batch == 0 {
		cfg.Batch = DefaultRenewBatch
	}
	if cfg.ARIBatch == 0 {
		cfg.ARIBatch = DefaultARIBatch
	}
	if cfg.ARIInterval == 0 {
		cfg.ARIInterval = DefaultARIInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &RenewSweep{cfg: cfg}, nil
}

// Routes is certificate:renew_sweep.
func (h *RenewSweep) Routes() []Route { return []Route{{queue.TypeCertificateRenewSweep, h}} }

// ProcessTask runs one sweep.
func (h *RenewSweep) ProcessTask(ctx context.Context, _ *asynq.Task) error {
	_, err := h.Sweep(ctx)
	return err
}

// Stats are the counts of every sweep this handler ran.
func (h *RenewSweep) Stats() RenewSweepReport {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.total
}

// Sweep asks the CA about the certificates whose time has come, then starts
// and enqueues the renewal of up to Batch due certificates, and logs one line
// with the counts. A site whose renewal cannot start is counted and the
// sweep goes on; the error returned joins those failures (the task is then
// retried: a renewal already started is not started twice). A failed
// question to the CA is logged, not returned: renewals then follow CHOM's
// own times.
func (h *RenewSweep) Sweep(ctx context.Context) (RenewSweepReport, error) {
	start := time.Now()
	var rep RenewSweepReport
	err := h.sweep(ctx, &rep)
	h.mu.Lock()
	h.total.add(rep)
	h.mu.Unlock()
	h.cfg.Logger.InfoContext(ctx, "certificate renewal sweep", "due", rep.Due, "started", rep.Started, "skipped", rep.Skipped,
		"failed", rep.Failed, "enqueue_failed", rep.EnqueueFailed, "ari_checked", rep.ARIChecked, "ari_moved", rep.ARIMoved,
		"ari_errors", rep.ARIErrors, "took", time.Since(start).Round(time.Millisecond).String(), "ok", err == nil)
	return rep, err
}

func (h *RenewSweep) sweep(ctx context.Context, rep *RenewSweepReport) error {
	h.askCA(ctx, rep)
	due, err := h.cfg.Store.DueForRenewal(ctx, h.cfg.Now(), h.cfg.Batch)
	if err != nil {
		return err
	}
	rep.Due = len(due)
	var errs []error
	for _, rec := range due {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		op, err := h.cfg.Store.StartRenewal(ctx, rec.SiteID)
		switch {
		case err != nil:
			rep.Failed++
			errs = append(errs, err)
			h.cfg.Logger.WarnContext(ctx, "certificate renewal not started", "site_id", rec.SiteID, "error", err)
		case op == nil:
			rep.Skipped++
		default:
			rep.Started++
			h.cfg.Logger.InfoContext(ctx, "certificate renewal started", "site_id", rec.SiteID, "operation_id", op.ID,
				"tenant_id", op.TenantID, "status", rec.Status, "not_after", rec.NotAfter, "renew_after", rec.RenewAfter,
				"last_error_code", rec.LastErrorCode)
			if err := h.cfg.Enqueuer.EnqueueOperation(ctx, op); err != nil {
				rep.EnqueueFailed++
				h.cfg.Logger.WarnContext(ctx, "certificate renewal recorded but not enqueued; the reconciler will enqueue it",
					"site_id", rec.SiteID, "operation_id", op.ID, "error", err)
			}
		}
	}
	return errors.Join(errs...)
}

// askCA asks the CA about up to ARIBatch certificates, ariParallel at a
// time, within half of what is left of the task's time (the renewals come
// after), and stops after ariErrorLimit failures (the CA is down: the rest
// wait for the next sweep).
func (h *RenewSweep) askCA(ctx context.Context, rep *RenewSweepReport) {
	if h.cfg.Advisor == nil || h.cfg.ARIInterval < 0 {
		return
	}
	now := h.cfg.Now()
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(dl)/2))
		defer cancel()
	}
	list, err := h.cfg.Store.RenewalInfoDue(ctx, now, h.cfg.ARIBatch)
	if err != nil {
		rep.ARIErrors++
		h.cfg.Logger.WarnContext(ctx, "renewal information not asked", "error", err)
		return
	}
	work := make(chan models.RenewalInfoCheck)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(ariParallel, len(list)) {
		wg.Go(func() {
			for c := range work {
				moved, err := h.askOne(ctx, c, now)
				mu.Lock()
				rep.ARIChecked++
				if moved {
					rep.ARIMoved++
				}
				if err != nil {
					rep.ARIErrors++
				}
				mu.Unlock()
				if err != nil {
					h.cfg.Logger.WarnContext(ctx, "renewal information not obtained", "site_id", c.SiteID, "serial", c.Serial, "error", err)
				}
			}
		})
	}
	for _, c := range list {
		mu.Lock()
		stop := rep.ARIErrors >= ariErrorLimit
		mu.Unlock()
		if stop || ctx.Err() != nil {
			break
		}
		work <- c
	}
	close(work)
	wg.Wait()
}

// askOne asks the CA about one certificate and records the answer: the time
// of the next question, and renew_after moved to the CA's window when that
// is earlier. A failed question is recorded too (asked again after
// ARIInterval), unless the sweep ran out of time.
func (h *RenewSweep) askOne(ctx context.Context, c models.RenewalInfoCheck, now time.Time) (bool, error) {
	next := now.Add(h.cfg.ARIInterval)
	chain, err := certs.ParseChain([]byte(c.ChainPEM))
	if err == nil && len(chain) == 0 {
		err = errors.New("no certificate in the chain")
	}
	if err != nil {
		if _, rerr := h.cfg.Store.RecordRenewalInfo(ctx, c.SiteID, c.Serial, nil, next); rerr != nil {
			return false, errors.Join(err, rerr)
		}
		return false, fmt.Errorf("certificate of %s: %w", c.SiteID, err)
	}
	w, err := h.cfg.Advisor.RenewalWindow(ctx, chain[0])
	if err != nil {
		if ctx.Err() == nil {
			if _, rerr := h.cfg.Store.RecordRenewalInfo(ctx, c.SiteID, c.Serial, nil, next); rerr != nil {
				return false, errors.Join(err, rerr)
			}
		}
		return false, fmt.Errorf("renewal information of %s: %w", c.SiteID, err)
	}
	if w == nil {
		_, err := h.cfg.Store.RecordRenewalInfo(ctx, c.SiteID, c.Serial, nil, next)
		return false, err
	}
	if w.RetryAfter > h.cfg.ARIInterval {
		next = now.Add(min(w.RetryAfter, maxARIRetryAfter))
	}
	at := certs.RenewAfter(c.SiteID, c.NotBefore, c.NotAfter, now, w)
	moved, err := h.cfg.Store.RecordRenewalInfo(ctx, c.SiteID, c.Serial, &at, next)
	if err != nil {
		return false, err
	}
	if moved {
		h.cfg.Logger.InfoContext(ctx, "the CA's renewal window moved a renewal earlier", "site_id", c.SiteID, "serial", c.Serial,
			"renew_after", at, "was", c.RenewAfter, "window_start", w.Start, "window_end", w.End, "explanation_url", w.ExplanationURL)
	}
	return moved, nil
}
