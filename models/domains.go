package models

import (
	"context"
	"crypto/rand"
	"database/sql/driver"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/uptrace/bun"
)

// Domain claims. Every domain a site uses (its Domain and each of its Aliases)
// is a claim of the site's tenant on that domain. A claim is:
//
//   - open: accepted without proof, because nobody else claimed the domain
//     (contested mode only); its site provisions as before;
//   - pending: waiting for proof of control; its site is pending_verification
//     and serves nothing;
//   - proven: its tenant showed control of the domain (a DNS TXT record or an
//     HTTP token, package domainverify). A proven claim is never taken by
//     another tenant while its site lives.
//
// At most one claim per domain may serve (open or proven): the database
// enforces it (domain_claims_serving_key). Within one tenant a domain is
// claimed once: a second live site of the same tenant on it is a
// ConflictError, as it always was. Across tenants there is no conflict any
// more: a domain another tenant claims (proven or not) is accepted as a
// pending claim, and nothing in the answer tells it apart from a fresh domain
// in strict mode. Proving a claim releases every other tenant's open claim on
// the domain (ProveClaims). Deleting a site deletes its claims.
const (
	ClaimOpen    = "open"
	ClaimPending = "pending"
	ClaimProven  = "proven"
)

// Verification modes (CHOM_DOMAIN_VERIFICATION).
const (
	// VerificationContested asks for proof only of a domain another tenant
	// already claims. The default.
	VerificationContested = "contested"
	// VerificationStrict asks for proof of every new claim.
	VerificationStrict = "strict"
)

// DomainClaim is one tenant's claim on one domain, through one site.
type DomainClaim struct {
	bun.BaseModel `bun:"table:domain_claims"`

	SiteID   string `bun:"site_id,pk"`
	TenantID string `bun:"tenant_id"`
	Domain   string `bun:"domain,pk"`
	State    string `bun:"state"`
	// Token is what proves the claim: the value of the TXT record
	// _chom-challenge.<domain>, or the body of
	// http://<domain>/.well-known/chom-challenge/<token>. 128 random bits,
	// base64url. Shown to the claim's tenant only. Not sealed: it proves
	// nothing by itself (publishing it is the proof).
	Token     string     `bun:"token"`
	CreatedAt time.Time  `bun:"created_at"`
	ProvenAt  *time.Time `bun:"proven_at"`
}

// Aliases is a site's list of extra host names, stored as a JSON array.
type Aliases []string

// Value stores the aliases as a JSON array ("[]" when there are none).
func (a Aliases) Value() (driver.Value, error) {
	if len(a) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal([]string(a))
	if err != nil {
		return nil, fmt.Errorf("encode aliases: %w", err)
	}
	return string(b), nil
}

// Scan reads a JSON array of host names.
func (a *Aliases) Scan(src any) error {
	var b []byte
	switch v := src.(type) {
	case nil:
		*a = Aliases{}
		return nil
	case string:
		b = []byte(v)
	case []byte:
		b = v
	default:
		return fmt.Errorf("scan aliases: unexpected %T", src)
	}
	var out []string
	if err := json.Unmarshal(b, &out); err != nil {
		return fmt.Errorf("scan aliases: %w", err)
	}
	if out == nil {
		out = []string{}
	}
	*a = out
	return nil
}

// MarshalJSON writes an empty list as [], never null.
func (a Aliases) MarshalJSON() ([]byte, error) {
	if a == nil {
		return []byte("[]"), nil
	}
	return json.Marshal([]string(a))
}

// NewClaimToken returns a fresh claim token: 128 bits from crypto/rand,
// base64url without padding (22 characters, safe in a DNS TXT value and a URL
// path).
func NewClaimToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// siteDomains lists the domains a site creation claims: its domain first, then
// its aliases.
func (p CreateSiteParams) siteDomains() []string {
	return append([]string{p.Domain}, p.Aliases...)
}

// domainField names the request field of the j-th domain of siteDomains.
func domainField(j int) string {
	if j == 0 {
		return "domain"
	}
	return fmt.Sprintf("aliases[%d]", j-1)
}

