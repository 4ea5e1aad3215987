package jobs

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/certs"
	"github.com/chomhq/chom/certs/acme"
	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// CertificateIssuer issues certificates from a CA (certs/acme.Issuer).
type CertificateIssuer interface {
	Issue(ctx context.Context, r acme.Request) (*certs.Certificate, error)
	// RenewalWindow is the CA's ACME Renewal Information for leaf, or nil.
	RenewalWindow(ctx context.Context, leaf *x509.Certificate) (*certs.Window, error)
}

// Error codes of a certificate operation besides the issuer's
// (certs/acme.Code*).
const (
	// CodeDeployRejected: the server's nginx refused the TLS configuration
	// (nginx -t); the previous files are back.
	CodeDeployRejected = "deploy_rejected"
	// CodeDeployFailed: the certificate could not be installed on the
	// server after every retry.
	CodeDeployFailed = "deploy_failed"
)

// IssueCertificateConfig configures the certificate:issue handler.
type IssueCertificateConfig struct {
	Store    *models.Store
	Certs    *models.CertificateStore
	Issuer   CertificateIssuer
	Deployer drivers.TLSDeployer
	// Slots, when set, are the server's and the tenant's concurrency limits
	// (workers/limits' Guard). An order then holds a slot of the site's
	// server for its whole length, taken before the CA is asked, and a deploy
	// holds one while it runs: an issuance is work on the server like a
	// provision, and a full server defers it (drivers.ErrDeferred, no retry
	// spent) before any order exists at the CA, so a flood of issuances on one
	// server cannot spend the CA's order budget on orders it cannot answer.
	// Deployer must not take the same slots itself (the worker gives it the
	// server's breaker only): a slot held around the order and taken again by
	// each challenge put would refuse itself when the limit is full.
	Slots    drivers.Guard
	Notifier Notifier
	Logger   *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// IssueCertificate handles certificate:issue. For an ACME operation it
// orders a certificate for the site's domain and aliases over HTTP-01,
// answered by the site's own server (SitePresenter); for an upload it takes
// the certificate the ingress checked and staged. Either is kept, sealed,
// under the operation until it is deployed, so a retried deploy never orders
// again. The deploy holds the site's lock (a provision, restore or removal
// never runs beside it); nginx is checked before its reload, and a refused
// configuration leaves the previous one serving. Success replaces the
// site's certificate record and writes site.certificate_issued.v1; a final
// failure keeps what the site served, notes the error on the record, moves
// its next renewal try later, and writes site.certificate_failed.v1.
//
// Retries: a CA that is down, slow or rate-limiting, and a server that
// cannot be reached, are retried with the worker's backoff; a CA rate limit
// with a time, and CHOM's own budget when spent (acme.CodeDeferred), wait
// for that time without spending a retry, the operation running meanwhile
// with the reason on the site's certificate record. A refusal, a failed
// challenge and a rejected configuration fail at once: retrying unchanged
// cannot help (the renewal sweep tries again later, the tenant at will).
type IssueCertificate struct{ cfg IssueCertificateConfig }

// NewIssueCertificate validates cfg and returns the handler.
func NewIssueCertificate(cfg IssueCertificateConfig) (*IssueCertificate, error) {
	var errs []error
	for name, missing := range map[string]bool{"Store": cfg.Store == nil, "Certs": cfg.Certs == nil,
		"Issuer": cfg.Issuer == nil, "Deployer": cfg.Deployer == nil, "Notifier": cfg.Notifier == nil, "Logger": cfg.Logger == nil} {
		if missing {
			errs = append(errs, fmt.Errorf("jobs: IssueCertificate %s is required", name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &IssueCertificate{cfg: cfg}, nil
}

// Routes is certificate:issue.
func (h *IssueCertificate) Routes() []Route { return []Route{{queue.TypeCertificateIssue, h}} }

// Progress of a certificate operation.
const (
	certProgressStarted  = 10
	certProgressObtained = 60
)

// issueRun is one delivery of a certificate:issue task.
type issueRun struct {
	op      *models.Operation
	payload models.CertificatePayload
	site    *models.Site
	log     *slog.Logger
}

// ProcessTask runs one delivery of a certificate:issue task.
func (h *IssueCertificate) ProcessTask(ctx context.Context, t *asynq.Task) error {
	p, err := queue.DecodeOperationPayload(t.Payload())
	if err != nil {
		return err
	}
	log := h.cfg.Logger.With("operation_id", p.OperationID, "tenant_id", p.TenantID)
	op, err := beginOperation(ctx, h.cfg.Store, h.cfg.Notifier, log, p.OperationID)
	if op == nil || err != nil {
		return err
	}
	r := &issueRun{op: op, log: log}
	if err := json.Unmarshal([]byte(op.Payload), &r.payload); err != nil {
		return skipRetry(fmt.Errorf("certificate operation %s: payload: %w", op.ID, err))
	}
	r.log = log.With("site_id", r.payload.SiteID, "reason", r.payload.Reason)
	site, err := h.cfg.Store.SiteByID(ctx, r.payload.SiteID)
	if err == nil && (site.DeletedAt != nil || site.Status != models.SiteStatusActive || site.VPSID == nil) {
		err = fmt.Errorf("site %s is %s: %w", site.ID, site.Status, models.ErrNotFound)
	}
	if err != nil {
		if errors.Is(err, models.ErrNotFound) {
			r.site = &models.Site{ID: r.payload.SiteID, TenantID: op.TenantID, Domain: firstOf(r.payload.Domains)}
			return h.fail(ctx, r, "target_missing", "the site is no longer active on a server", err)
		}
		return err
	}
	r.site = site
	if op.CancelRequestedAt != nil {
		return h.fail(ctx, r, "cancelled", "cancelled at the caller's request", errCancelled)
	}
	vps, err := h.cfg.Store.GetVPS(ctx, *site.VPSID)
	if err != nil {
		return err
	}
	spec := siteSpec(site, vps)
	if err := h.cfg.Store.SetProgress(ctx, op.ID, certProgressStarted); err != nil {
		return err
	}
	h.cfg.Notifier.OperationChanged(ctx, op.ID)

	cert, err := h.obtain(ctx, r, spec)
	if err != nil {
		return h.failed(ctx, r, err)
	}
	if err := h.cfg.Store.SetProgress(ctx, op.ID, certProgressObtained); err != nil {
		return err
	}
	h.cfg.Notifier.OperationChanged(ctx, op.ID)
	if err := h.deploy(ctx, r, spec, cert); err != nil {
		return h.failed(ctx, r, err)
	}
	return h.complete(ctx, r, cert)
}

// obtain returns the operation's certificate: the one staged by an earlier
// attempt or the ingress (an upload), else a new one from the CA, staged
// before anything else happens to it.
func (h *IssueCertificate) obtain(ctx context.Context, r *issueRun, spec drivers.SiteSpec) (*certs.Certificate, error) {
	chain, key, err := h.cfg.Certs.Upload(ctx, r.op.ID)
	switch {
	case err == nil:
		cert, err := certs.Parse(chain, key)
		if err != nil {
			return nil, &acme.Error{Code: acme.CodeInvalidRequest, Message: "the staged certificate does not parse", Err: err}
		}
		return cert, nil
	case !errors.Is(err, models.ErrNotFound):
		return nil, err
	case r.payload.Reason == models.IssueUpload:
		return nil, &acme.Error{Code: acme.CodeInvalidRequest, Message: "the uploaded certificate is gone; upload it again"}
	}
	req := acme.Request{SiteID: r.site.ID, Domains: r.payload.Domains, Challenge: acme.HTTP01,
		HTTP01: SitePresenter(h.cfg.Deployer, spec)}
	for _, d := range req.Domains {
		if strings.HasPrefix(d, "*.") {
			req.Challenge, req.HTTP01 = acme.DNS01, nil
		}
	}
	if r.payload.Reason == models.IssueRenewal || r.payload.Reason == models.IssueRequested {
		req.Replaces = h.currentLeaf(ctx, r)
	}
	var cert *certs.Certificate
	err = h.slot(ctx, spec, func() (err error) {
		cert, err = h.cfg.Issuer.Issue(ctx, req)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := h.cfg.Certs.StageCertificate(ctx, r.op.ID, r.site.ID, cert.ChainPEM, cert.KeyPEM); err != nil {
		// Not staged: deploy it anyway; a retry would order again.
		r.log.WarnContext(ctx, "could not stage the issued certificate", "error", err)
	}
	return cert, nil
}

// currentLeaf is the site's ACME certificate that a new one replaces (ARI
// lets the CA exempt a renewal from some limits), or nil. Its key is not
// read.
func (h *IssueCertificate) currentLeaf(ctx context.Context, r *issueRun) *x509.Certificate {
	rec, err := h.cfg.Certs.CertificateRecord(ctx, r.site.ID)
	if err != nil || rec.Status != models.CertificateIssued || rec.Source != models.SourceACME || rec.ChainPEM == "" {
		return nil
	}
	chain, err := certs.ParseChain([]byte(rec.ChainPEM))
	if err != nil {
		r.log.WarnContext(ctx, "the current certificate does not parse; renewing without ARI", "error", err)
		return nil
	}
	return chain[0]
}

// slot runs call holding a slot of site's server (Slots), or directly
// without Slots.
func (h *IssueCertificate) slot(ctx context.Context, site drivers.SiteSpec, call func() error) error {
	if h.cfg.Slots == nil {
		return call()
	}
	return h.cfg.Slots(ctx, site, call)
}

// deploy installs cert on the site's server under the site's lock.
func (h *IssueCertificate) deploy(ctx context.Context, r *issueRun, spec drivers.SiteSpec, cert *certs.Certificate) error {
	if err := h.cfg.Store.LockSiteForDeploy(ctx, r.site.ID, r.op.ID); err != nil {
		if errors.Is(err, models.ErrSiteBusy) {
			return fmt.Errorf("deploy certificate: %w: %w", err, drivers.ErrDeferred)
		}
		return err
	}
	err := h.slot(ctx, spec, func() error {
		return h.cfg.Deployer.DeployCertificate(ctx, spec, drivers.TLSCertificate{ChainPEM: cert.ChainPEM, KeyPEM: cert.KeyPEM},
			drivers.TLSOptions{HSTS: r.site.HSTS})
	})
	if err != nil {
		// Released for the wait until the next attempt (a backup or a
		// removal may run meanwhile); FailIssue releases it too.
		if uerr := h.cfg.Store.UnlockSite(context.WithoutCancel(ctx), r.site.ID, r.op.ID); uerr != nil {
			err = errors.Join(err, uerr)
		}
		return fmt.Errorf("deploy certificate: %w", err)
	}
	return nil
}

// complete records the deployed certificate and finishes the operation.
func (h *IssueCertificate) complete(ctx context.Context, r *issueRun, cert *certs.Certificate) error {
	now := h.cfg.Now().UTC()
	source := models.SourceACME
	if r.payload.Reason == models.IssueUpload {
		source = models.SourceUpload
	}
	domains := orderDomains(r.payload.Domains, cert.Domains)
	rec := models.SiteCertificate{SiteID: r.site.ID, Status: models.CertificateIssued, Source: source,
		Issuer: cert.Issuer, Domains: domains, Serial: cert.Serial, NotBefore: &cert.NotBefore, NotAfter: &cert.NotAfter,
		ChainPEM: string(cert.ChainPEM), KeyPEM: cert.KeyPEM}
	if source == models.SourceACME {
		renew := certs.RenewAfter(r.site.ID, cert.NotBefore, cert.NotAfter, now, h.window(ctx, r, cert))
		rec.RenewAfter = &renew
	}
	e := h.event(r, now)
	e.Domains, e.Source, e.Issuer, e.Serial, e.NotBefore, e.NotAfter = domains, source, cert.Issuer, cert.Serial, cert.NotBefore, cert.NotAfter
	if rec.RenewAfter != nil {
		e.RenewAfter = *rec.RenewAfter
	}
	row, err := events.CertificateOutbox(events.TypeSiteCertificateIssued, e)
	if err != nil {
		return skipRetry(err)
	}
	result := map[string]any{"site_id": r.site.ID, "serial": cert.Serial, "domains": domains,
		"not_after": cert.NotAfter.UTC().Format(time.RFC3339), "source": source}
	done, err := h.cfg.Certs.CompleteIssue(ctx, r.op.ID, rec, result, []models.OutboxEvent{row})
	if err != nil {
		return err
	}
	h.cfg.Notifier.OperationChanged(ctx, r.op.ID)
	if done {
		r.log.InfoContext(ctx, "certificate deployed", "serial", cert.Serial, "not_after", cert.NotAfter, "source", source)
	}
	return nil
}

// window asks the CA for its renewal window (best effort: without one the
// renewal time is 30 days before expiry).
func (h *IssueCertificate) window(ctx context.Context, r *issueRun, cert *certs.Certificate) *certs.Window {
	leaf, err := cert.Leaf()
	if err != nil {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	w, err := h.cfg.Issuer.RenewalWindow(wctx, leaf)
	if err != nil {
		r.log.InfoContext(ctx, "no renewal information from the CA; renewing 30 days before expiry", "error", err)
		return nil
	}
	return w
}

// failed decides what a failed attempt means: wait (a deferral), retry, or
// finish as failed.
func (h *IssueCertificate) failed(ctx context.Context, r *issueRun, cause error) error {
	if ctx.Err() != nil {
		return cause // shutting down or timed out: asynq retries it
	}
	if errors.Is(cause, models.ErrNotFound) {
		return h.fail(ctx, r, "target_missing", "the site is no longer active on a server", cause)
	}
	code, msg, retry, until := classifyIssue(cause)
	switch {
	case !until.IsZero():
		// A time to wait for, given by the CA or by CHOM's budget: no retry
		// is spent, whatever the attempt.
		if err := h.cfg.Certs.NoteIssueError(ctx, r.site.ID, code, msg, time.Time{}); err != nil {
			return errors.Join(cause, err)
		}
		r.log.InfoContext(ctx, "certificate deferred", "code", code, "until", until)
		return &deferredUntil{at: until, err: cause}
	case errors.Is(cause, drivers.ErrDeferred):
		return cause // the server is being protected; the worker waits
	case retry && !finalAttempt(ctx):
		if err := h.cfg.Certs.NoteIssueError(ctx, r.site.ID, code, msg, time.Time{}); err != nil {
			return errors.Join(cause, err)
		}
		r.log.WarnContext(ctx, "certificate attempt failed; will retry", "code", code, "error", cause)
		return cause
	}
	return h.fail(ctx, r, code, msg, cause)
}

// fail finishes the operation as failed (or cancelled) with its event.
func (h *IssueCertificate) fail(ctx context.Context, r *issueRun, code, msg string, cause error) error {
	out := models.Outcome{Status: models.OpFailed, ErrorCode: code, ErrorMessage: msg}
	if errors.Is(cause, errCancelled) {
		out.Status = models.OpCancelled
	}
	now := h.cfg.Now().UTC()
	var rows []models.OutboxEvent
	if out.Status == models.OpFailed {
		// A cancel has no event: nothing changed that a consumer counts.
		e := h.event(r, now)
		e.ErrorCode, e.Error = code, msg
		row, err := events.CertificateOutbox(events.TypeSiteCertificateFailed, e)
		if err != nil {
			return skipRetry(err)
		}
		rows = append(rows, row)
	}
	if _, err := h.cfg.Certs.FailIssue(ctx, r.op.ID, r.site.ID, out, now.Add(renewalRetryAfter(code)), rows); err != nil {
		return err
	}
	h.cfg.Notifier.OperationChanged(ctx, r.op.ID)
	r.log.WarnContext(ctx, "certificate operation failed", "code", code, "error", cause)
	return skipRetry(fmt.Errorf("%s: %s: %w", code, msg, cause))
}

// event is the common part of a certificate event of r.
func (h *IssueCertificate) event(r *issueRun, now time.Time) events.CertificateEvent {
	domains := r.payload.Domains
	if len(domains) == 0 {
		domains = []string{r.site.Domain}
	}
	return events.CertificateEvent{SiteID: r.site.ID, TenantID: r.site.TenantID, Domain: r.site.Domain,
		OperationID: r.op.ID, Reason: r.payload.Reason, Domains: domains, OccurredAt: now}
}

// classifyIssue maps an attempt's error to the operation's code and
// message, whether retrying unchanged may help, and a time to wait for
// without spending a retry (zero when there is none).
func classifyIssue(err error) (code, msg string, retry bool, until time.Time) {
	if e := acme.AsError(err); e != nil {
		switch e.Code {
		case acme.CodeDeferred:
			return e.Code, e.Message, true, e.RetryAt
		case acme.CodeRateLimited:
			if !e.RetryAt.IsZero() {
				return e.Code, e.Message, true, e.RetryAt
			}
		}
		return e.Code, e.Message, e.Temporary, time.Time{}
	}
	switch {
	case errors.Is(err, drivers.ErrConfigRejected):
		return CodeDeployRejected, "the server's web server refused the HTTPS configuration; the previous configuration is still served", false, time.Time{}
	case errors.Is(err, drivers.ErrInvalidSpec):
		return CodeDeployRejected, "the server driver refused the certificate for this site", false, time.Time{}
	}
	return CodeDeployFailed, "the certificate could not be installed on the site's server", true, time.Time{}
}

// renewalRetryAfter is how long after a failed operation the renewal sweep
// tries again (the site's renew_after): soon for what passes by itself,
// later for what needs someone to act (DNS, a CA's refusal).
func renewalRetryAfter(code string) time.Duration {
	switch code {
	case acme.CodeCARefused, acme.CodeInvalidRequest, CodeDeployRejected:
		return 24 * time.Hour
	case acme.CodeChallengeFailed:
		return 6 * time.Hour
	default:
		return time.Hour
	}
}

// deferredUntil is a deferral with a time: the worker waits until at
// without spending a retry (it wraps drivers.ErrDeferred).
type deferredUntil struct {
	at  time.Time
	err error
}

func (d *deferredUntil) Error() string {
	return fmt.Sprintf("deferred until %s: %v", d.at.UTC().Format(time.RFC3339), d.err)
}

func (d *deferredUntil) Unwrap() []error { return []error{drivers.ErrDeferred, d.err} }

// RetryAt is when the task may run again.
func (d *deferredUntil) RetryAt() time.Time { return d.at }

// orderDomains lists a certificate's names the way the site does (its domain,
// then its aliases, as asked), then any other name it carries: a CA may
// order the names of a certificate as it likes.
func orderDomains(asked, names []string) []string {
	out := make([]string, 0, len(names))
	for _, d := range asked {
		if slices.Contains(names, d) {
			out = append(out, d)
		}
	}
	for _, d := range names {
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

func firstOf(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}
