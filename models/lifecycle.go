package models

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/uptrace/bun"
)

// BeginProvision moves a pending site to provisioning. It is a no-op for a site in
// any other status, so a retried task can call it again.
func (s *Store) BeginProvision(ctx context.Context, siteID string) error {
	_, err := s.db.NewUpdate().Model((*Site)(nil)).
		Set("status = ?", SiteStatusProvisioning).Set("updated_at = ?", s.nowUTC()).
		Where("id = ? AND status = ?", siteID, SiteStatusPending).Exec(ctx)
	if err != nil {
		return fmt.Errorf("begin provision of site %s: %w", siteID, err)
	}
	return nil
}

// ProvisionStart is what StartProvision recorded for one delivery of a site
// provision, and what the job needs from the database to go on.
type ProvisionStart struct {
	// Operation is the operation, running, its attempt counted, its
	// progress at least the placement's and its server marked touched.
	Operation *Operation
	// Site is the site, provisioning, placed on VPS.
	Site *Site
	VPS  *VPSServer
	// TouchedBefore is whether an earlier delivery had already marked the
	// server touched (Operation.ServerTouchedAt was set before this one).
	TouchedBefore bool
}

// errStepByStep rolls back a StartProvision that met anything but the
// common case; the job then takes its step-by-step path.
var errStepByStep = errors.New("provision start needs the step-by-step path")

// StartProvision records, in one transaction, everything the first
// delivery of site provision opID needs before its driver call: the
// operation running with its attempt counted (StartOperation), the site
// provisioning (BeginProvision) and placed on a server (AssignVPS's choice
// and race-free slot), the operation's progress raised to progress
// (SetProgress) and its server marked touched (MarkServerTouched). One
// commit instead of five: on PostgreSQL one statement, one round trip
// (startProvisionPG); on SQLite a transaction that reads the operation,
// claims it, takes the server's slot and binds the site (placeSite).
//
// It covers the common case only, all or nothing: when the operation is not
// a pending or running provision, a cancel was asked, the site is not
// pending or provisioning and unplaced (a held one waits for domain
// verification; a placed one is a redelivery), or no server is free, it
// writes nothing and returns (nil, nil). The caller then runs those steps
// one by one, as before, and each handles its own case (a held provision is
// archived, a finished one left alone, a redelivery keeps its server, a full
// fleet is retried...).
func (s *Store) StartProvision(ctx context.Context, opID string, progress int) (*ProvisionStart, error) {
	if s.pg {
		out, err := startProvisionPG(ctx, s.db, s.db, s.startSQL(), opID, progress, s.nowUTC())
		if errors.Is(err, errStepByStep) {
			return nil, nil
		}
		return out, err
	}
	var out *ProvisionStart
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		out = nil
		now := s.nowUTC()
		op := new(Operation)
		if err := tx.NewSelect().Model(op).Where("id = ?", opID).Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return errStepByStep
			}
			return fmt.Errorf("start provision %s: %w", opID, err)
		}
		if op.Type != OpTypeSiteProvision || (op.Status != OpPending && op.Status != OpRunning) || op.CancelRequestedAt != nil {
			return errStepByStep
		}
		// The claim first: a cancel that commits meanwhile is refused by
		// the condition (CancelOperation then flags a running operation).
		res, err := tx.NewUpdate().Model((*Operation)(nil)).
			Set("status = ?", OpRunning).
			Set("attempts = attempts + 1").
			Set("started_at = COALESCE(started_at, ?)", now).
			Set("progress = CASE WHEN progress < ? THEN ? ELSE progress END", progress, progress).
			Set("server_touched_at = COALESCE(server_touched_at, ?)", now).
			Set("updated_at = ?", now).
			Where("id = ? AND status IN (?, ?) AND cancel_requested_at IS NULL", opID, OpPending, OpRunning).
			Exec(ctx)
		if err != nil {
			return fmt.Errorf("start provision %s: %w", opID, err)
		}
		if affected(res) != 1 {
			return errStepByStep
		}
		site, vps, err := placeSite(ctx, tx, op, now)
		if err != nil {
			return err
		}
		start := &ProvisionStart{Operation: op, Site: site, VPS: vps, TouchedBefore: op.ServerTouchedAt != nil}
		op.Status, op.Attempts, op.UpdatedAt = OpRunning, op.Attempts+1, now
		if op.StartedAt == nil {
			op.StartedAt = &now
		}
		op.Progress = max(op.Progress, progress)
		if op.ServerTouchedAt == nil {
			op.ServerTouchedAt = &now
		}
		out = start
		return nil
	})
	if errors.Is(err, errStepByStep) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// placeSite is AssignVPS's placement of op's site inside StartProvision's