// errDomainInUse is the conflict of a site creation one of whose domains a
// live site of the same tenant already claims; it names the field.
func errDomainInUse(field string) *ConflictError {
	return &ConflictError{Reason: field + " is already in use by another site",
		Field: field, Detail: "is already in use by another site"}
}

// planClaims decides, inside tx, the domain claims of a batch of site
// creations, in order, for the items whose errs entry is nil: a domain the
// same tenant already claims (in the database or earlier in the batch) makes
// the item's error a ConflictError naming the field; otherwise each domain
// gets a claim, pending when strict mode or another tenant's claim (in the
// database or earlier in the batch) asks for proof, open otherwise. An item
// with a pending claim is held: its site starts pending_verification and its
// provision waits for ProveClaims.
func (s *Store) planClaims(ctx context.Context, tx bun.Tx, items []batchItem, errs []error, now time.Time) error {
	var all []string
	for i := range items {
		items[i].claims, items[i].held = nil, false
		items[i].site.Status = SiteStatusPending
		if errs[i] == nil {
			all = append(all, items[i].p.siteDomains()...)
		}
	}
	if len(all) == 0 {
		return nil
	}
	holders := make(map[string]map[string]bool, len(all)) // domain → tenants claiming it
	hold := func(domain, tenant string) {
		if holders[domain] == nil {
			holders[domain] = map[string]bool{}
		}
		holders[domain][tenant] = true
	}
	if err := s.readClaims(ctx, tx, all, hold); err != nil {
		return err
	}
	for i := range items {
		if errs[i] != nil {
			continue
		}
		it := &items[i]
		ds := it.p.siteDomains()
		seen := make(map[string]bool, len(ds))
		for j, d := range ds {
			if holders[d][it.p.TenantID] || seen[d] {
				errs[i] = fmt.Errorf("create site %s: %w", it.p.Domain, errDomainInUse(domainField(j)))
				break
			}
			seen[d] = true
		}
		if errs[i] != nil {
			continue
		}
		it.claims = make([]DomainClaim, len(ds))
		for j, d := range ds {
			state := ClaimOpen
			if s.strict || len(holders[d]) > 0 {
				state = ClaimPending
				it.held = true
			}
			it.claims[j] = DomainClaim{SiteID: it.site.ID, TenantID: it.p.TenantID, Domain: d, State: state,
				Token: NewClaimToken(), CreatedAt: now}
		}
		for _, d := range ds {
			hold(d, it.p.TenantID)
		}
		if it.held {
			it.site.Status = SiteStatusPendingVerification
		}
	}
	return nil
}

// readClaims calls hold for every claim on one of domains. On PostgreSQL it
// sends the domains as one array parameter, with the simple protocol: a
// statement prepared while the table was small keeps its sequential-scan
// plan until the next ANALYZE, which made a fresh platform's accept path
// slower with every batch (measured: 1.8k instead of 6k req/s); planned
// each time, it is an index scan of domain_claims_tenant_key.
func (s *Store) readClaims(ctx context.Context, tx bun.Tx, domains []string, hold func(domain, tenant string)) error {
	if s.pg {
		rows, err := tx.Tx.QueryContext(ctx, `SELECT domain, tenant_id FROM domain_claims WHERE domain = ANY($1::text[])`,
			pgx.QueryExecModeSimpleProtocol, domains)
		if err != nil {
			return fmt.Errorf("read claims of %d domains: %w", len(domains), err)
		}
		defer rows.Close()
		for rows.Next() {
			var d, t string
			if err := rows.Scan(&d, &t); err != nil {
				return fmt.Errorf("read claims: %w", err)
			}
			hold(d, t)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read claims of %d domains: %w", len(domains), err)
		}
		return nil
	}
	var rows []struct {
		TenantID string `bun:"tenant_id"`
		Domain   string `bun:"domain"`
	}
	if err := tx.NewSelect().Model((*DomainClaim)(nil)).Column("tenant_id", "domain").
		Where("domain IN (?)", bun.In(domains)).Scan(ctx, &rows); err != nil {
		return fmt.Errorf("read claims of %d domains: %w", len(domains), err)
	}
	for _, r := range rows {
		hold(r.Domain, r.TenantID)
	}
	return nil
}

