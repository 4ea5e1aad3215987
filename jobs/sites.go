package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// placementProgress is the progress recorded once the site has a server; the
// driver's steps fill the rest.
const placementProgress = 10

// ProvisionSite handles site:provision: place the site on a server, run the
// driver's steps with progress, and activate the site with its event.
// Concurrent successes in one process share a transaction (completer).
type ProvisionSite struct {
	d     Deps
	start *starter
	done  *completer
}

// NewProvisionSite returns the site:provision handler.
func NewProvisionSite(d Deps) (*ProvisionSite, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	start, err := newStarter(d.Store)
	if err != nil {
		return nil, err
	}
	done, err := newCompleter(d.Store, d.IssueCertificates)
	if err != nil {
		return nil, err
	}
	return &ProvisionSite{d: d, start: start, done: done}, nil
}

// ProcessTask runs one delivery of a site:provision task. The common case
// (the first delivery of a provision that is neither held nor cancelled, on
// a fleet with room) starts with one transaction (Store.StartProvision),
// shared with the worker's other starts (starter);
// anything else takes the step-by-step path, which handles each case.
func (h *ProvisionSite) ProcessTask(ctx context.Context, t *asynq.Task) error {
	p, err := queue.DecodeOperationPayload(t.Payload())
	if err != nil {
		return err
	}
	log := h.d.Logger.With("operation_id", p.OperationID, "tenant_id", p.TenantID)
	start, err := h.start.start(ctx, p.OperationID)
	if err != nil {
		return err
	}
	if start == nil {
		return h.stepByStep(ctx, log, p)
	}
	h.d.Notifier.OperationChanged(ctx, start.Operation.ID)
	return h.provision(ctx, log.With("vps_id", start.VPS.ID, "site_id", start.Site.ID),
		start.Operation, start.Site, start.VPS, start.TouchedBefore)
}

// stepByStep starts a delivery that StartProvision left alone, one step at a
// time: a held provision is archived, a finished one left alone, a
// cancelled one abandoned, a placement retried on contention or failed when
// the fleet is full; then the driver runs as on the common path.
func (h *ProvisionSite) stepByStep(ctx context.Context, log *slog.Logger, p queue.OperationPayload) error {
	held, err := h.d.Store.ProvisionHeld(ctx, p.OperationID)
	if err != nil {
		return err
	}
	if held {
		// Never enqueued on purpose (the ingress and the reconciler leave a
		// held provision alone): provisioning must not start before the
		// site's domains are proven. Archived without running; once the
		// proof releases it, the reconciler runs the archived task again.
		log.WarnContext(ctx, "provision held for domain verification; not started")
		return skipRetry(fmt.Errorf("provision %s: held for domain verification", p.OperationID))
	}
	op, err := beginOperation(ctx, h.d.Store, h.d.Notifier, log, p.OperationID)
	if op == nil || err != nil {
		return err
	}
	site, err := h.d.Store.SiteByID(ctx, op.TargetID)
	if err != nil {
		return h.fail(ctx, log, op, nil, nil, err)
	}
	if op.CancelRequestedAt != nil {
		return h.abandon(ctx, log, op, site, nil, errCancelled)
	}
	if err := h.d.Store.BeginProvision(ctx, site.ID); err != nil {
		return err
	}
	vps, err := h.d.Store.AssignVPS(ctx, site.ID)
	if err != nil {
		return h.fail(ctx, log, op, site, nil, err)
	}
	log = log.With("vps_id", vps.ID, "site_id", site.ID)
	if err := h.d.Store.SetProgress(ctx, op.ID, placementProgress); err != nil {
		return err
	}
	h.d.Notifier.OperationChanged(ctx, op.ID)
	// Until a call may have reached the server, a cancel has nothing to undo
	// there; the mark goes before the call (a worker killed during it leaves
	// it set) and is taken back when the call was refused before it ran.
	touched := op.ServerTouchedAt != nil
	if !touched {
		if err := h.d.Store.MarkServerTouched(ctx, op.ID); err != nil {
			return err
		}
		now := time.Now()
		op.ServerTouchedAt = &now
	}
	return h.provision(ctx, log, op, site, vps, touched)
}

