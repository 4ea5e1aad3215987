package models

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// Accept carries what every accepted mutation records besides its own rows: who
// asked, under which request, and the Idempotency-Key if one was sent.
type Accept struct {
	TenantID  string
	Actor     string // the token ID that made the request
	RequestID string
	// IdempotencyKey is optional. With it, RequestHash (a fingerprint of method,
	// path and canonical body) decides between a replay and a mismatch.
	IdempotencyKey string
	RequestHash    string
}

// Accepted is the result of accepting a mutation.
type Accepted struct {
	Operation *Operation
	// Replayed is true when an earlier request with the same Idempotency-Key and
	// body created the operation; nothing new was written.
	Replayed bool
	// Held is true for the provision of a site that waits for domain
	// verification (pending_verification): its task must not be enqueued;
	// the verification enqueues it once the domains are proven.
	Held bool
}

// CreateSiteParams describes a site to create. Values are already validated.
type CreateSiteParams struct {
	Accept
	Domain string
	// Aliases are the site's other host names, normalised, without
	// duplicates or Domain; each one is a domain claim like Domain.
	Aliases    []string
	SiteType   string
	PHPVersion string
	// HTTPS is the site's certificate mode (HTTPSAuto when empty); HSTS
	// turns on Strict-Transport-Security once it has a certificate.
	HTTPS string
	HSTS  bool
}

// claimKey records the idempotency key in tx. It returns false when the tenant
// already used the key (and the record has not expired): the caller must then roll
// back and replay. An expired record is taken over.
func (s *Store) claimKey(ctx context.Context, tx bun.Tx, a Accept, opID string, now time.Time) (bool, error) {
	if a.IdempotencyKey == "" {
		return true, nil
	}
	k := &IdempotencyKey{
		TenantID: a.TenantID, Key: a.IdempotencyKey, RequestHash: a.RequestHash,
		OperationID: opID, CreatedAt: now, ExpiresAt: now.Add(s.idempotencyTTL),
	}
	res, err := tx.NewInsert().Model(k).
		On("CONFLICT (tenant_id, idem_key) DO UPDATE").
		Set("request_hash = EXCLUDED.request_hash").
		Set("operation_id = EXCLUDED.operation_id").
		Set("created_at = EXCLUDED.created_at").
		Set("expires_at = EXCLUDED.expires_at").
		Where("?TableAlias.expires_at <= ?", now).
		Exec(ctx)
	if err != nil {
		return false, fmt.Errorf("claim idempotency key: %w", err)
	}
	return affected(res) == 1, nil
}

// errKeyTaken rolls back an accept whose idempotency key was used before.
var errKeyTaken = errors.New("idempotency key taken")

// replay answers a request whose idempotency key was used before: the same
// operation when the request is the same, ErrIdempotencyMismatch otherwise.
func (s *Store) replay(ctx context.Context, a Accept) (*Accepted, error) {
	k, err := s.idempotencyRecord(ctx, a)
	if err != nil {
		return nil, err
	}
	op, err := s.GetOperation(ctx, a.TenantID, k.OperationID)
	if err != nil {
		return nil, err
	}
	held, err := s.provisionHeld(ctx, op)
	if err != nil {
		return nil, err
	}
	return &Accepted{Operation: op, Replayed: true, Held: held}, nil
}

// idempotencyRecord returns the record of a's key, or ErrIdempotencyMismatch when
// it was made by a different request.
func (s *Store) idempotencyRecord(ctx context.Context, a Accept) (*IdempotencyKey, error) {
	k := new(IdempotencyKey)
	err := s.db.NewSelect().Model(k).Where("tenant_id = ? AND idem_key = ?", a.TenantID, a.IdempotencyKey).Scan(ctx)
	if err != nil {
		return nil, notFound(err, "idempotency key", a.IdempotencyKey)
	}
	if k.RequestHash != a.RequestHash {
		return nil, fmt.Errorf("idempotency key %q: %w", a.IdempotencyKey, ErrIdempotencyMismatch)
	}
	return k, nil
}

// newOperation builds a pending operation row.
func newOperation(a Accept, opType, targetType, targetID string, payload any, now time.Time) (*Operation, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encode %s payload: %w", opType, err)
	}
	return &Operation{
		ID: NewID(PrefixOperation), TenantID: a.TenantID, Type: opType, Status: OpPending,
		TargetType: targetType, TargetID: targetID, Payload: string(b), RequestID: a.RequestID,
		CreatedAt: now, UpdatedAt: now,
	}, nil
}

func newAudit(a Accept, action string, op *Operation, now time.Time) *AuditLog {
	return &AuditLog{
		TenantID: a.TenantID, Actor: a.Actor, Action: action, TargetType: op.TargetType,
		TargetID: op.TargetID, OperationID: &op.ID, RequestID: a.RequestID, CreatedAt: now,
	}
}