// insertClaims writes the claims of the accepted items.
func insertClaims(ctx context.Context, tx bun.IDB, claims []DomainClaim) error {
	if len(claims) == 0 {
		return nil
	}
	if _, err := tx.NewInsert().Model(&claims).Exec(ctx); err != nil {
		if claimRaced(err) {
			err = errors.Join(errClaimRace, err)
		}
		return fmt.Errorf("insert %d domain claims: %w", len(claims), err)
	}
	return nil
}

// errClaimRace marks a claim insert that a concurrent transaction beat to a
// domain: both planned their claim open before either committed, and the
// database lets one open claim serve (domain_claims_serving_key). Planned
// again, the loser's claim is pending; CreateSite does that.
var errClaimRace = errors.New("a concurrent site creation claimed the domain first")

// claimRaced reports whether err is a unique violation of a domain_claims
// index (SQLite's single writer makes the race impossible there, but the check
// costs nothing).
func claimRaced(err error) bool {
	return uniqueViolation(err, "domain_claims", "UNIQUE constraint failed: domain_claims.")
}

// deleteClaims drops the claims of a site that is being deleted: its domains
// are free again.
func deleteClaims(ctx context.Context, tx bun.IDB, siteID string) error {
	if _, err := tx.NewDelete().Model((*DomainClaim)(nil)).Where("site_id = ?", siteID).Exec(ctx); err != nil {
		return fmt.Errorf("delete domain claims of site %s: %w", siteID, err)
	}
	return nil
}

// SiteClaims returns the claims of a site (any tenant: for workers), its
// domain first, then its aliases in order.
func (s *Store) SiteClaims(ctx context.Context, siteID string) ([]DomainClaim, error) {
	site, err := s.SiteByID(ctx, siteID)
	if err != nil {
		return nil, err
	}
	return s.claimsOf(ctx, site)
}

// TenantSiteClaims returns the claims of the tenant's site with its site;
// another tenant's site is ErrNotFound.
func (s *Store) TenantSiteClaims(ctx context.Context, tenantID, siteID string) (*Site, []DomainClaim, error) {
	site, err := s.GetSite(ctx, tenantID, siteID)
	if err != nil {
		return nil, nil, err
	}
	if site.Status == SiteStatusDeleted {
		return nil, nil, fmt.Errorf("site %s: %w", siteID, ErrNotFound)
	}
	claims, err := s.claimsOf(ctx, site)
	if err != nil {
		return nil, nil, err
	}
	return site, claims, nil
}

func (s *Store) claimsOf(ctx context.Context, site *Site) ([]DomainClaim, error) {
	var claims []DomainClaim
	if err := s.db.NewSelect().Model(&claims).Where("site_id = ?", site.ID).Scan(ctx); err != nil {
		return nil, fmt.Errorf("claims of site %s: %w", site.ID, err)
	}
	order := map[string]int{site.Domain: 0}
	for i, a := range site.Aliases {
		order[a] = i + 1
	}
	out := make([]DomainClaim, len(claims))
	var extra []DomainClaim
	for _, c := range claims {
		if i, ok := order[c.Domain]; ok && i < len(out) {
			out[i] = c
			continue
		}
		extra = append(extra, c)
	}
	// Keep only filled slots (a claim may be missing for a site created
	// before its aliases existed), then anything unexpected.
	res := out[:0:0]
	for _, c := range out {
		if c.Domain != "" {
			res = append(res, c)
		}
	}
	return append(res, extra...), nil
}

// VerifyPayload is the payload recorded on a domain.verify operation.
type VerifyPayload struct {
	SiteID  string   `json:"site_id"`
	Domains []string `json:"domains"`
}