// provision runs the driver for a started delivery (the operation running,
// the site placed on vps, the server marked touched; touchedBefore says
// whether an earlier delivery had marked it) and finishes the operation.
func (h *ProvisionSite) provision(ctx context.Context, log *slog.Logger, op *models.Operation, site *models.Site, vps *models.VPSServer, touchedBefore bool) error {
	spec := siteSpec(site, vps)
	rec := newProgressRecorder(ctx, h.d, log, op.ID)
	res, err := h.d.Provisioner.Provision(ctx, spec, rec.step)
	rec.stop()
	if err != nil {
		if errors.Is(err, drivers.ErrDeferred) && !touchedBefore {
			if uerr := h.d.Store.UnmarkServerTouched(ctx, op.ID); uerr != nil {
				return errors.Join(err, uerr)
			}
			op.ServerTouchedAt = nil // the server holds nothing of this operation
			return h.fail(ctx, log, op, site, nil, err)
		}
		return h.fail(ctx, log, op, site, &spec, err)
	}
	if vps.HostKey == "" && res.HostKey != "" {
		// Trust on first use: the first key a server shows is pinned, and every
		// later connection (provisioning, backups, health checks) must see it.
		if err := h.d.Store.PinHostKey(ctx, vps.ID, res.HostKey); err != nil {
			return err
		}
		log.InfoContext(ctx, "pinned the server's SSH host key on first use", "vps_id", vps.ID)
	}
	event, err := events.SiteOutbox(events.TypeSiteProvisioned, siteEvent(site, op, vps.ID, models.SiteStatusActive, "", ""))
	if err != nil {
		return skipRetry(err)
	}
	result := map[string]string{"site_id": site.ID, "vps_id": vps.ID, "domain": site.Domain, "document_root": res.DocumentRoot}
	ps := models.ProvisionedSite{DocumentRoot: res.DocumentRoot, SystemUser: res.SystemUser}
	out, err := h.done.complete(ctx, models.ProvisionSuccess{OpID: op.ID, SiteID: site.ID, Site: ps, Result: result,
		Events: []models.OutboxEvent{event}})
	done, issue := out.Done, out.Issue
	if errors.Is(err, models.ErrCancelRequested) {
		// Asked after the last check between steps: the site is on the
		// server, so it is undone there like any cancelled provision.
		return h.abandon(ctx, log, op, site, &spec, errCancelled)
	}
	if err != nil {
		return err
	}
	h.d.Notifier.OperationChanged(ctx, op.ID)
	if done {
		log.InfoContext(ctx, "site provisioned", "domain", site.Domain)
	}
	if issue != nil {
		log.InfoContext(ctx, "certificate issuance started", "certificate_operation_id", issue.ID)
		if h.d.Enqueuer == nil {
			return nil // the reconciler enqueues it after CHOM_RECONCILE_GRACE
		}
		if err := h.d.Enqueuer.EnqueueOperation(ctx, issue); err != nil {
			log.WarnContext(ctx, "enqueue of the certificate issuance failed; the reconciler will retry",
				"certificate_operation_id", issue.ID, "error", err)
		}
	}
	return nil
}

// fail decides what a failed attempt means: retry later, or (when the error is
// permanent, the operation was cancelled, or no retry is left) undo and finish.
func (h *ProvisionSite) fail(ctx context.Context, log *slog.Logger, op *models.Operation, site *models.Site, spec *drivers.SiteSpec, cause error) error {
	if errors.Is(cause, errCancelled) {
		return h.abandon(ctx, log, op, site, spec, cause)
	}
	if ctx.Err() != nil {
		return cause // shutting down or timed out: asynq retries it
	}
	if errors.Is(cause, drivers.ErrDeferred) {
		// Breaker open or limit reached: nothing ran on the server, and the
		// worker reschedules the task without counting a retry, even on the
		// last attempt, so nothing is undone or failed here. A cancel asked
		// meanwhile ends it now rather than when the server is back (the
		// worker logs the deferral itself, once).
		if cancelled, err := h.d.Store.CancelRequested(ctx, op.ID); err != nil || !cancelled {
			log.DebugContext(ctx, "provision deferred", "error", cause)
			return errors.Join(cause, err)
		}
		return h.abandon(ctx, log, op, site, spec, errCancelled)
	}
	if !permanent(cause) && !finalAttempt(ctx) {
		log.WarnContext(ctx, "provision attempt failed; will retry", "error", cause)
		return cause
	}
	if err := h.abandon(ctx, log, op, site, spec, cause); err != nil {
		return err
	}
	return skipRetry(cause)
}