// mutateFunc locks and changes, inside tx, what one mutation touches and
// returns its operation, whose ID must be opID; the caller inserts it.
type mutateFunc func(ctx context.Context, tx bun.Tx, opID string, now time.Time) (*Operation, error)

// recordMutation runs one accepted mutation in its own transaction
// (recordMutationTx) and, when a's Idempotency-Key was taken already, replays
// the first answer instead.
func (s *Store) recordMutation(ctx context.Context, a Accept, action string, do mutateFunc) (*Accepted, error) {
	now := s.nowUTC()
	var op *Operation
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		var err error
		op, err = s.recordMutationTx(ctx, tx, a, action, now, do)
		return err
	})
	if errors.Is(err, errKeyTaken) {
		return s.replay(ctx, a)
	}
	if err != nil {
		return nil, err
	}
	return &Accepted{Operation: op}, nil
}

// recordMutationTx is the transaction body every mutation shares: it claims
// a's Idempotency-Key for a new operation ID first (so a retried request
// replays even after what it changed is gone; errKeyTaken when another holds
// it), lets do lock and change what the mutation touches, then inserts the
// operation and its audit row (action).
func (s *Store) recordMutationTx(ctx context.Context, tx bun.Tx, a Accept, action string, now time.Time, do mutateFunc) (*Operation, error) {
	opID := NewID(PrefixOperation)
	ok, err := s.claimKey(ctx, tx, a, opID, now)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errKeyTaken
	}
	op, err := do(ctx, tx, opID, now)
	if err != nil {
		return nil, err
	}
	if _, err := tx.NewInsert().Model(op).Exec(ctx); err != nil {
		return nil, fmt.Errorf("insert operation: %w", err)
	}
	if _, err := tx.NewInsert().Model(newAudit(a, action, op, now)).Exec(ctx); err != nil {
		return nil, fmt.Errorf("insert audit log: %w", err)
	}
	return op, nil
}

// SitePayload is the payload recorded on a site operation.
type SitePayload struct {
	SiteID         string   `json:"site_id"`
	Domain         string   `json:"domain"`
	Aliases        []string `json:"aliases,omitempty"`
	SiteType       string   `json:"site_type,omitempty"`
	PHPVersion     string   `json:"php_version,omitempty"`
	PreviousStatus string   `json:"previous_status,omitempty"`
	// Unserve marks the site.deprovision of a site whose domain another
	// tenant proved: it takes the site off its server and leaves it
	// pending_verification (Store.CompleteUnserve) instead of deleting it.
	Unserve bool `json:"unserve,omitempty"`
}

// CreateSite records a new site and its provision operation in one
// transaction, with its domain claims (domains.go), the idempotency key and an
// audit row. A domain or alias that a live site of the same tenant already
// claims is a ConflictError naming the field, a tenant at its site quota a
// QuotaError (counted under the tenant's lock); either writes nothing. A site
// with a claim to prove starts pending_verification and its operation is Held.
// The caller enqueues the operation's task after this returns, unless Held.
//
// Two tenants creating a site on the same fresh domain at the same moment
// both plan an open claim; the database lets one serve, and the other's
// transaction is run again, which then sees the winner's claim and holds its
// site for proof (at most claimRaceAttempts times: one retry is enough, as
// the winner has committed when the loser's insert fails).
func (s *Store) CreateSite(ctx context.Context, p CreateSiteParams) (*Accepted, error) {
	for attempt := 1; ; attempt++ {
		acc, err := s.createSite(ctx, p)
		if errors.Is(err, errClaimRace) && attempt < claimRaceAttempts {
			continue
		}
		return acc, err
	}
}

// claimRaceAttempts bounds CreateSite's runs when claims race.
const claimRaceAttempts = 3

// createSite is one run of CreateSite's transaction.
func (s *Store) createSite(ctx context.Context, p CreateSiteParams) (*Accepted, error) {
	now := s.nowUTC()
	item := newBatchItem(p, now)
	op, err := item.op, item.err
	if err != nil {
		return nil, err
	}
	site := &item.site
	err = s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		ok, err := s.claimKey(ctx, tx, p.Accept, op.ID, now)
		if err != nil {
			return err
		}
		if !ok {
			return errKeyTaken
		}
		items := []batchItem{item}
		admitted, err := s.admitSites(ctx, tx, items)
		if err != nil {
			return err
		}
		if admitted[0] != nil {
			return admitted[0]
		}
		if err := s.planClaims(ctx, tx, items, admitted, now); err != nil {
			return err
		}
		if admitted[0] != nil {
			return admitted[0]
		}
		item = items[0]
		site = &item.site
		res, err := tx.NewInsert().Model(site).On("CONFLICT DO NOTHING").Exec(ctx)
		if err != nil {
			return fmt.Errorf("insert site %s: %w", p.Domain, err)
		}
		if affected(res) == 0 {
			return fmt.Errorf("create site %s: %w", p.Domain, errDomainTaken())
		}
		if err := insertClaims(ctx, tx, item.claims); err != nil {
			return err
		}
		if _, err := tx.NewInsert().Model(op).Exec(ctx); err != nil {
			return fmt.Errorf("insert operation: %w", err)
		}
		if _, err := tx.NewInsert().Model(newAudit(p.Accept, "site.create", op, now)).Exec(ctx); err != nil {
			return fmt.Errorf("insert audit log: %w", err)
		}
		return nil
	})
	if errors.Is(err, errKeyTaken) {
		return s.replay(ctx, p.Accept)
	}
	if err != nil {
		return nil, err
	}
	return &Accepted{Operation: op, Held: item.held}, nil
}