// StartVerification records a domain.verify operation that checks every
// unproven domain of the tenant's site. A site whose domains are all proven,
// or that is being deleted, is a ConflictError; so is one with a verification
// already unfinished (named). Another tenant's site is ErrNotFound.
func (s *Store) StartVerification(ctx context.Context, a Accept, siteID string) (*Accepted, error) {
	return s.recordMutation(ctx, a, "domain.verify", func(ctx context.Context, tx bun.Tx, opID string, now time.Time) (*Operation, error) {
		site := new(Site)
		err := tx.NewSelect().Model(site).
			Where("id = ? AND tenant_id = ? AND deleted_at IS NULL", siteID, a.TenantID).Scan(ctx)
		if err != nil {
			return nil, notFound(err, "site", siteID)
		}
		if site.Status == SiteStatusDeprovisioning {
			return nil, fmt.Errorf("verify site %s: %w", siteID, &ConflictError{Reason: "the site is being removed"})
		}
		var unproven []string
		if err := tx.NewSelect().Model((*DomainClaim)(nil)).Column("domain").
			Where("site_id = ? AND state <> ?", siteID, ClaimProven).OrderExpr("domain").Scan(ctx, &unproven); err != nil {
			return nil, fmt.Errorf("unproven domains of site %s: %w", siteID, err)
		}
		if len(unproven) == 0 {
			return nil, fmt.Errorf("verify site %s: %w", siteID, &ConflictError{Reason: "every domain of the site is verified already"})
		}
		var running []string
		if err := tx.NewSelect().Model((*Operation)(nil)).Column("id").
			Where("target_id = ? AND op_type = ? AND status IN (?, ?)", siteID, OpTypeDomainVerify, OpPending, OpRunning).
			Limit(1).Scan(ctx, &running); err != nil {
			return nil, fmt.Errorf("verifications of site %s: %w", siteID, err)
		}
		if len(running) > 0 {
			return nil, fmt.Errorf("verify site %s: %w", siteID, &ConflictError{
				Reason: "a verification of the site is in progress", OperationID: running[0]})
		}
		op, err := newOperation(a, OpTypeDomainVerify, TargetSite, siteID, VerifyPayload{SiteID: siteID, Domains: unproven}, now)
		if err != nil {
			return nil, err
		}
		op.ID = opID
		return op, nil
	})
}

// ErrProvenElsewhere: the domain is proven by a claim of another tenant, so
// this claim cannot be proven while that one lives, whatever the DNS says.
var ErrProvenElsewhere = errors.New("the domain is verified by another account")

// ErrReleaseBusy: the proof would release a site of another tenant that has an
// operation in flight; try again once it has finished.
var ErrReleaseBusy = errors.New("a site that uses the domain has an operation in progress")

// ProofResult is what ProveClaims changed.
type ProofResult struct {
	// Enqueue are the operations the proof made ready, to enqueue after the
	// commit (the reconciler enqueues them if that fails): the site's
	// provision, when every claim of the site now allows it, and the
	// deprovision of each released site that was on a server.
	Enqueue []*Operation
	// Released are the IDs of the other tenants' sites whose open claim was
	// released.
	Released []string
	// Finished is false when the verify operation had finished already
	// (nothing was written).
	Finished bool
}

// ReleaseActor is the actor recorded on what a proof does to other tenants'
// sites.
const ReleaseActor = "system:domain-verification"