// SQLite transaction, which also moves the site to provisioning and reads it
// back. One statement chooses the best server for the operation's tenant
// (the site's) and takes a slot on it; a second binds the site if it is
// pending or provisioning, unplaced and not deleted. Anything else is
// errStepByStep. (SQLite runs one writer at a time, so no placement waits
// for another; on PostgreSQL, startProvisionPG does the same in its one
// statement, skipping the servers other placements hold at that instant.)
func placeSite(ctx context.Context, tx bun.Tx, op *Operation, now time.Time) (*Site, *VPSServer, error) {
	best := candidateQuery(tx, op.TenantID).Column("id").Limit(1)
	v := new(VPSServer)
	err := tx.NewUpdate().Model(v).
		Set("site_count = site_count + 1").Set("updated_at = ?", now).
		Where("id = (?)", best).Where("status = ? AND site_count < site_capacity", VPSStatusActive).
		Returning("*").Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, errStepByStep
	}
	if err != nil {
		return nil, nil, fmt.Errorf("take a slot for site %s: %w", op.TargetID, err)
	}
	site := new(Site)
	err = tx.NewUpdate().Model(site).
		Set("vps_id = ?", v.ID).Set("status = ?", SiteStatusProvisioning).Set("updated_at = ?", now).
		Where("id = ? AND vps_id IS NULL AND deleted_at IS NULL AND status IN (?, ?)", op.TargetID, SiteStatusPending, SiteStatusProvisioning).
		Returning("*").Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, errStepByStep
	}
	if err != nil {
		return nil, nil, fmt.Errorf("bind site %s to vps %s: %w", op.TargetID, v.ID, err)
	}
	return site, v, nil
}

// ErrCancelRequested is returned by CompleteProvision (and
// CompleteProvisionAndIssue) when a cancel was asked before the success
// could commit: nothing was written, and the job undoes its work and
// finishes the operation cancelled. A cancel is thus honoured whenever it
// arrives before the success commits, even between the job's checks.
var ErrCancelRequested = errors.New("cancel requested")

// ProvisionedSite is what a driver reports about a provisioned site.
type ProvisionedSite struct {
	DocumentRoot string
	SystemUser   string
}

// CompleteProvision ends a provision operation successfully: the site becomes
// active, the operation succeeds with result, and events are written, atomically.
// It returns false, writing nothing, when the operation had already finished,
// and an error wrapping ErrCancelRequested, writing nothing, when a cancel
// was asked meanwhile.
func (s *Store) CompleteProvision(ctx context.Context, opID, siteID string, ps ProvisionedSite, result any, events []OutboxEvent) (bool, error) {
	done, _, err := s.completeProvision(ctx, opID, siteID, ps, result, events, false)
	return done, err
}

// CompleteProvisionAndIssue is CompleteProvision on a platform that issues
// certificates: in the same transaction, an HTTPSAuto site without a
// certificate gets its first certificate.issue operation, returned for the
// caller to enqueue after the commit (nil when the site opted out or has a
// certificate; the reconciler enqueues it if the caller cannot).
func (s *Store) CompleteProvisionAndIssue(ctx context.Context, opID, siteID string, ps ProvisionedSite, result any, events []OutboxEvent) (bool, *Operation, error) {
	return s.completeProvision(ctx, opID, siteID, ps, result, events, true)
}