// abandon undoes what the job did on the server (compensation) and finishes the
// operation as failed or cancelled, with the site's event.
func (h *ProvisionSite) abandon(ctx context.Context, log *slog.Logger, op *models.Operation, site *models.Site, spec *drivers.SiteSpec, cause error) error {
	out := models.Outcome{Status: models.OpFailed, ErrorCode: errorCode(cause), ErrorMessage: publicMessage(cause)}
	if errors.Is(cause, errCancelled) {
		out = models.Outcome{Status: models.OpCancelled, ErrorCode: "cancelled", ErrorMessage: "cancelled at the caller's request"}
	}
	if site == nil {
		_, err := h.d.Store.FinishOperation(ctx, op.ID, out, nil)
		h.d.Notifier.OperationChanged(ctx, op.ID)
		return err
	}
	if errors.Is(cause, errCancelled) && op.ServerTouchedAt == nil {
		// Every driver call of this operation was refused before it ran (an
		// open breaker, a full limit): the server holds nothing of it, so the
		// cancel needs no server, which may stay unreachable for minutes.
		spec = nil
	} else if spec == nil && site.VPSID != nil {
		vps, err := h.d.Store.GetVPS(ctx, *site.VPSID)
		if err != nil {
			return err
		}
		s := siteSpec(site, vps)
		spec = &s
	}
	if spec != nil {
		if err := h.d.Provisioner.Deprovision(ctx, *spec); err != nil && !errors.Is(err, drivers.ErrInvalidSpec) {
			// The server still holds part of the site: keep the operation open so
			// the retry (or the reconciler) undoes it, rather than leak it.
			return fmt.Errorf("undo provision of %s: %w", site.Domain, err)
		}
	}
	var evs []models.OutboxEvent
	if out.Status == models.OpFailed {
		vpsID := ""
		if site.VPSID != nil {
			vpsID = *site.VPSID
		}
		ev, err := events.SiteOutbox(events.TypeSiteProvisionFailed,
			siteEvent(site, op, vpsID, models.SiteStatusFailed, out.ErrorCode, out.ErrorMessage))
		if err != nil {
			return skipRetry(err)
		}
		evs = append(evs, ev)
	}
	done, err := h.d.Store.AbandonProvision(ctx, op.ID, site.ID, out, evs)
	if err != nil {
		return err
	}
	h.d.Notifier.OperationChanged(ctx, op.ID)
	if done {
		log.WarnContext(ctx, "provision abandoned", "status", out.Status, "error", cause)
	}
	return nil
}

// DeprovisionSite handles site:deprovision: remove the site from its server and
// mark it deleted with its event.
type DeprovisionSite struct{ d Deps }

// NewDeprovisionSite returns the site:deprovision handler.
func NewDeprovisionSite(d Deps) (*DeprovisionSite, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return &DeprovisionSite{d: d}, nil
}

