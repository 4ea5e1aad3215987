package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// DomainChecker proves control of a domain with a claim's token
// (domainverify.Checker): nil once proven, otherwise an error whose text says
// what was expected and what was found, safe to show the claim's tenant.
type DomainChecker interface {
	Check(ctx context.Context, domain, token string) error
}

// Defaults of VerifyDomainsConfig.
const (
	// DefaultVerifyTimeout is how long a verification keeps checking
	// (CHOM_DOMAIN_VERIFY_TIMEOUT's default).
	DefaultVerifyTimeout = 10 * time.Minute
	// DefaultVerifyBackoff is the first wait between two checks; each wait
	// doubles up to DefaultVerifyMaxBackoff: checks at about 0s, 5s, 15s,
	// 35s, 75s, then every 2 minutes — quick for a record published just
	// before asking, gentle on DNS servers for one that never comes.
	DefaultVerifyBackoff    = 5 * time.Second
	DefaultVerifyMaxBackoff = 2 * time.Minute
)

// CodeDomainNotVerified is the error code of a verification that failed.
const CodeDomainNotVerified = "domain_not_verified"

// VerifyDomainsConfig configures the domain:verify handler.
type VerifyDomainsConfig struct {
	Store    *models.Store
	Checker  DomainChecker
	Enqueuer OperationEnqueuer
	Notifier Notifier
	Logger   *slog.Logger
	// Timeout is how long a verification keeps checking, from its first
	// start (across task attempts). Default DefaultVerifyTimeout.
	Timeout time.Duration
	// Backoff and MaxBackoff space the checks (defaults above).
	Backoff, MaxBackoff time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// VerifyDomains handles domain:verify: it checks every unproven domain of a
// site until all are proven or the timeout passes. Proven, it records the
// proof (models.Store.ProveClaims: other tenants' open claims released, the
// site's held provision released) and enqueues what the proof made ready;
// after the timeout the operation fails with domain_not_verified, naming
// each domain with what was expected and what was found.
type VerifyDomains struct{ cfg VerifyDomainsConfig }

// NewVerifyDomains validates cfg and returns the handler.
func NewVerifyDomains(cfg VerifyDomainsConfig) (*VerifyDomains, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("jobs: VerifyDomains Store is required"))
	}
	if cfg.Checker == nil {
		errs = append(errs, errors.New("jobs: VerifyDomains Checker is required"))
	}
	if cfg.Enqueuer == nil {
		errs = append(errs, errors.New("jobs: VerifyDomains Enqueuer is required"))
	}
	if cfg.Notifier == nil {
		errs = append(errs, errors.New("jobs: VerifyDomains Notifier is required"))
	}
	if cfg.Logger == nil {
		errs = append(errs, errors.New("jobs: VerifyDomains Logger is required"))
	}
	if cfg.Timeout < 0 || cfg.Backoff < 0 || cfg.MaxBackoff < 0 {
		errs = append(errs, errors.New("jobs: VerifyDomains durations must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultVerifyTimeout
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = DefaultVerifyBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultVerifyMaxBackoff
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &VerifyDomains{cfg: cfg}, nil
}

// Routes is domain:verify.
func (h *VerifyDomains) Routes() []Route { return []Route{{queue.TypeDomainVerify, h}} }

// attemptMargin is how long before its task's deadline an attempt stops
// checking, to leave time to return cleanly; the next attempt carries on.
const attemptMargin = 10 * time.Second

// ProcessTask runs one delivery of a domain:verify task.
func (h *VerifyDomains) ProcessTask(ctx context.Context, t *asynq.Task) error {
	p, err := queue.DecodeOperationPayload(t.Payload())
	if err != nil {
		return err
	}
	log := h.cfg.Logger.With("operation_id", p.OperationID, "tenant_id", p.TenantID)
	op, err := beginOperation(ctx, h.cfg.Store, h.cfg.Notifier, log, p.OperationID)
	if op == nil || err != nil {
		return err
	}
	site, err := h.cfg.Store.SiteByID(ctx, op.TargetID)
	if err == nil && site.DeletedAt != nil {
		err = fmt.Errorf("site %s: %w", site.ID, models.ErrNotFound)
	}
	if err != nil {
		return h.finish(ctx, op, "target_missing", "the site no longer exists", err)
	}
	log = log.With("site_id", site.ID)
	if op.CancelRequestedAt != nil {
		_, err := h.cfg.Store.FinishOperation(ctx, op.ID, models.Outcome{Status: models.OpCancelled,
			ErrorCode: "cancelled", ErrorMessage: "cancelled at the caller's request"}, nil)
		h.cfg.Notifier.OperationChanged(ctx, op.ID)
		return err
	}
	claims, err := h.cfg.Store.SiteClaims(ctx, site.ID)
	if err != nil {
		return err
	}
	started := op.CreatedAt
	if op.StartedAt != nil {
		started = *op.StartedAt
	}
	deadline := started.Add(h.cfg.Timeout)
	wait := h.cfg.Backoff
	for {
		failures := h.check(ctx, claims)
		if len(failures) == 0 {
			done, err := h.prove(ctx, log, op, site, claims)
			if done || err != nil {
				return err
			}
			failures = []string{"a site of another account that used the domain is still busy; the proof is recorded once it has finished"}
		}
		if ctx.Err() != nil {
			return ctx.Err() // shutting down: the next attempt carries on
		}
		now := h.cfg.Now()
		if !now.Add(wait).Before(deadline) {
			msg := strings.Join(failures, "; ")
			log.InfoContext(ctx, "domain verification timed out", "error", msg)
			return h.finish(ctx, op, CodeDomainNotVerified, msg, nil)
		}
		if d, ok := ctx.Deadline(); ok && !now.Add(wait+attemptMargin).Before(d) {
			// This attempt's time is up, not the verification's.
			return fmt.Errorf("verification of site %s still waiting: %s", site.ID, strings.Join(failures, "; "))
		}
		log.DebugContext(ctx, "domains not verified yet", "retry_in", wait, "error", strings.Join(failures, "; "))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, h.cfg.MaxBackoff)
	}
}

// check checks every unproven claim and returns what failed, one sentence
// per domain.
func (h *VerifyDomains) check(ctx context.Context, claims []models.DomainClaim) []string {
	var failures []string
	for _, c := range claims {
		if c.State == models.ClaimProven {
			continue
		}
		if err := h.cfg.Checker.Check(ctx, c.Domain, c.Token); err != nil {
			failures = append(failures, err.Error())
		}
	}
	return failures
}

// prove records the proof and enqueues what it made ready. It returns false
// (and no error) when another tenant's site must finish an operation first.
func (h *VerifyDomains) prove(ctx context.Context, log *slog.Logger, op *models.Operation, site *models.Site, claims []models.DomainClaim) (bool, error) {
	domains := make([]string, 0, len(claims))
	for _, c := range claims {
		domains = append(domains, c.Domain)
	}
	res, err := h.cfg.Store.ProveClaims(ctx, op.ID, site.ID, domains)
	switch {
	case errors.Is(err, models.ErrProvenElsewhere):
		// Shown only to a tenant whose DNS or HTTP check passed: it controls
		// the domain now, yet another account proved it first.
		msg := fmt.Sprintf("%s is verified by another account, so it cannot be verified for this one while that account uses it; contact support if the domain is yours",
			provenDomain(err, domains))
		return true, h.finish(ctx, op, CodeDomainNotVerified, msg, nil)
	case errors.Is(err, models.ErrReleaseBusy):
		log.InfoContext(ctx, "proof waits for a released site to finish its operation", "error", err)
		return false, nil
	case errors.Is(err, models.ErrNotFound):
		return true, h.finish(ctx, op, "target_missing", "the site no longer exists", err)
	case err != nil:
		return true, err
	}
	h.cfg.Notifier.OperationChanged(ctx, op.ID)
	if !res.Finished {
		return true, nil
	}
	log.InfoContext(ctx, "domains verified", "domains", domains, "released_sites", res.Released)
	for _, next := range res.Enqueue {
		if err := h.cfg.Enqueuer.EnqueueOperation(ctx, next); err != nil {
			// The operation is committed: the reconciler enqueues it later.
			log.WarnContext(ctx, "enqueue after verification failed; the reconciler will retry",
				"next_operation_id", next.ID, "error", err)
		}
		h.cfg.Notifier.OperationChanged(ctx, next.ID)
	}
	return true, nil
}

// provenDomain picks the domain an ErrProvenElsewhere names ("prove <domain>: …").
func provenDomain(err error, domains []string) string {
	for _, d := range domains {
		if strings.Contains(err.Error(), "prove "+d+":") {
			return d
		}
	}
	return "the domain"
}

// finish ends the verification as failed with code and message; cause, when
// set, is logged.
func (h *VerifyDomains) finish(ctx context.Context, op *models.Operation, code, msg string, cause error) error {
	_, err := h.cfg.Store.FinishOperation(ctx, op.ID, models.Outcome{Status: models.OpFailed, ErrorCode: code, ErrorMessage: msg}, nil)
	h.cfg.Notifier.OperationChanged(ctx, op.ID)
	if cause != nil {
		h.cfg.Logger.InfoContext(ctx, "verification ended", "operation_id", op.ID, "code", code, "error", cause)
	}
	return err
}