func (s *Store) completeProvision(ctx context.Context, opID, siteID string, ps ProvisionedSite, result any, events []OutboxEvent, issue bool) (bool, *Operation, error) {
	out, err := s.CompleteProvisions(ctx, []ProvisionSuccess{{OpID: opID, SiteID: siteID, Site: ps, Result: result, Events: events}}, issue)
	if err != nil {
		return false, nil, err
	}
	return out[0].Done, out[0].Issue, out[0].Err
}

// ProvisionSuccess is one provision to complete with CompleteProvisions.
type ProvisionSuccess struct {
	OpID, SiteID string
	Site         ProvisionedSite
	Result       any
	Events       []OutboxEvent
}

// ProvisionOutcome is what CompleteProvisions did with one ProvisionSuccess.
type ProvisionOutcome struct {
	// Done is true when it completed the operation; false, with Err nil,
	// when the operation had already finished (nothing written for it).
	Done bool
	// Issue is the certificate.issue operation recorded for the site (see
	// CompleteProvisionAndIssue), or nil.
	Issue *Operation
	// Err wraps ErrCancelRequested when a cancel was asked before the
	// success could commit (nothing written for it).
	Err error
}

// CompleteProvisions is CompleteProvision (issue false) or
// CompleteProvisionAndIssue (issue true) for several provisions in one
// transaction: each operation succeeds and its site becomes active, or is
// left as it is (already finished, or its cancel was asked: see
// ProvisionOutcome), and the events of those that succeed are written with
// one statement. The outcomes are in the order of items. An error means
// nothing was written for any of them: the caller may complete each alone.
// It is how concurrent provisions of a worker share one commit (see
// jobs.ProvisionSite).
//
// On PostgreSQL a batch of distinct operations takes a fixed number of
// round trips whatever its size (completeProvisionsPG); otherwise, and on
// SQLite, each item takes its own statements.
func (s *Store) CompleteProvisions(ctx context.Context, items []ProvisionSuccess, issue bool) ([]ProvisionOutcome, error) {
	if IsPostgres(s.db) && distinctOps(items) {
		return s.completeProvisionsPG(ctx, items, issue)
	}
	var out []ProvisionOutcome
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		now := s.nowUTC()
		out = make([]ProvisionOutcome, len(items))
		var events []OutboxEvent
		for i, it := range items {
			ok, err := finishProvisionOp(ctx, tx, it.OpID, it.Result, now)
			if err != nil {
				return err
			}
			if !ok {
				// Finished already, or a cancel was asked: which one?
				var op Operation
				if err := tx.NewSelect().Model(&op).Column("status", "cancel_requested_at").Where("id = ?", it.OpID).Scan(ctx); err != nil {
					return notFound(err, "operation", it.OpID)
				}
				if !op.Terminal() && op.CancelRequestedAt != nil {
					out[i].Err = fmt.Errorf("complete provision %s: %w", it.OpID, ErrCancelRequested)
				}
				continue
			}
			if _, err := tx.NewUpdate().Model((*Site)(nil)).
				Set("status = ?", SiteStatusActive).Set("document_root = ?", it.Site.DocumentRoot).
				Set("system_user = ?", it.Site.SystemUser).Set("operation_id = NULL").Set("updated_at = ?", now).
				Where("id = ?", it.SiteID).Exec(ctx); err != nil {
				return fmt.Errorf("activate site %s: %w", it.SiteID, err)
			}
			if issue {
				if out[i].Issue, err = autoIssue(ctx, tx, it.SiteID, now); err != nil {
					return err
				}
			}
			out[i].Done = true
			events = append(events, it.Events...)
		}
		return s.insertEvents(ctx, tx, events, now)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// distinctOps reports whether no operation appears twice in items (two
// deliveries of one task finishing together): completeProvisionsPG's
// statements update each row once, so such a batch takes the per-item path,
// where the second finds the operation finished.
func distinctOps(items []ProvisionSuccess) bool {
	seen := make(map[string]bool, len(items))
	for _, it := range items {
		if seen[it.OpID] {
			return false
		}
		seen[it.OpID] = true
	}
	return true
}

// completeProvisionsPG finishes the operations (those unfinished and not
// asked to cancel, as finishProvisionOp) and activates their sites in one
// statement whose rows arrive as arrays; completeProvisionsEventsPG does the
// same and writes the events of the operations it finished, and wakes the
// relay, in that same statement.
const (
	completeProvisionsCTE = `
WITH i AS (
	SELECT * FROM unnest(?::text[], ?::text[], ?::text[], ?::boolean[], ?::text[], ?::text[])
		AS i(op_id, site_id, result, has_result, document_root, system_user)
),
done AS (
	UPDATE operations AS o SET status = ?, progress = 100, finished_at = ?, updated_at = ?,
		result = CASE WHEN i.has_result THEN i.result ELSE o.result END
	FROM i WHERE o.id = i.op_id AND o.status IN (?, ?) AND o.cancel_requested_at IS NULL
	RETURNING o.id
),
act AS (
	UPDATE sites AS s SET status = ?, document_root = i.document_root, system_user = i.system_user,
		operation_id = NULL, updated_at = ?
	FROM i JOIN done ON done.id = i.op_id WHERE s.id = i.site_id
)`
	completeProvisionsPG       = completeProvisionsCTE + "\nSELECT id FROM done"
	completeProvisionsEventsPG = completeProvisionsCTE + `,
e AS (
	SELECT * FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::timestamptz[])
		WITH ORDINALITY AS e(op_id, event_id, tenant_id, topic, event_type, source, subject, data, occurred_at, ord)
),
ev AS (
	INSERT INTO outbox_events (event_id, tenant_id, topic, event_type, source, subject, data, occurred_at, created_at)
	SELECT e.event_id, e.tenant_id, e.topic, e.event_type, e.source, e.subject, e.data, e.occurred_at, ?
	FROM e JOIN done ON done.id = e.op_id ORDER BY e.ord
	ON CONFLICT DO NOTHING
)
SELECT id FROM done
UNION ALL
SELECT '' FROM (SELECT pg_notify('` + OutboxChannel + `', current_schema()) FROM (SELECT 1 FROM done LIMIT 1) AS first) AS n`
)

// The statements above as completeProvisionsPG sends them: with numbered
// parameters, past bun, so each connection prepares them once and
// PostgreSQL reuses their plans (planned with every batch, they cost 0.6 ms
// of PostgreSQL's CPU each; see queryStrings).
var (
	completeProvisionsNumbered       = numberParams(completeProvisionsPG)
	completeProvisionsEventsNumbered = numberParams(completeProvisionsEventsPG)
)

// completeProvisionsPG is CompleteProvisions for a batch of distinct
// operations on PostgreSQL. Without certificate issuance (issue false) it
// is one statement, so one round trip and one commit: the operations, the
// sites, the events of those finished (stable IDs: one row each however
// often written) and the relay's wake-up. With issue, each site that gets a
// certificate needs its reads and inserts (autoIssue), so it is a
// transaction: BEGIN, the operations and sites in one statement, the
// issuances, the events' INSERT and NOTIFY, COMMIT. Either way the read of
// why an item was left alone (rare) is a statement of its own, so in READ
// COMMITTED it sees a cancel that committed while the update waited for the
// row, as CompleteProvisions' per-item read does. Without issue, an
// operation that does not exist fails only its item (ErrNotFound in its
// outcome), and an error of that read comes after the commit: a caller that
// then completes each item alone finds those done finished already.
func (s *Store) completeProvisionsPG(ctx context.Context, items []ProvisionSuccess, issue bool) ([]ProvisionOutcome, error) {
	now := s.nowUTC()
	var ops, sites, results, roots, users []string
	var has []bool
	var ev [8][]string
	var occurred []time.Time
	for _, it := range items {
		r := ""
		if it.Result != nil {
			b, err := json.Marshal(it.Result)
			if err != nil {
				return nil, fmt.Errorf("finish operation %s: encode result: %w", it.OpID, err)
			}
			r = string(b)
		}
		ops, sites, results, roots, users = append(ops, it.OpID), append(sites, it.SiteID), append(results, r),
			append(roots, it.Site.DocumentRoot), append(users, it.Site.SystemUser)
		has = append(has, it.Result != nil)
		for _, e := range it.Events {
			for c, v := range []string{it.OpID, e.EventID, e.TenantID, e.Topic, e.Type, e.Source, e.Subject, e.Data} {
				ev[c] = append(ev[c], v)
			}
			at := e.OccurredAt
			if at.IsZero() {
				at = now
			}
			occurred = append(occurred, at)
		}
	}
	args := []any{ops, sites, results, has, roots, users, OpSucceeded, now, now, OpPending, OpRunning, SiteStatusActive, now}
	out := make([]ProvisionOutcome, len(items))
	done := map[string]bool{}
	// run finishes the operations and activates the sites (and, events,
	// writes the events): the one statement.
	run := func(ctx context.Context, db bun.IDB, events bool) error {
		q, a := completeProvisionsNumbered, args
		if events {
			q = completeProvisionsEventsNumbered
			a = slices.Clone(args)
			for _, c := range ev {
				a = append(a, c)
			}
			a = append(a, occurred, now)
		}
		ids, err := queryStrings(ctx, db, q, a)
		if err != nil {
			return fmt.Errorf("complete %d provisions: %w", len(items), err)
		}
		clear(done)
		for _, id := range ids {
			if id != "" {
				done[id] = true
			}
		}
		return nil
	}
	if !issue {
		if err := run(ctx, s.db, true); err != nil {
			return nil, err
		}
		if err := s.cancelsAsked(ctx, s.db, items, done, out); err != nil {
			return nil, err
		}
		for i, it := range items {
			out[i].Done = done[it.OpID]
		}
		return out, nil
	}
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		clear(out)
		if err := run(ctx, tx, false); err != nil {
			return err
		}
		if err := s.cancelsAsked(ctx, tx, items, done, out); err != nil {
			return err
		}
		for _, o := range out {
			if errors.Is(o.Err, ErrNotFound) {
				return o.Err // as the per-item path: the batch writes nothing
			}
		}
		var events []OutboxEvent
		for i, it := range items {
			if !done[it.OpID] {
				continue
			}
			var err error
			if out[i].Issue, err = autoIssue(ctx, tx, it.SiteID, now); err != nil {
				return err
			}
			out[i].Done = true
			events = append(events, it.Events...)
		}
		return s.insertEvents(ctx, tx, events, now)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// cancelsAsked reads why the items that are not done were left alone and
// sets ErrCancelRequested on those whose cancel was asked (the others had
// finished already), ErrNotFound on those whose operation does not exist.
func (s *Store) cancelsAsked(ctx context.Context, db bun.IDB, items []ProvisionSuccess, done map[string]bool, out []ProvisionOutcome) error {
	var left []string
	for _, it := range items {
		if !done[it.OpID] {
			left = append(left, it.OpID)
		}
	}
	if len(left) == 0 {
		return nil
	}
	var rows []Operation
	if err := db.NewSelect().Model(&rows).Column("id", "status", "cancel_requested_at").
		Where("id IN (?)", bun.In(left)).Scan(ctx); err != nil {
		return fmt.Errorf("read %d unfinished provisions: %w", len(left), err)
	}
	byID := make(map[string]*Operation, len(rows))
	for i := range rows {
		byID[rows[i].ID] = &rows[i]
	}
	for i, it := range items {
		op := byID[it.OpID]
		switch {
		case done[it.OpID]:
		case op == nil:
			out[i].Err = notFound(sql.ErrNoRows, "operation", it.OpID)
		case !op.Terminal() && op.CancelRequestedAt != nil:
			out[i].Err = fmt.Errorf("complete provision %s: %w", it.OpID, ErrCancelRequested)
		}
	}
	return nil
}

// finishProvisionOp is finishOp for a provision's success: the operation
// succeeds with result and progress 100 if it is unfinished and no cancel
// was asked for it. It returns false, changing nothing, otherwise. The
// condition is part of the UPDATE, so a cancel either committed before it
// (and stops it) or waits for its row lock and then finds the operation
// finished (CancelOperation answers that it has).
func finishProvisionOp(ctx context.Context, tx bun.Tx, id string, result any, now time.Time) (bool, error) {
	q := tx.NewUpdate().Model((*Operation)(nil)).
		Set("status = ?", OpSucceeded).Set("progress = 100").
		Set("finished_at = ?", now).Set("updated_at = ?", now).
		Where("id = ? AND status IN (?, ?) AND cancel_requested_at IS NULL", id, OpPending, OpRunning)
	if result != nil {
		b, err := json.Marshal(result)
		if err != nil {
			return false, fmt.Errorf("finish operation %s: encode result: %w", id, err)
		}
		q = q.Set("result = ?", string(b))
	}
	res, err := q.Exec(ctx)
	if err != nil {
		return false, fmt.Errorf("finish operation %s: %w", id, err)
	}
	return affected(res) == 1, nil
}

// AbandonProvision ends a provision that failed for good (out.Status OpFailed) or
// was cancelled (OpCancelled) after the job undid its work on the server: the
// server slot is freed, a failed site stays visible as failed, a cancelled one is
// deleted (freeing its domain). Returns false when the operation had already finished.
func (s *Store) AbandonProvision(ctx context.Context, opID, siteID string, out Outcome, events []OutboxEvent) (bool, error) {
	return s.finish(ctx, opID, out, events, func(ctx context.Context, tx bun.Tx, now time.Time) error {
		if err := releaseSlot(ctx, tx, siteID, now); err != nil {
			return err
		}
		q := tx.NewUpdate().Model((*Site)(nil)).Set("operation_id = NULL").Set("updated_at = ?", now).Where("id = ?", siteID)
		if out.Status == OpCancelled {
			q = q.Set("status = ?", SiteStatusDeleted).Set("deleted_at = ?", now)
			if err := deleteClaims(ctx, tx, siteID); err != nil {
				return err
			}
		} else {
			q = q.Set("status = ?", SiteStatusFailed)
		}
		if _, err := q.Exec(ctx); err != nil {
			return fmt.Errorf("mark site %s %s: %w", siteID, out.Status, err)
		}
		return nil
	})
}

// CompleteDeprovision ends a deprovision successfully: the site is deleted, its
// server slot freed, its domain claims dropped, events written; a site that
// waited for it to leave its server (domains.go) is released. Returns false
// when already finished.
func (s *Store) CompleteDeprovision(ctx context.Context, opID, siteID string, events []OutboxEvent) (bool, error) {
	return s.finish(ctx, opID, Outcome{Status: OpSucceeded, Result: map[string]string{"site_id": siteID}}, events,
		func(ctx context.Context, tx bun.Tx, now time.Time) error {
			if err := releaseSlot(ctx, tx, siteID, now); err != nil {
				return err
			}
			// A site that proved one of its domains and waited for this one
			// to leave its server goes ahead; the reconciler enqueues its
			// provision (pending, no longer held).
			if _, err := s.releaseWaiting(ctx, tx, siteID, now); err != nil {
				return err
			}
			if err := deleteClaims(ctx, tx, siteID); err != nil {
				return err
			}
			if err := deleteCertificateOf(ctx, tx, siteID); err != nil {
				return err
			}
			_, err := tx.NewUpdate().Model((*Site)(nil)).
				Set("status = ?", SiteStatusDeleted).Set("deleted_at = ?", now).
				Set("operation_id = NULL").Set("updated_at = ?", now).
				Where("id = ?", siteID).Exec(ctx)
			if err != nil {
				return fmt.Errorf("delete site %s: %w", siteID, err)
			}
			return nil
		})
}

// AbandonDeprovision ends a deprovision that failed for good or was cancelled. A
// cancelled one gives the site back its previous status; a failed one leaves the
// site failed (a new DELETE may be tried). Returns false when already finished.
func (s *Store) AbandonDeprovision(ctx context.Context, opID, siteID, previousStatus string, out Outcome, events []OutboxEvent) (bool, error) {
	return s.finish(ctx, opID, out, events, func(ctx context.Context, tx bun.Tx, now time.Time) error {
		status := SiteStatusFailed
		if out.Status == OpCancelled && previousStatus != "" {
			status = previousStatus
		}
		_, err := tx.NewUpdate().Model((*Site)(nil)).
			Set("status = ?", status).Set("operation_id = NULL").Set("updated_at = ?", now).
			Where("id = ?", siteID).Exec(ctx)
		if err != nil {
			return fmt.Errorf("restore site %s: %w", siteID, err)
		}
		return nil
	})
}

// CancelResult says what a cancel request did.
type CancelResult struct {
	Operation *Operation
	// Immediate is true when the operation had not started and is now cancelled;
	// false when it is running and its job will stop at its next step.
	Immediate bool
}

// CancelOperation cancels a tenant's operation, best effort. A pending operation is
// cancelled at once (with its target put back as it was); a running one is flagged
// and its job stops at its next step and undoes its work; a finished one is a
// ConflictError. Another tenant's operation is ErrNotFound.
func (s *Store) CancelOperation(ctx context.Context, tenantID, opID string) (*CancelResult, error) {
	op, err := s.GetOperation(ctx, tenantID, opID)
	if err != nil {
		return nil, err
	}
	if op.Terminal() {
		return nil, fmt.Errorf("cancel operation %s: %w", opID, &ConflictError{Reason: "the operation has already finished with status " + op.Status, OperationID: op.ID})
	}
	var payload SitePayload
	_ = json.Unmarshal([]byte(op.Payload), &payload)
	if op.Type == OpTypeSiteDeprovision && payload.Unserve {
		// Taking a site off its server after another account proved its
		// domain is not the tenant's to undo.
		return nil, fmt.Errorf("cancel operation %s: %w", opID, &ConflictError{
			Reason: "the site is being taken off its server until its domain is verified; this cannot be cancelled", OperationID: op.ID})
	}
	cancelled := Outcome{Status: OpCancelled, ErrorCode: "cancelled", ErrorMessage: "cancelled at the caller's request"}
	var done bool
	if op.Status == OpPending {
		switch op.Type {
		case OpTypeSiteProvision:
			done, err = s.abandonPendingProvision(ctx, op.ID, op.TargetID, cancelled)
		case OpTypeSiteDeprovision:
			done, err = s.abandonPendingDeprovision(ctx, op.ID, op.TargetID, payload.PreviousStatus, cancelled)
		case OpTypeCertificateIssue:
			var cp CertificatePayload
			_ = json.Unmarshal([]byte(op.Payload), &cp)
			done, err = s.abandonPendingIssue(ctx, op.ID, cp.SiteID, cancelled)
		case OpTypeBackupCreate, OpTypeBackupRestore, OpTypeBackupDelete:
			var bp BackupPayload
			_ = json.Unmarshal([]byte(op.Payload), &bp)
			done, err = s.abandonPendingBackupOp(ctx, op, bp, cancelled)
		default:
			done, err = s.finishIfPending(ctx, op.ID, cancelled)
		}
		if err != nil {
			return nil, err
		}
	}
	if !done {
		now := s.nowUTC()
		res, err := s.db.NewUpdate().Model((*Operation)(nil)).
			Set("cancel_requested_at = COALESCE(cancel_requested_at, ?)", now).Set("updated_at = ?", now).
			Where("id = ? AND tenant_id = ? AND status = ?", opID, tenantID, OpRunning).Exec(ctx)
		if err != nil {
			return nil, fmt.Errorf("request cancel of operation %s: %w", opID, err)
		}
		if affected(res) == 0 {
			// It finished between our read and this write.
			cur, err := s.GetOperation(ctx, tenantID, opID)
			if err != nil {
				return nil, err
			}
			if cur.Terminal() {
				return nil, fmt.Errorf("cancel operation %s: %w", opID, &ConflictError{Reason: "the operation has already finished with status " + cur.Status, OperationID: cur.ID})
			}
		}
	}
	cur, err := s.GetOperation(ctx, tenantID, opID)
	if err != nil {
		return nil, err
	}
	return &CancelResult{Operation: cur, Immediate: done}, nil
}

// abandonPendingProvision cancels a provision that has not started: nothing is on a
// server yet, so the site is simply deleted. Only a still-pending operation changes.
func (s *Store) abandonPendingProvision(ctx context.Context, opID, siteID string, out Outcome) (bool, error) {
	return s.finishPendingWith(ctx, opID, out, func(ctx context.Context, tx bun.Tx, now time.Time) error {
		if err := releaseSlot(ctx, tx, siteID, now); err != nil {
			return err
		}
		if err := deleteClaims(ctx, tx, siteID); err != nil {
			return err
		}
		_, err := tx.NewUpdate().Model((*Site)(nil)).
			Set("status = ?", SiteStatusDeleted).Set("deleted_at = ?", now).
			Set("operation_id = NULL").Set("updated_at = ?", now).Where("id = ?", siteID).Exec(ctx)
		return err
	})
}

func (s *Store) abandonPendingDeprovision(ctx context.Context, opID, siteID, previous string, out Outcome) (bool, error) {
	if previous == "" {
		previous = SiteStatusActive
	}
	return s.finishPendingWith(ctx, opID, out, func(ctx context.Context, tx bun.Tx, now time.Time) error {
		_, err := tx.NewUpdate().Model((*Site)(nil)).
			Set("status = ?", previous).Set("operation_id = NULL").Set("updated_at = ?", now).Where("id = ?", siteID).Exec(ctx)
		return err
	})
}

func (s *Store) finishIfPending(ctx context.Context, opID string, out Outcome) (bool, error) {
	return s.finishPendingWith(ctx, opID, out, nil)
}

// finishPendingWith finishes an operation only if it is still pending (a job that
// started in the meantime owns it), applying apply in the same transaction.
func (s *Store) finishPendingWith(ctx context.Context, opID string, out Outcome, apply func(ctx context.Context, tx bun.Tx, now time.Time) error) (bool, error) {
	now := s.nowUTC()
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewUpdate().Model((*Operation)(nil)).
			Set("status = ?", out.Status).Set("finished_at = ?", now).Set("updated_at = ?", now).
			Set("error_code = ?", out.ErrorCode).Set("error_message = ?", out.ErrorMessage).
			Where("id = ? AND status = ?", opID, OpPending).Exec(ctx)
		if err != nil {
			return fmt.Errorf("cancel pending operation %s: %w", opID, err)
		}
		if affected(res) == 0 {
			return errAlreadyFinished
		}
		if apply != nil {
			return apply(ctx, tx, now)
		}
		return nil
	})
	if err == errAlreadyFinished {
		return false, nil
	}
	return err == nil, err
}