// newBatchItem prepares the rows of one site creation (its error, if the
// operation cannot be encoded, in err).
func newBatchItem(p CreateSiteParams, now time.Time) batchItem {
	aliases := Aliases(p.Aliases)
	if aliases == nil {
		aliases = Aliases{}
	}
	site := Site{ID: NewID(PrefixSite), TenantID: p.TenantID, Domain: p.Domain, Aliases: aliases, SiteType: p.SiteType,
		PHPVersion: p.PHPVersion, Status: SiteStatusPending, HTTPS: p.HTTPS, HSTS: p.HSTS, CreatedAt: now, UpdatedAt: now}
	if site.HTTPS == "" {
		site.HTTPS = HTTPSAuto
	}
	op, err := newOperation(p.Accept, OpTypeSiteProvision, TargetSite, site.ID, SitePayload{SiteID: site.ID,
		Domain: p.Domain, Aliases: p.Aliases, SiteType: p.SiteType, PHPVersion: p.PHPVersion}, now)
	if err != nil {
		return batchItem{err: err}
	}
	site.OperationID = &op.ID
	return batchItem{p: p, site: site, op: op}
}

// DeleteSite records the deprovision of a tenant's site. A site with a mutation in
// flight is a ConflictError naming that operation, except the provision a
// pending_verification site holds (nothing ran), which is cancelled in the same
// transaction; a deleted or unknown site is ErrNotFound.
func (s *Store) DeleteSite(ctx context.Context, a Accept, siteID string) (*Accepted, error) {
	return s.recordMutation(ctx, a, "site.delete", func(ctx context.Context, tx bun.Tx, opID string, now time.Time) (*Operation, error) {
		site := new(Site)
		err := tx.NewSelect().Model(site).
			Where("id = ? AND tenant_id = ? AND deleted_at IS NULL", siteID, a.TenantID).Scan(ctx)
		if err != nil {
			return nil, notFound(err, "site", siteID)
		}
		op, err := newOperation(a, OpTypeSiteDeprovision, TargetSite, site.ID,
			SitePayload{SiteID: site.ID, Domain: site.Domain, PreviousStatus: site.Status}, now)
		if err != nil {
			return nil, err
		}
		op.ID = opID
		if site.Status == SiteStatusPendingVerification && site.OperationID != nil {
			held, err := s.finishOp(ctx, tx, *site.OperationID, Outcome{Status: OpCancelled, ErrorCode: "cancelled",
				ErrorMessage: "the site was deleted before its domain was verified"}, now)
			if err != nil {
				return nil, err
			}
			if held {
				site.OperationID = nil
				if _, err := tx.NewUpdate().Model((*Site)(nil)).Set("operation_id = NULL").
					Where("id = ? AND status = ?", siteID, SiteStatusPendingVerification).Exec(ctx); err != nil {
					return nil, fmt.Errorf("drop held provision of site %s: %w", siteID, err)
				}
			}
		}
		if site.OperationID != nil {
			return nil, fmt.Errorf("delete site %s: %w", siteID, &ConflictError{
				Reason: "the site has an operation in progress", OperationID: *site.OperationID})
		}
		res, err := tx.NewUpdate().Model((*Site)(nil)).
			Set("status = ?", SiteStatusDeprovisioning).Set("operation_id = ?", op.ID).Set("updated_at = ?", now).
			Where("id = ? AND tenant_id = ? AND operation_id IS NULL AND deleted_at IS NULL", siteID, a.TenantID).
			Exec(ctx)
		if err != nil {
			return nil, fmt.Errorf("mark site %s deprovisioning: %w", siteID, err)
		}
		if affected(res) == 0 {
			// Another mutation took the site between our read and this write.
			return nil, fmt.Errorf("delete site %s: %w", siteID, &ConflictError{Reason: "the site has an operation in progress"})
		}
		return op, nil
	})
}

// PruneIdempotencyKeys deletes keys that expired before now and returns how many.
func (s *Store) PruneIdempotencyKeys(ctx context.Context) (int64, error) {
	res, err := s.db.NewDelete().Model((*IdempotencyKey)(nil)).Where("expires_at <= ?", s.nowUTC()).Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("prune idempotency keys: %w", err)
	}
	return affected(res), nil
}
