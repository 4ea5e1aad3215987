package models_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// wantQuota fails unless err is a QuotaError naming quota with limit.
func wantQuota(t *testing.T, err error, quota string, limit int64) {
	t.Helper()
	var qe *models.QuotaError
	if !errors.As(err, &qe) || !errors.Is(err, models.ErrQuotaExceeded) || qe.Quota != quota || qe.Limit != limit {
		t.Errorf("err = %v, want a QuotaError for %s, limit %d", err, quota, limit)
	}
}

// Concurrent site creations over a tenant's quota never exceed it, whether
// each runs its own transaction (Store.CreateSite) or they are group-committed
// by an acceptor with several committers (batches in concurrent
// transactions); the other tenant is not held back.
func TestSiteQuotaConcurrent(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		a, b := tenant(t, s, "alpha"), tenant(t, s, "beta")
		if _, err := s.SetQuota(ctx, models.TenantQuota{TenantID: a, MaxSites: ptr(int64(4))}); err != nil {
			t.Fatal(err)
		}
		acc, err := models.NewSiteAcceptor(models.SiteAcceptorConfig{Store: s, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			MaxBatch: 3, Committers: 4})
		if err != nil {
			t.Fatal(err)
		}
		const n = 40
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				p := siteParams(accept(a, "", ""), fmt.Sprintf("a%d.example", i))
				if i%2 == 0 {
					_, errs[i] = s.CreateSite(ctx, p)
				} else {
					_, errs[i] = acc.CreateSite(ctx, p)
				}
			})
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			if err == nil {
				ok++
				continue
			}
			wantQuota(t, err, models.QuotaSites, 4)
		}
		if ok != 4 || count(t, db, "sites", "tenant_id = ?", a) != 4 || count(t, db, "operations", "tenant_id = ?", a) != 4 {
			t.Errorf("%d accepted, %d sites, %d operations; want the quota, 4, of each", ok,
				count(t, db, "sites", "tenant_id = ?", a), count(t, db, "operations", "tenant_id = ?", a))
		}
		for i := range 6 {
			createSite(t, s, b, fmt.Sprintf("b%d.example", i))
		}
		q, err := s.GetQuota(ctx, a)
		if err != nil || q.Usage.Sites != 4 || q.Limits.MaxSites != 4 {
			t.Errorf("GetQuota = %+v, %v", q, err)
		}
	})
}

// A request retried with its Idempotency-Key once the tenant is at its quota
// replays its first answer instead of being refused; a new one is refused
// and leaves its key free.
func TestSiteQuotaReplay(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		a := tenant(t, s, "alpha")
		if _, err := s.SetQuota(ctx, models.TenantQuota{TenantID: a, MaxSites: ptr(int64(1))}); err != nil {
			t.Fatal(err)
		}
		first, err := s.CreateSite(ctx, siteParams(accept(a, "k1", "h1"), "one.example"))
		if err != nil {
			t.Fatal(err)
		}
		again, err := s.CreateSite(ctx, siteParams(accept(a, "k1", "h1"), "one.example"))
		if err != nil || !again.Replayed || again.Operation.ID != first.Operation.ID {
			t.Errorf("replay at the quota: %+v, %v", again, err)
		}
		_, err = s.CreateSite(ctx, siteParams(accept(a, "k2", "h2"), "two.example"))
		wantQuota(t, err, models.QuotaSites, 1)
		if n := count(t, db, "idempotency_keys", "idem_key = 'k2'"); n != 0 {
			t.Errorf("a refused request kept its key (%d rows)", n)
		}
	})
}

// Backups are held to the tenant's backup count and to the bytes of its
// completed backups; the other tenant is not affected.
func TestBackupQuotas(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		a, b := tenant(t, s, "alpha"), tenant(t, s, "beta")
		sites := []string{activeSite(t, s, a, "a1.example"), activeSite(t, s, a, "a2.example"), activeSite(t, s, a, "a3.example")}
		other := activeSite(t, s, b, "b1.example")
		backup := func(tenantID, siteID string) (*models.Accepted, error) {
			return s.CreateBackup(ctx, models.CreateBackupParams{Accept: accept(tenantID, "", ""), SiteID: siteID, BackupType: "full", RetentionDays: 7})
		}
		if _, err := s.SetQuota(ctx, models.TenantQuota{TenantID: a, MaxBackups: ptr(int64(1)), MaxBackupBytes: ptr(int64(1000))}); err != nil {
			t.Fatal(err)
		}
		first, err := backup(a, sites[0])
		if err != nil {
			t.Fatal(err)
		}
		before := count(t, db, "operations", "")
		_, err = backup(a, sites[1])
		wantQuota(t, err, models.QuotaBackups, 1)
		if count(t, db, "operations", "") != before || count(t, db, "site_backups", "tenant_id = ?", a) != 1 {
			t.Error("a refused backup wrote rows")
		}
		if _, err := backup(b, other); err != nil {
			t.Errorf("the other tenant's backup: %v", err)
		}

		// The first backup completes with 1000 bytes: the count limit is
		// lifted, the bytes one now refuses.
		if _, err := db.NewUpdate().Table("site_backups").Set("status = ?", models.BackupStatusCompleted).Set("size_bytes = 1000").
			Where("id = ?", first.Operation.TargetID).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := db.NewUpdate().Table("sites").Set("operation_id = NULL").Where("id = ?", sites[0]).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.SetQuota(ctx, models.TenantQuota{TenantID: a, MaxBackups: ptr(int64(5)), MaxBackupBytes: ptr(int64(1000))}); err != nil {
			t.Fatal(err)
		}
		_, err = backup(a, sites[2])
		wantQuota(t, err, models.QuotaBackupBytes, 1000)
		q, err := s.GetQuota(ctx, a)
		if err != nil || q.Usage.Backups != 1 || q.Usage.BackupBytes != 1000 || q.Usage.Sites != 3 {
			t.Errorf("GetQuota = %+v, %v", q, err)
		}
		if _, err := s.SetQuota(ctx, models.TenantQuota{TenantID: a}); err != nil { // back to the defaults: unlimited
			t.Fatal(err)
		}
		if _, err := backup(a, sites[2]); err != nil {
			t.Errorf("after the quota was lifted: %v", err)
		}
	})
}

// A quota lowered through one Store (another ingress process) binds a Store
// that cached the tenant as limited at once: the limit is re-read under the
// tenant's lock, not taken from the cache.
func TestSiteQuotaLoweredElsewhereAppliesAtOnce(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		here := setup(t, db)
		elsewhere, err := models.New(models.Config{DB: db})
		if err != nil {
			t.Fatal(err)
		}
		a := tenant(t, here, "alpha")
		if _, err := elsewhere.SetQuota(ctx, models.TenantQuota{TenantID: a, MaxSites: ptr(int64(5))}); err != nil {
			t.Fatal(err)
		}
		createSite(t, here, a, "one.example") // here caches alpha as limited (5)
		if _, err := elsewhere.SetQuota(ctx, models.TenantQuota{TenantID: a, MaxSites: ptr(int64(1))}); err != nil {
			t.Fatal(err)
		}
		_, err = here.CreateSite(ctx, siteParams(accept(a, "", ""), "two.example"))
		wantQuota(t, err, models.QuotaSites, 1)
	})
}
