package models

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// RegisterVPSParams describes a server to register.
type RegisterVPSParams struct {
	Hostname     string
	IPAddress    string
	SSHPort      int
	Provider     string
	Region       string
	Allocation   string
	TenantID     *string
	SiteCapacity int
	// HostKey is the pinned SSH host key: a key in authorized_keys form or its
	// "SHA256:…" fingerprint; "" pins nothing (a strict worker then refuses
	// to dial the server until a key is pinned).
	HostKey string
}

// RegisterVPS records a new server. A hostname already registered is a
// ConflictError. A new server starts active with health unknown: it takes sites
// until a health check says otherwise. With an Idempotency-Key in a, the same
// request again returns the same server (Replayed) instead of a conflict; the
// key's record then names the server where other keys name an operation.
func (s *Store) RegisterVPS(ctx context.Context, a Accept, p RegisterVPSParams) (*VPSServer, bool, error) {
	now := s.nowUTC()
	v := &VPSServer{
		ID: NewID(PrefixVPS), Hostname: p.Hostname, IPAddress: p.IPAddress, SSHPort: p.SSHPort,
		Provider: p.Provider, Region: p.Region, Allocation: p.Allocation, TenantID: p.TenantID,
		SiteCapacity: p.SiteCapacity, Status: VPSStatusActive, HealthStatus: HealthUnknown,
		HostKey: p.HostKey, HostKeySHA256: HostKeySHA256(p.HostKey), CreatedAt: now, UpdatedAt: now,
	}
	if p.TenantID != nil {
		if _, err := s.GetTenant(ctx, *p.TenantID); err != nil {
			return nil, false, fmt.Errorf("register vps %s: tenant: %w", p.Hostname, err)
		}
	}
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		ok, err := s.claimKey(ctx, tx, a, v.ID, now)
		if err != nil {
			return err
		}
		if !ok {
			return errKeyTaken
		}
		res, err := tx.NewInsert().Model(v).On("CONFLICT DO NOTHING").Exec(ctx)
		if err != nil {
			return fmt.Errorf("register vps %s: %w", p.Hostname, err)
		}
		if affected(res) == 0 {
			return fmt.Errorf("register vps %s: %w", p.Hostname, &ConflictError{Reason: "hostname already registered", Field: "hostname", Detail: "is already registered"})
		}
		return nil
	})
	if errors.Is(err, errKeyTaken) {
		k, err := s.idempotencyRecord(ctx, a)
		if err != nil {
			return nil, false, err
		}
		got, err := s.GetVPS(ctx, k.OperationID)
		return got, err == nil, err
	}
	if err != nil {
		return nil, false, err
	}
	return v, false, nil
}

// GetVPS returns the server with id.
func (s *Store) GetVPS(ctx context.Context, id string) (*VPSServer, error) {
	v := new(VPSServer)
	if err := s.db.NewSelect().Model(v).Where("id = ?", id).Scan(ctx); err != nil {
		return nil, notFound(err, "vps", id)
	}
	return v, nil
}

// ListVPS returns up to limit servers after the cursor ID, newest first.
func (s *Store) ListVPS(ctx context.Context, cursor string, limit int) ([]VPSServer, error) {
	var out []VPSServer
	q := s.db.NewSelect().Model(&out).OrderExpr("id DESC").Limit(int64(limit))
	if cursor != "" {
		q = q.Where("id < ?", cursor)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("list vps: %w", err)
	}
	return out, nil
}

// AssignVPS places a site on a server and returns that server. A site already
// placed keeps its server (the call is idempotent). The chosen server is the tenant's
// own dedicated server if one has room, else the least-loaded shared server; servers
// that are not active or are unhealthy are never chosen.
//
// Race-free without row locks: the capacity check is part of the UPDATE that takes
// the slot (so PostgreSQL re-checks it after waiting for a concurrent taker, and
// SQLite serialises writers), and the site is bound only if it is still unbound.
// The CHECK constraint on site_count is the last line of defence.
func (s *Store) AssignVPS(ctx context.Context, siteID string) (*VPSServer, error) {
	for attempt := 0; attempt < 8; attempt++ {
		var chosen *VPSServer
		err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
			site := new(Site)
			if err := tx.NewSelect().Model(site).Where("id = ?", siteID).Scan(ctx); err != nil {
				return notFound(err, "site", siteID)
			}
			if site.VPSID != nil {
				v := new(VPSServer)
				if err := tx.NewSelect().Model(v).Where("id = ?", *site.VPSID).Scan(ctx); err != nil {
					return notFound(err, "vps", *site.VPSID)
				}
				chosen = v
				return nil
			}
			candidates, err := placementCandidates(ctx, tx, site, 4)
			if err != nil {
				return err
			}
			now := s.nowUTC()
			for i := range candidates {
				v := &candidates[i]
				ok, err := takeSlot(ctx, tx, v.ID, now)
				if err != nil {
					return err
				}
				if !ok {
					continue // full since we looked; try the next one
				}
				res, err := tx.NewUpdate().Model((*Site)(nil)).
					Set("vps_id = ?", v.ID).Set("updated_at = ?", now).
					Where("id = ? AND vps_id IS NULL", siteID).Exec(ctx)
				if err != nil {
					return fmt.Errorf("bind site %s to vps %s: %w", siteID, v.ID, err)
				}
				if affected(res) == 0 {
					return errSiteBoundConcurrently
				}
				v.SiteCount++
				chosen = v
				return nil
			}
			if len(candidates) == 0 {
				return fmt.Errorf("place site %s: %w", siteID, ErrNoCapacity)
			}
			return errSiteBoundConcurrently // every candidate filled up: look again
		})
		if errors.Is(err, errSiteBoundConcurrently) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return chosen, nil
	}
	return nil, fmt.Errorf("place site %s: too much contention: %w", siteID, ErrNoCapacity)
}

