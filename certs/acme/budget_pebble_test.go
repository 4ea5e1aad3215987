package acme_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/certs"
	"github.com/chomhq/chom/certs/acme"
	"github.com/chomhq/chom/certs/seal"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// TestBudgetPebble is the burst on a real CA, scaled down: four sites under
// one registered domain with a budget of three certificates per domain, the
// account and ledger in the database. Three are issued, the fourth is
// deferred with a retry time (not failed), and the sweep's list finds it
// once that time comes.
func TestBudgetPebble(t *testing.T) {
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		b := setup(t)
		if _, err := models.MigrateUp(ctx, db); err != nil {
			t.Fatal(err)
		}
		s, err := models.New(models.Config{DB: db})
		if err != nil {
			t.Fatal(err)
		}
		ring, err := seal.ParseKeys("k1:" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
		if err != nil {
			t.Fatal(err)
		}
		cs, err := models.NewCertificateStore(models.CertificateStoreConfig{Store: s, Ring: ring,
			Budget: models.BudgetLimits{CertsPerDomain: 3}})
		if err != nil {
			t.Fatal(err)
		}
		iss, err := acme.New(acme.Config{
			DirectoryURL: b.pebble.DirectoryURL, Email: "ops@chom.test", Accounts: acme.StoreAccounts{Store: cs}, Budget: cs,
			HTTPClient: &http.Client{Timeout: 30 * time.Second, Transport: b.newAcct},
			Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		ten, err := s.EnsureTenant(ctx, "alpha")
		if err != nil {
			t.Fatal(err)
		}
		issued, deferred := 0, 0
		var deferredSite string
		var retryAt time.Time
		start := time.Now()
		for i := range 4 {
			domain := fmt.Sprintf("s%d.burst.test", i)
			acc, err := s.CreateSite(ctx, models.CreateSiteParams{Accept: models.Accept{TenantID: ten.ID, Actor: "tok_test", RequestID: domain},
				Domain: domain, SiteType: "wordpress", PHPVersion: "8.3"})
			if err != nil {
				t.Fatal(err)
			}
			siteID := acc.Operation.TargetID
			cert, err := iss.Issue(ctx, acme.Request{SiteID: siteID, Domains: []string{domain}, Challenge: acme.HTTP01, HTTP01: b.web})
			if e := acme.AsError(err); e != nil && e.Code == acme.CodeDeferred {
				deferred++
				deferredSite, retryAt = siteID, e.RetryAt
				if err := cs.RecordCertificateError(ctx, siteID, e.Code, e.Message, e.RetryAt); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("site %d failed: %v", i, err)
			}
			issued++
			ra := certs.RenewAfter(siteID, cert.NotBefore, cert.NotAfter, time.Now(), nil)
			if err := cs.PutCertificate(ctx, models.SiteCertificate{SiteID: siteID, Status: models.CertificateIssued,
				Source: models.SourceACME, Issuer: cert.Issuer, Domains: cert.Domains, Serial: cert.Serial,
				NotBefore: &cert.NotBefore, NotAfter: &cert.NotAfter, RenewAfter: &ra,
				ChainPEM: string(cert.ChainPEM), KeyPEM: cert.KeyPEM}); err != nil {
				t.Fatal(err)
			}
			got, err := cs.CertificateBySite(ctx, siteID)
			if err != nil || string(got.KeyPEM) != string(cert.KeyPEM) {
				t.Fatalf("stored certificate of %s: %v", siteID, err)
			}
		}
		t.Logf("4 sites under burst.test, budget 3: %d issued, %d deferred until %v, in %v", issued, deferred, retryAt, time.Since(start))
		if issued != 3 || deferred != 1 {
			t.Fatalf("issued %d, deferred %d; want 3 and 1", issued, deferred)
		}
		if d := time.Until(retryAt); d < 7*24*time.Hour-5*time.Minute || d > 7*24*time.Hour {
			t.Errorf("deferred for %v; want the 7-day window", d)
		}
		due, err := cs.DueForRenewal(ctx, retryAt, 10)
		if err != nil || len(due) != 1 || due[0].SiteID != deferredSite || due[0].LastErrorCode != acme.CodeDeferred {
			t.Errorf("due at the retry time = %+v, %v; want the deferred site", due, err)
		}
		if n, _ := cs.BudgetUse(ctx, "cert", "burst.test"); n != 3 {
			t.Errorf("ledger counts %d certificates of burst.test; want 3", n)
		}
	})
}