// ProveClaims records that the claims of site siteID on domains are proven and
// finishes verify operation opID as succeeded, in one transaction:
//
//   - a domain proven by another tenant's claim is ErrProvenElsewhere (wrapped
//     with the domain), and nothing is written;
//   - every other tenant's open claim on the domains is released (pending):
//     its site goes back to pending_verification. A site on a server gets a
//     site.deprovision operation (SitePayload.Unserve) that takes it off the
//     server and leaves it pending_verification (CompleteUnserve); one that is
//     on no server changes status at once; one with an operation in flight
//     makes the whole proof ErrReleaseBusy (retry later), so no site is ever
//     left serving a domain it lost;
//   - once no claim of the site is pending and no other site that claims one
//     of its domains is still on a server, a pending_verification site moves
//     to pending with its held provision operation, or a new one. When a
//     released site is still on a server, the site waits for its unserve
//     (CompleteUnserve releases it then), so the two never hold the same
//     domain on a server at once (the server's files are named after it).
func (s *Store) ProveClaims(ctx context.Context, opID, siteID string, domains []string) (*ProofResult, error) {
	res := &ProofResult{}
	done, err := s.finish(ctx, opID, Outcome{Status: OpSucceeded, Result: map[string]any{"site_id": siteID, "verified": domains}}, nil,
		func(ctx context.Context, tx bun.Tx, now time.Time) error {
			res.Enqueue, res.Released = nil, nil
			site := new(Site)
			if err := tx.NewSelect().Model(site).Where("id = ? AND deleted_at IS NULL", siteID).Scan(ctx); err != nil {
				return notFound(err, "site", siteID)
			}
			var others []DomainClaim
			if err := tx.NewSelect().Model(&others).
				Where("domain IN (?) AND site_id <> ? AND state <> ?", bun.In(domains), siteID, ClaimPending).
				OrderExpr("domain, site_id").Scan(ctx); err != nil {
				return fmt.Errorf("claims on %v: %w", domains, err)
			}
			for _, c := range others {
				if c.State == ClaimProven {
					return fmt.Errorf("prove %s: %w", c.Domain, ErrProvenElsewhere)
				}
			}
			released := map[string]bool{}
			for _, c := range others { // open claims of other sites: release them
				if _, err := tx.NewUpdate().Model((*DomainClaim)(nil)).Set("state = ?", ClaimPending).
					Where("site_id = ? AND domain = ?", c.SiteID, c.Domain).Exec(ctx); err != nil {
					return fmt.Errorf("release claim of site %s on %s: %w", c.SiteID, c.Domain, err)
				}
				if released[c.SiteID] {
					continue
				}
				released[c.SiteID] = true
				op, err := s.unserve(ctx, tx, c.SiteID, now)
				if err != nil {
					return err
				}
				if op != nil {
					res.Enqueue = append(res.Enqueue, op)
				}
				res.Released = append(res.Released, c.SiteID)
			}
			if _, err := tx.NewUpdate().Model((*DomainClaim)(nil)).
				Set("state = ?", ClaimProven).Set("proven_at = COALESCE(proven_at, ?)", now).
				Where("site_id = ? AND domain IN (?)", siteID, bun.In(domains)).Exec(ctx); err != nil {
				return fmt.Errorf("prove claims of site %s: %w", siteID, err)
			}
			op, err := s.releaseHold(ctx, tx, site, now)
			if err != nil {
				return err
			}
			if op != nil {
				res.Enqueue = append([]*Operation{op}, res.Enqueue...)
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	res.Finished = done
	if !done {
		res.Enqueue, res.Released = nil, nil
	}
	return res, nil
}

// unserve moves a site whose claim was released to pending_verification: at
// once when it is on no server, through a site.deprovision operation (returned,
// to enqueue) when it is. A site with an operation in flight is ErrReleaseBusy.
func (s *Store) unserve(ctx context.Context, tx bun.Tx, siteID string, now time.Time) (*Operation, error) {
	site := new(Site)
	if err := tx.NewSelect().Model(site).Where("id = ?", siteID).Scan(ctx); err != nil {
		return nil, notFound(err, "site", siteID)
	}
	switch {
	case site.DeletedAt != nil, site.Status == SiteStatusPendingVerification, site.Status == SiteStatusDeprovisioning:
		return nil, nil // serves nothing, or is on its way out
	case site.OperationID != nil:
		return nil, fmt.Errorf("release site %s: %w", siteID, ErrReleaseBusy)
	case site.VPSID == nil:
		_, err := tx.NewUpdate().Model((*Site)(nil)).Set("status = ?", SiteStatusPendingVerification).
			Set("updated_at = ?", now).Where("id = ?", siteID).Exec(ctx)
		if err != nil {
			return nil, fmt.Errorf("hold site %s: %w", siteID, err)
		}
		return nil, nil
	}
	a := Accept{TenantID: site.TenantID, Actor: ReleaseActor}
	op, err := newOperation(a, OpTypeSiteDeprovision, TargetSite, site.ID,
		SitePayload{SiteID: site.ID, Domain: site.Domain, Aliases: site.Aliases, PreviousStatus: site.Status, Unserve: true}, now)
	if err != nil {
		return nil, err
	}
	if _, err := tx.NewUpdate().Model((*Site)(nil)).
		Set("status = ?", SiteStatusDeprovisioning).Set("operation_id = ?", op.ID).Set("updated_at = ?", now).
		Where("id = ?", siteID).Exec(ctx); err != nil {
		return nil, fmt.Errorf("mark site %s deprovisioning: %w", siteID, err)
	}
	if _, err := tx.NewInsert().Model(op).Exec(ctx); err != nil {
		return nil, fmt.Errorf("insert operation: %w", err)
	}
	if _, err := tx.NewInsert().Model(newAudit(a, "site.unserve", op, now)).Exec(ctx); err != nil {
		return nil, fmt.Errorf("insert audit log: %w", err)
	}
	return op, nil
}

// releaseHold lets a pending_verification site provision once none of its
// claims is pending: it returns the provision operation to enqueue (the one
// held since the site was created, or a new one), or nil.
func (s *Store) releaseHold(ctx context.Context, tx bun.Tx, site *Site, now time.Time) (*Operation, error) {
	if site.Status != SiteStatusPendingVerification {
		return nil, nil
	}
	n, err := tx.NewSelect().Model((*DomainClaim)(nil)).Where("site_id = ? AND state = ?", site.ID, ClaimPending).Count(ctx)
	if err != nil {
		return nil, fmt.Errorf("pending claims of site %s: %w", site.ID, err)
	}
	if n > 0 {
		return nil, nil
	}
	// Another site that claims one of these domains and is still on a server
	// (a released site being taken off it) goes first.
	busy, err := tx.NewSelect().Model((*Site)(nil)).
		Where("id <> ? AND vps_id IS NOT NULL AND deleted_at IS NULL", site.ID).
		Where("id IN (SELECT c.site_id FROM domain_claims AS c WHERE c.domain IN (SELECT o.domain FROM domain_claims AS o WHERE o.site_id = ?))", site.ID).
		Count(ctx)
	if err != nil {
		return nil, fmt.Errorf("sites on the domains of site %s: %w", site.ID, err)
	}
	if busy > 0 {
		return nil, nil
	}
	if site.OperationID != nil {
		op := new(Operation)
		if err := tx.NewSelect().Model(op).Where("id = ?", *site.OperationID).Scan(ctx); err != nil {
			return nil, notFound(err, "operation", *site.OperationID)
		}
		if op.Type == OpTypeSiteProvision && op.Status == OpPending {
			if _, err := tx.NewUpdate().Model((*Site)(nil)).Set("status = ?", SiteStatusPending).
				Set("updated_at = ?", now).Where("id = ?", site.ID).Exec(ctx); err != nil {
				return nil, fmt.Errorf("release site %s: %w", site.ID, err)
			}
			return op, nil
		}
		return nil, fmt.Errorf("release site %s: %w", site.ID, ErrReleaseBusy)
	}
	a := Accept{TenantID: site.TenantID, Actor: ReleaseActor}
	op, err := newOperation(a, OpTypeSiteProvision, TargetSite, site.ID, SitePayload{SiteID: site.ID, Domain: site.Domain,
		Aliases: site.Aliases, SiteType: site.SiteType, PHPVersion: site.PHPVersion}, now)
	if err != nil {
		return nil, err
	}
	if _, err := tx.NewUpdate().Model((*Site)(nil)).Set("status = ?", SiteStatusPending).
		Set("operation_id = ?", op.ID).Set("updated_at = ?", now).Where("id = ?", site.ID).Exec(ctx); err != nil {
		return nil, fmt.Errorf("release site %s: %w", site.ID, err)
	}
	if _, err := tx.NewInsert().Model(op).Exec(ctx); err != nil {
		return nil, fmt.Errorf("insert operation: %w", err)
	}
	if _, err := tx.NewInsert().Model(newAudit(a, "site.create", op, now)).Exec(ctx); err != nil {
		return nil, fmt.Errorf("insert audit log: %w", err)
	}
	return op, nil
}

// CompleteUnserve ends a site.deprovision that took a released site off its
// server (SitePayload.Unserve): the server slot is freed and the site waits,
// pending_verification, for its tenant to prove the domain. The sites that
// waited for it to leave (their domains proven) are released in the same
// transaction: their provision operations are returned, to enqueue. Returns
// false when the operation had already finished.
func (s *Store) CompleteUnserve(ctx context.Context, opID, siteID string, events []OutboxEvent) (bool, []*Operation, error) {
	var ready []*Operation
	done, err := s.finish(ctx, opID, Outcome{Status: OpSucceeded, Result: map[string]string{"site_id": siteID, "status": SiteStatusPendingVerification}}, events,
		func(ctx context.Context, tx bun.Tx, now time.Time) error {
			ready = nil
			if err := releaseSlot(ctx, tx, siteID, now); err != nil {
				return err
			}
			_, err := tx.NewUpdate().Model((*Site)(nil)).
				Set("status = ?", SiteStatusPendingVerification).Set("document_root = ''").Set("system_user = ''").
				Set("operation_id = NULL").Set("updated_at = ?", now).
				Where("id = ?", siteID).Exec(ctx)
			if err != nil {
				return fmt.Errorf("hold site %s: %w", siteID, err)
			}
			// Off its server, the site has no certificate to renew; it is
			// issued again after its next provision.
			if err := deleteCertificateOf(ctx, tx, siteID); err != nil {
				return err
			}
			ready, err = s.releaseWaiting(ctx, tx, siteID, now)
			return err
		})
	if err != nil || !done {
		return done, nil, err
	}
	return true, ready, nil
}

// releaseWaiting releases the pending_verification sites that claim one of
// site siteID's domains and waited for it to leave its server (releaseHold),
// once it has (unserved or deleted). It returns their provision operations.
func (s *Store) releaseWaiting(ctx context.Context, tx bun.Tx, siteID string, now time.Time) ([]*Operation, error) {
	var waiting []Site
	if err := tx.NewSelect().Model(&waiting).
		Where("id <> ? AND status = ? AND deleted_at IS NULL", siteID, SiteStatusPendingVerification).
		Where("id IN (SELECT c.site_id FROM domain_claims AS c WHERE c.domain IN (SELECT o.domain FROM domain_claims AS o WHERE o.site_id = ?))", siteID).
		OrderExpr("id").Scan(ctx); err != nil {
		return nil, fmt.Errorf("sites waiting for site %s: %w", siteID, err)
	}
	var ready []*Operation
	for i := range waiting {
		op, err := s.releaseHold(ctx, tx, &waiting[i], now)
		if err != nil {
			return nil, err
		}
		if op != nil {
			ready = append(ready, op)
		}
	}
	return ready, nil
}

// ProvisionHeld reports whether operation opID is a pending provision of a
// site that waits for domain verification: its task must not run yet.
func (s *Store) ProvisionHeld(ctx context.Context, opID string) (bool, error) {
	n, err := s.db.NewSelect().Model((*Operation)(nil)).
		Join("JOIN sites ON sites.id = operation.target_id").
		Where("operation.id = ? AND operation.op_type = ? AND operation.status = ?", opID, OpTypeSiteProvision, OpPending).
		Where("sites.status = ?", SiteStatusPendingVerification).Count(ctx)
	if err != nil {
		return false, fmt.Errorf("hold of operation %s: %w", opID, err)
	}
	return n > 0, nil
}

// provisionHeld reports whether op is the provision of a site that waits for
// domain verification: its task must not be enqueued yet.
func (s *Store) provisionHeld(ctx context.Context, op *Operation) (bool, error) {
	if op.Type != OpTypeSiteProvision || op.Status != OpPending {
		return false, nil
	}
	n, err := s.db.NewSelect().Model((*Site)(nil)).
		Where("id = ? AND status = ?", op.TargetID, SiteStatusPendingVerification).Count(ctx)
	if err != nil {
		return false, fmt.Errorf("hold of operation %s: %w", op.ID, err)
	}
	return n > 0, nil
}