// CancelRequested reports whether a cancel was asked for the operation.
func (s *Store) CancelRequested(ctx context.Context, opID string) (bool, error) {
	var at *time.Time
	err := s.db.NewSelect().Model((*Operation)(nil)).Column("cancel_requested_at").Where("id = ?", opID).Scan(ctx, &at)
	if err != nil {
		return false, notFound(err, "operation", opID)
	}
	return at != nil, nil
}

// MarkServerTouched records, before a driver call of operation opID that may
// reach its server, that the job may have changed something there (so a
// cancel or a failure must undo it on the server). A time already recorded is
// kept.
func (s *Store) MarkServerTouched(ctx context.Context, opID string) error {
	_, err := s.db.NewUpdate().Model((*Operation)(nil)).
		Set("server_touched_at = COALESCE(server_touched_at, ?)", s.nowUTC()).
		Where("id = ?", opID).Exec(ctx)
	if err != nil {
		return fmt.Errorf("mark operation %s as touching its server: %w", opID, err)
	}
	return nil
}

// UnmarkServerTouched takes back a MarkServerTouched of operation opID whose
// driver call was refused before it ran (drivers.ErrDeferred), when no earlier
// call had been recorded: the server is as it was before the operation.
func (s *Store) UnmarkServerTouched(ctx context.Context, opID string) error {
	_, err := s.db.NewUpdate().Model((*Operation)(nil)).
		Set("server_touched_at = NULL").
		Where("id = ?", opID).Exec(ctx)
	if err != nil {
		return fmt.Errorf("unmark operation %s as touching its server: %w", opID, err)
	}
	return nil
}