// ProcessTask runs one delivery of a site:deprovision task. A cancel is honoured
// only before the server is touched: a half-removed site cannot be put back.
func (h *DeprovisionSite) ProcessTask(ctx context.Context, t *asynq.Task) error {
	p, err := queue.DecodeOperationPayload(t.Payload())
	if err != nil {
		return err
	}
	log := h.d.Logger.With("operation_id", p.OperationID, "tenant_id", p.TenantID)
	op, err := beginOperation(ctx, h.d.Store, h.d.Notifier, log, p.OperationID)
	if op == nil || err != nil {
		return err
	}
	var payload models.SitePayload
	_ = json.Unmarshal([]byte(op.Payload), &payload)
	site, err := h.d.Store.SiteByID(ctx, op.TargetID)
	if err != nil {
		_, ferr := h.d.Store.FinishOperation(ctx, op.ID, models.Outcome{Status: models.OpFailed, ErrorCode: "target_missing", ErrorMessage: "the site no longer exists"}, nil)
		h.d.Notifier.OperationChanged(ctx, op.ID)
		return errors.Join(skipRetry(err), ferr)
	}
	if op.CancelRequestedAt != nil && !payload.Unserve {
		_, err := h.d.Store.AbandonDeprovision(ctx, op.ID, site.ID, payload.PreviousStatus,
			models.Outcome{Status: models.OpCancelled, ErrorCode: "cancelled", ErrorMessage: "cancelled at the caller's request"}, nil)
		h.d.Notifier.OperationChanged(ctx, op.ID)
		return err
	}
	vpsID := ""
	if site.VPSID != nil {
		vpsID = *site.VPSID
		vps, err := h.d.Store.GetVPS(ctx, vpsID)
		if err != nil {
			return err
		}
		if err := h.d.Provisioner.Deprovision(ctx, siteSpec(site, vps)); err != nil {
			if ctx.Err() == nil && !errors.Is(err, drivers.ErrDeferred) && (permanent(err) || finalAttempt(ctx)) {
				_, ferr := h.d.Store.AbandonDeprovision(ctx, op.ID, site.ID, payload.PreviousStatus,
					models.Outcome{Status: models.OpFailed, ErrorCode: "deprovisioning_failed", ErrorMessage: publicMessage(err)}, nil)
				h.d.Notifier.OperationChanged(ctx, op.ID)
				return errors.Join(skipRetry(err), ferr)
			}
			return err
		}
	}
	if err := h.d.Store.SetProgress(ctx, op.ID, 90); err != nil {
		return err
	}
	if payload.Unserve {
		// Another account proved the domain: the site is off its server and
		// waits, pending_verification, for its tenant to prove it (never
		// deleted, so no site.deleted event).
		done, ready, err := h.d.Store.CompleteUnserve(ctx, op.ID, site.ID, nil)
		if err != nil {
			return err
		}
		h.d.Notifier.OperationChanged(ctx, op.ID)
		if done {
			log.InfoContext(ctx, "site taken off its server until its domain is verified", "site_id", site.ID, "domain", site.Domain)
		}
		for _, next := range ready { // the owner's provision, which waited for this
			if h.d.Enqueuer == nil {
				break // the reconciler enqueues it
			}
			if err := h.d.Enqueuer.EnqueueOperation(ctx, next); err != nil {
				log.WarnContext(ctx, "enqueue of a released provision failed; the reconciler will retry",
					"next_operation_id", next.ID, "error", err)
			}
		}
		return nil
	}
	event, err := events.SiteOutbox(events.TypeSiteDeleted, siteEvent(site, op, vpsID, models.SiteStatusDeleted, "", ""))
	if err != nil {
		return skipRetry(err)
	}
	done, err := h.d.Store.CompleteDeprovision(ctx, op.ID, site.ID, []models.OutboxEvent{event})
	if err != nil {
		return err
	}
	h.d.Notifier.OperationChanged(ctx, op.ID)
	if done {
		log.InfoContext(ctx, "site deprovisioned", "site_id", site.ID, "domain", site.Domain)
	}
	return nil
}

// siteSpec is what a driver needs to know about a site on a server: its
// aliases too, which the driver serves beside the domain.
func siteSpec(site *models.Site, vps *models.VPSServer) drivers.SiteSpec {
	return drivers.SiteSpec{
		ID: site.ID, TenantID: site.TenantID, Domain: site.Domain, Aliases: slices.Clone([]string(site.Aliases)),
		SiteType: site.SiteType, PHPVersion: site.PHPVersion,
		Server: drivers.Server{ID: vps.ID, Hostname: vps.Hostname, IPAddress: vps.IPAddress, SSHPort: vps.SSHPort, HostKey: vps.HostKey},
	}
}

// siteEvent builds the data of a site event. Its ID derives from the operation, and
// the transaction that writes it commits once, so a retry cannot write it twice.
func siteEvent(site *models.Site, op *models.Operation, vpsID, status, code, msg string) events.SiteEvent {
	return events.SiteEvent{
		SiteID: site.ID, TenantID: site.TenantID, Domain: site.Domain, SiteType: site.SiteType,
		PHPVersion: site.PHPVersion, VPSID: vpsID, OperationID: op.ID, Status: status,
		ErrorCode: code, Error: msg, OccurredAt: time.Now().UTC(),
	}
}

// publicMessage is the error text shown to API callers: the classified cause, not
// internals such as file paths or SQL.
func publicMessage(err error) string {
	switch {
	case errors.Is(err, models.ErrNoCapacity):
		return "no server has room for another site; try again later"
	case errors.Is(err, drivers.ErrInvalidSpec):
		return "the site's settings were rejected by the server driver"
	case errors.Is(err, models.ErrNotFound):
		return "the site no longer exists"
	default:
		return "provisioning failed on the server after all retries"
	}
}