// placementCandidates returns, in tx, up to limit servers that may take
// site (candidateQuery), best first.
func placementCandidates(ctx context.Context, tx bun.Tx, site *Site, limit int) ([]VPSServer, error) {
	var candidates []VPSServer
	if err := candidateQuery(tx, site.TenantID).Limit(int64(limit)).Scan(ctx, &candidates); err != nil {
		return nil, fmt.Errorf("find vps for site %s: %w", site.ID, err)
	}
	return candidates, nil
}

// candidateQuery selects, in db (a transaction or not), the servers that may take a site of
// tenant, best first: the tenant's own dedicated servers, then the shared
// ones, the least loaded first. Servers that are not active or are
// unhealthy are never candidates. tenant is a tenant ID, or a bun.Safe SQL
// expression that yields one (startProvisionPG reads it from the claimed
// operation).
func candidateQuery(db bun.IDB, tenant any) *bun.SelectQuery {
	return db.NewSelect().Model((*VPSServer)(nil)).
		Where("status = ?", VPSStatusActive).
		Where("health_status <> ?", HealthUnhealthy).
		Where("site_count < site_capacity").
		WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
			return q.Where("allocation = ?", AllocationShared).
				WhereOr("allocation = ? AND tenant_id = ?", AllocationDedicated, tenant)
		}).
		OrderExpr("CASE WHEN allocation = ? THEN 0 ELSE 1 END", AllocationDedicated).
		OrderExpr("site_count * 1.0 / site_capacity ASC, id ASC")
}

// takeSlot takes one site slot on server vpsID in tx, and returns false when
// the server is full or no longer active. The capacity check is part of the
// UPDATE, so PostgreSQL re-checks it after waiting for a concurrent taker.
func takeSlot(ctx context.Context, tx bun.Tx, vpsID string, now time.Time) (bool, error) {
	res, err := tx.NewUpdate().Model((*VPSServer)(nil)).
		Set("site_count = site_count + 1").Set("updated_at = ?", now).
		Where("id = ? AND status = ? AND site_count < site_capacity", vpsID, VPSStatusActive).
		Exec(ctx)
	if err != nil {
		return false, fmt.Errorf("take slot on vps %s: %w", vpsID, err)
	}
	return affected(res) == 1, nil
}

// errSiteBoundConcurrently rolls back a placement that lost a race; AssignVPS retries.
var errSiteBoundConcurrently = errors.New("placement lost a race")

// releaseSlot frees the site's slot on its server, in tx, and unbinds the site.
// Calling it for an unbound site does nothing, so a slot is never freed twice.
func releaseSlot(ctx context.Context, tx bun.Tx, siteID string, now any) error {
	var vpsID *string
	if err := tx.NewSelect().Model((*Site)(nil)).Column("vps_id").Where("id = ?", siteID).Scan(ctx, &vpsID); err != nil {
		return notFound(err, "site", siteID)
	}
	if vpsID == nil {
		return nil
	}
	if _, err := tx.NewUpdate().Model((*VPSServer)(nil)).
		Set("site_count = site_count - 1").Set("updated_at = ?", now).
		Where("id = ? AND site_count > 0", *vpsID).Exec(ctx); err != nil {
		return fmt.Errorf("free slot on vps %s: %w", *vpsID, err)
	}
	if _, err := tx.NewUpdate().Model((*Site)(nil)).Set("vps_id = NULL").
		Where("id = ?", siteID).Exec(ctx); err != nil {
		return fmt.Errorf("unbind site %s: %w", siteID, err)
	}
	return nil
}

// PinHostKey records key (authorized_keys form) as the SSH host key of server
// vpsID when none is pinned yet (trust on first use); a key already pinned is
// never replaced, so a later, different key stays a mismatch.
func (s *Store) PinHostKey(ctx context.Context, vpsID, key string) error {
	_, err := s.db.NewUpdate().Model((*VPSServer)(nil)).
		Set("host_key = ?", key).Set("updated_at = ?", s.now()).
		Where("id = ? AND host_key = ''", vpsID).Exec(ctx)
	if err != nil {
		return fmt.Errorf("pin host key of %s: %w", vpsID, err)
	}
	return nil
}
