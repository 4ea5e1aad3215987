package migrations

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// domains: every domain a site uses (its domain and its aliases) is a claim of
// the site's tenant (domain_claims). A claim is 'open' (accepted without proof:
// nobody else claimed the domain, in contested mode), 'pending' (waits for
// proof; its site does not provision) or 'proven'. At most one claim per
// domain may serve ('open' or 'proven'), and a tenant claims a domain once.
// domain_claims_tenant_key leads with domain: every lookup of the accept path
// is by domain.
// Sites' domains are unique per tenant among live sites, no longer across the
// platform: another tenant's domain is a claim to prove, not a 409.
var domainsUp = []string{
	`ALTER TABLE sites ADD COLUMN aliases TEXT NOT NULL DEFAULT '[]'`,
	`DROP INDEX sites_domain_live_key`,
	`CREATE UNIQUE INDEX sites_tenant_domain_live_key ON sites (tenant_id, domain) WHERE deleted_at IS NULL`,
	`CREATE TABLE domain_claims (
		site_id TEXT NOT NULL REFERENCES sites (id),
		tenant_id TEXT NOT NULL REFERENCES tenants (id),
		domain TEXT NOT NULL,
		state TEXT NOT NULL,
		token TEXT NOT NULL,
		created_at {ts} NOT NULL,
		proven_at {ts},
		PRIMARY KEY (site_id, domain),
		CHECK (state IN ('open', 'pending', 'proven'))
	)`,
	`CREATE UNIQUE INDEX domain_claims_tenant_key ON domain_claims (domain, tenant_id)`,
	`CREATE UNIQUE INDEX domain_claims_serving_key ON domain_claims (domain) WHERE state IN ('open', 'proven')`,
}

var domainsDown = []string{
	`DROP TABLE domain_claims`,
	`DROP INDEX sites_tenant_domain_live_key`,
	`CREATE UNIQUE INDEX sites_domain_live_key ON sites (domain) WHERE deleted_at IS NULL`,
	`ALTER TABLE sites DROP COLUMN aliases`,
}

// claimExistingSites gives every live site an 'open' claim on its domain:
// they were first come, first served, so each domain has one live site and
// nobody has proven anything yet. Each claim gets its own random token.
func claimExistingSites(ctx context.Context, db *bun.DB) error {
	return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var rows []struct {
			ID       string `bun:"id"`
			TenantID string `bun:"tenant_id"`
			Domain   string `bun:"domain"`
		}
		if err := tx.NewSelect().Table("sites").Column("id", "tenant_id", "domain").
			Where("deleted_at IS NULL").Scan(ctx, &rows); err != nil {
			return fmt.Errorf("migrations: list live sites: %w", err)
		}
		now := time.Now().UTC()
		for _, r := range rows {
			b := make([]byte, 16)
			if _, err := rand.Read(b); err != nil {
				return fmt.Errorf("migrations: claim token: %w", err)
			}
			if _, err := tx.ExecContext(ctx,
				`INSERT INTO domain_claims (site_id, tenant_id, domain, state, token, created_at) VALUES (?, ?, ?, 'open', ?, ?)`,
				r.ID, r.TenantID, r.Domain, base64.RawURLEncoding.EncodeToString(b), now); err != nil {
				return fmt.Errorf("migrations: claim %s for site %s: %w", r.Domain, r.ID, err)
			}
		}
		return nil
	})
}

func init() {
	Migrations.MustRegister(
		func(ctx context.Context, db *bun.DB) error {
			if err := execAll(ctx, db, domainsUp); err != nil {
				return err
			}
			return claimExistingSites(ctx, db)
		},
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, domainsDown) },
	)
}
