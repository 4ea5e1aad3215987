package models

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/uptrace/bun"
)

// insertSitesPG is the PostgreSQL form of a batch: one statement, prepared once per
// connection, whose rows arrive as arrays (unnest), claims the idempotency keys,
// inserts the sites whose key was claimed (or that have none), and the operations
// and audit rows of the sites that went in, and their domain claims (decided
// before, by planClaims). Its result says, per operation ID, whether its key was
// claimed ('k') and whether its site was inserted ('s').
//
// A domain used twice in one batch by one tenant goes to the first request (WITH
// ORDINALITY keeps the batch order; planClaims refuses the later ones first);
// later ones, like a domain taken by an existing site of the tenant, are skipped
// by ON CONFLICT DO NOTHING. A claim that collides with one committed meanwhile
// by a concurrent transaction fails the statement: the batch then falls back to
// one request at a time (SiteAcceptor.commit), which decides each one again.
const insertSitesPG = `
WITH v AS (
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
		$7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $14::text[], $15::text[], $22::text[], $23::boolean[])
		WITH ORDINALITY AS v(op_id, site_id, tenant_id, domain, site_type, php_version, payload, request_id, actor, idem_key,
			request_hash, status, aliases, https, hsts, ord)
),
k AS (
	INSERT INTO idempotency_keys (tenant_id, idem_key, request_hash, operation_id, created_at, expires_at)
	SELECT tenant_id, idem_key, request_hash, op_id, $12, $13 FROM v WHERE idem_key <> '' ORDER BY ord
	ON CONFLICT (tenant_id, idem_key) DO UPDATE SET
		request_hash = EXCLUDED.request_hash, operation_id = EXCLUDED.operation_id,
		created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
		WHERE idempotency_keys.expires_at <= $12
	RETURNING operation_id
),
s AS (
	INSERT INTO sites (id, tenant_id, domain, aliases, site_type, php_version, status, https, hsts, operation_id, created_at, updated_at)
	SELECT site_id, tenant_id, domain, aliases, site_type, php_version, status, https, hsts, op_id, $12, $12 FROM v
	WHERE idem_key = '' OR op_id IN (SELECT operation_id FROM k) ORDER BY ord
	ON CONFLICT DO NOTHING
	RETURNING operation_id
),
o AS (
	INSERT INTO operations (id, tenant_id, op_type, status, progress, target_type, target_id, payload, request_id, attempts, created_at, updated_at)
	SELECT op_id, tenant_id, 'site.provision', 'pending', 0, 'site', site_id, payload, request_id, 0, $12, $12 FROM v
	WHERE op_id IN (SELECT operation_id FROM s)
),
a AS (
	INSERT INTO audit_logs (tenant_id, actor, action, target_type, target_id, operation_id, request_id, created_at)
	SELECT tenant_id, actor, 'site.create', 'site', site_id, op_id, request_id, $12 FROM v
	WHERE op_id IN (SELECT operation_id FROM s)
),
c AS (
	INSERT INTO domain_claims (site_id, tenant_id, domain, state, token, created_at)
	SELECT cl.site_id, cl.tenant_id, cl.domain, cl.state, cl.token, $12
	FROM unnest($16::text[], $17::text[], $18::text[], $19::text[], $20::text[], $21::text[]) AS cl(op_id, site_id, tenant_id, domain, state, token)
	WHERE cl.op_id IN (SELECT operation_id FROM s)
)
SELECT 'k', operation_id FROM k UNION ALL SELECT 's', operation_id FROM s`

// releaseKeysPG gives back the keys of requests whose site was refused.
const releaseKeysPG = `
DELETE FROM idempotency_keys k USING unnest($1::text[], $2::text[], $3::text[]) AS r(tenant_id, idem_key, op_id)
WHERE k.tenant_id = r.tenant_id AND k.idem_key = r.idem_key AND k.operation_id = r.op_id`

// createSitesPG writes a prepared batch on PostgreSQL. It returns, per item, nil
// (accepted), errKeyTaken, a ConflictError for the domain, or a QuotaError
// (admitSites, decided first in the same transaction).
func (s *Store) createSitesPG(ctx context.Context, items []batchItem, now time.Time) ([]error, error) {
	n := len(items)
	claimed := make(map[string]bool, n)
	inserted := make(map[string]bool, n)
	errs := make([]error, n)
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		quota, err := s.admitSites(ctx, tx, items)
		if err != nil {
			return err
		}
		copy(errs, quota) // a retried transaction starts clean
		clear(claimed)
		clear(inserted)
		if err := s.planClaims(ctx, tx, items, errs, now); err != nil {
			return err
		}
		cols := make([][]string, 14)
		var hsts []bool
		var claimCols [6][]string
		for i, it := range items {
			if errs[i] != nil {
				continue // over its quota or domain in use: not written
			}
			aliases, err := it.site.Aliases.Value()
			if err != nil {
				return err
			}
			for c, v := range []string{it.op.ID, it.site.ID, it.site.TenantID, it.site.Domain, it.site.SiteType,
				it.site.PHPVersion, it.op.Payload, it.op.RequestID, it.p.Actor, it.p.IdempotencyKey, it.p.RequestHash,
				it.site.Status, aliases.(string), it.site.HTTPS} {
				cols[c] = append(cols[c], v)
			}
			hsts = append(hsts, it.site.HSTS)
			for _, cl := range it.claims {
				for c, v := range []string{it.op.ID, cl.SiteID, cl.TenantID, cl.Domain, cl.State, cl.Token} {
					claimCols[c] = append(claimCols[c], v)
				}
			}
		}
		if len(cols[0]) == 0 {
			return nil
		}
		args := make([]any, 0, 23)
		for _, c := range cols[:11] {
			args = append(args, c)
		}
		args = append(args, now, now.Add(s.idempotencyTTL), cols[11], cols[12])
		for _, c := range claimCols {
			args = append(args, c)
		}
		args = append(args, cols[13], hsts)
		rows, err := queryPrepared(ctx, tx, insertSitesPG, args...)
		if err != nil {
			return fmt.Errorf("insert batch of %d sites: %w", n, err)
		}
		defer rows.Close()
		for rows.Next() {
			var kind, opID string
			if err := rows.Scan(&kind, &opID); err != nil {
				return fmt.Errorf("read batch result: %w", err)
			}
			if kind == "k" {
				claimed[opID] = true
			} else {
				inserted[opID] = true
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("insert batch of %d sites: %w", n, err)
		}
		var rel [3][]string
		for i, it := range items {
			switch {
			case errs[i] != nil:
			case it.p.IdempotencyKey != "" && !claimed[it.op.ID]:
				errs[i] = errKeyTaken
			case !inserted[it.op.ID]:
				errs[i] = fmt.Errorf("create site %s: %w", it.site.Domain, errDomainTaken())
				if it.p.IdempotencyKey != "" {
					rel[0] = append(rel[0], it.site.TenantID)
					rel[1] = append(rel[1], it.p.IdempotencyKey)
					rel[2] = append(rel[2], it.op.ID)
				}
			}
		}
		if len(rel[0]) > 0 {
			// Kept prepared, as queryPrepared keeps the batch.
			if _, err := tx.Tx.ExecContext(ctx, releaseKeysPG, pgx.QueryExecModeCacheStatement, rel[0], rel[1], rel[2]); err != nil {
				return fmt.Errorf("release %d idempotency keys: %w", len(rel[0]), err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return errs, nil
}
