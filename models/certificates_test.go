package models_test

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/certs/seal"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// keySpec returns id:base64 of a fresh key.
func keySpec(t *testing.T, id string) string {
	t.Helper()
	b := make([]byte, seal.KeySize)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return id + ":" + base64.StdEncoding.EncodeToString(b)
}

func keyRing(t *testing.T, spec string) *seal.Ring {
	t.Helper()
	r, err := seal.ParseKeys(spec)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func certStore(t *testing.T, s *models.Store, ring *seal.Ring, limits models.BudgetLimits) *models.CertificateStore {
	t.Helper()
	cs, err := models.NewCertificateStore(models.CertificateStoreConfig{Store: s, Ring: ring, Budget: limits})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// issuedCert is a certificate record of siteID expiring at notAfter.
func issuedCert(siteID string, notAfter time.Time) models.SiteCertificate {
	nb, ra := notAfter.Add(-90*24*time.Hour), notAfter.Add(-30*24*time.Hour)
	return models.SiteCertificate{SiteID: siteID, Status: models.CertificateIssued, Source: models.SourceACME,
		Issuer: "Pebble Intermediate", Domains: []string{siteID + ".example", "www." + siteID + ".example"}, Serial: "0a1b",
		NotBefore: &nb, NotAfter: &notAfter, RenewAfter: &ra, ChainPEM: "-----BEGIN CERTIFICATE-----\n...",
		KeyPEM: []byte("-----BEGIN PRIVATE KEY-----\nkey of " + siteID)}
}

func TestCertificateRecords(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, clk := setupClock(t, db)
		cs := certStore(t, s, keyRing(t, keySpec(t, "k1")), models.BudgetLimits{})
		ten := tenant(t, s, "alpha")
		a, b, c, d := activeSite(t, s, ten, "a.example"), activeSite(t, s, ten, "b.example"), activeSite(t, s, ten, "c.example"), activeSite(t, s, ten, "d.example")

		if _, err := cs.CertificateBySite(ctx, a); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("no record: err = %v, want ErrNotFound", err)
		}
		want := issuedCert(a, epoch.Add(40*24*time.Hour))
		if err := cs.PutCertificate(ctx, want); err != nil {
			t.Fatal(err)
		}
		got, err := cs.CertificateBySite(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		if string(got.KeyPEM) != string(want.KeyPEM) || got.Serial != "0a1b" || len(got.Domains) != 2 ||
			!got.NotAfter.Equal(*want.NotAfter) || got.Status != models.CertificateIssued {
			t.Errorf("read back %+v", got)
		}
		var raw string
		if err := db.NewSelect().Table("site_certificates").Column("key_sealed").Where("site_id = ?", a).Scan(ctx, &raw); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(raw, "v1:k1:") || strings.Contains(raw, "PRIVATE") {
			t.Errorf("stored key = %q; want it sealed under k1", raw)
		}

		// The record without its key: neither read nor opened.
		bare, err := cs.CertificateRecord(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		if bare.KeySealed != "" || len(bare.KeyPEM) != 0 || bare.ChainPEM != want.ChainPEM || bare.Serial != "0a1b" || len(bare.Domains) != 2 {
			t.Errorf("record without its key: %+v", bare)
		}
		if _, err := cs.CertificateRecord(ctx, "site_none"); !errors.Is(err, models.ErrNotFound) {
			t.Errorf("no record: err = %v, want ErrNotFound", err)
		}

		// A failed renewal keeps the certificate and moves the next try.
		retry := epoch.Add(time.Hour)
		if err := cs.RecordCertificateError(ctx, a, "challenge_failed", "the CA could not validate a.example", retry); err != nil {
			t.Fatal(err)
		}
		got, _ = cs.CertificateBySite(ctx, a)
		if got.Status != models.CertificateIssued || got.Serial != "0a1b" || got.LastErrorCode != "challenge_failed" || !got.RenewAfter.Equal(retry) {
			t.Errorf("after an error: %+v", got)
		}
		// A first issuance that failed leaves a failed record.
		if err := cs.RecordCertificateError(ctx, b, "ca_refused", "no", epoch.Add(2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if got, _ := cs.CertificateBySite(ctx, b); got.Status != models.CertificateFailed || got.LastErrorCode != "ca_refused" {
			t.Errorf("first failure: %+v", got)
		}

		// Due: ordered by renew_after, limited, uploads never listed.
		cc := issuedCert(c, epoch.Add(20*24*time.Hour)) // renew_after in the past
		up := issuedCert(d, epoch.Add(10*24*time.Hour))
		up.Source = models.SourceUpload
		for _, r := range []models.SiteCertificate{cc, up} {
			if err := cs.PutCertificate(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		clk.Advance(3 * time.Hour)
		due, err := cs.DueForRenewal(ctx, clk.Now(), 10)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range due {
			ids = append(ids, r.SiteID)
			if len(r.KeyPEM) != 0 || r.KeySealed != "" {
				t.Errorf("due list carries the key of %s", r.SiteID)
			}
		}
		if fmt.Sprint(ids) != fmt.Sprint([]string{c, a, b}) {
			t.Errorf("due = %v, want [c a b] = %v", ids, []string{c, a, b})
		}
		if due, _ := cs.DueForRenewal(ctx, clk.Now(), 1); len(due) != 1 || due[0].SiteID != c {
			t.Errorf("due with limit 1 = %v", due)
		}
		if err := cs.DeleteCertificate(ctx, c); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CertificateBySite(ctx, c); !errors.Is(err, models.ErrNotFound) {
			t.Errorf("after delete: %v", err)
		}
	})
}

// A sealed key copied onto another site's row does not open there.
func TestCertificateKeyBoundToSite(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		cs := certStore(t, s, keyRing(t, keySpec(t, "k1")), models.BudgetLimits{})
		ten := tenant(t, s, "alpha")
		a, b := activeSite(t, s, ten, "a.example"), activeSite(t, s, ten, "b.example")
		for _, id := range []string{a, b} {
			if err := cs.PutCertificate(ctx, issuedCert(id, epoch.Add(60*24*time.Hour))); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := db.NewUpdate().Table("site_certificates").
			Set("key_sealed = (SELECT key_sealed FROM site_certificates WHERE site_id = ?)", a).
			Where("site_id = ?", b).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CertificateBySite(ctx, b); !errors.Is(err, seal.ErrOpen) {
			t.Fatalf("a's key on b's row: err = %v, want seal.ErrOpen", err)
		}
	})
}

func TestACMEAccountFirstWins(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		cs := certStore(t, setup(t, db), keyRing(t, keySpec(t, "k1")), models.BudgetLimits{})
		if _, err := cs.ACMEAccount(ctx, "https://ca/dir", "ops@x"); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
		first, err := cs.CreateACMEAccount(ctx, models.ACMEAccount{DirectoryURL: "https://ca/dir", Email: "ops@x", URI: "https://ca/acct/1", KeyPEM: []byte("key-1")})
		if err != nil {
			t.Fatal(err)
		}
		second, err := cs.CreateACMEAccount(ctx, models.ACMEAccount{DirectoryURL: "https://ca/dir", Email: "ops@x", URI: "https://ca/acct/2", KeyPEM: []byte("key-2")})
		if err != nil {
			t.Fatal(err)
		}
		if second.ID != first.ID || second.URI != "https://ca/acct/1" || string(second.KeyPEM) != "key-1" {
			t.Errorf("second create = %+v; want the first account", second)
		}
		other, err := cs.CreateACMEAccount(ctx, models.ACMEAccount{DirectoryURL: "https://staging/dir", Email: "ops@x", URI: "u", KeyPEM: []byte("k")})
		if err != nil || other.ID == first.ID {
			t.Errorf("another directory: %+v, %v; want its own account", other, err)
		}
	})
}

// Reseal moves every key to the new primary in batches; after it the old
// key can be dropped; a key missing from the ring stops it with its id.
func TestReseal(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		k1, k2 := keySpec(t, "k1"), keySpec(t, "k2")
		old := certStore(t, s, keyRing(t, k1), models.BudgetLimits{})
		ten := tenant(t, s, "alpha")
		var sites []string
		for i := range 5 {
			id := activeSite(t, s, ten, fmt.Sprintf("s%d.example", i))
			sites = append(sites, id)
			if err := old.PutCertificate(ctx, issuedCert(id, epoch.Add(60*24*time.Hour))); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := old.CreateACMEAccount(ctx, models.ACMEAccount{DirectoryURL: "d", Email: "e", URI: "u", KeyPEM: []byte("account key")}); err != nil {
			t.Fatal(err)
		}
		// A certificate staged for an operation that has not deployed it yet.
		if err := old.StageCertificate(ctx, "op_reseal", sites[2], []byte("staged chain"), []byte("staged key")); err != nil {
			t.Fatal(err)
		}
		rotated := certStore(t, s, keyRing(t, k2+","+k1), models.BudgetLimits{})
		// A site sealed under the new key already: not counted again.
		if err := rotated.PutCertificate(ctx, issuedCert(sites[0], epoch.Add(60*24*time.Hour))); err != nil {
			t.Fatal(err)
		}
		rep, err := rotated.Reseal(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		if rep != (models.ResealReport{Accounts: 1, Certificates: 4, Uploads: 1}) {
			t.Errorf("resealed %+v; want 1 account, 4 certificates, 1 upload", rep)
		}
		if n := count(t, db, "site_certificates", "key_sealed NOT LIKE 'v1:k2:%'"); n != 0 {
			t.Errorf("%d keys still under k1", n)
		}
		if again, _ := rotated.Reseal(ctx, 2); again != (models.ResealReport{}) {
			t.Errorf("second pass resealed %+v; want nothing", again)
		}
		onlyNew := certStore(t, s, keyRing(t, k2), models.BudgetLimits{})
		for _, id := range sites {
			if got, err := onlyNew.CertificateBySite(ctx, id); err != nil || !strings.HasSuffix(string(got.KeyPEM), id) {
				t.Fatalf("after dropping k1, %s: %v", id, err)
			}
		}
		if a, err := onlyNew.ACMEAccount(ctx, "d", "e"); err != nil || string(a.KeyPEM) != "account key" {
			t.Fatalf("account after dropping k1: %v", err)
		}
		if chain, key, err := onlyNew.Upload(ctx, "op_reseal"); err != nil || string(chain) != "staged chain" || string(key) != "staged key" {
			t.Fatalf("staged certificate after dropping k1: %q, %q, %v", chain, key, err)
		}
		// A value under a key the ring lacks: the pass stops and names it.
		k3 := keySpec(t, "k3")
		if err := certStore(t, s, keyRing(t, k3), models.BudgetLimits{}).PutCertificate(ctx, issuedCert(sites[1], epoch.Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		_, err = certStore(t, s, keyRing(t, keySpec(t, "k4")+","+k2), models.BudgetLimits{}).Reseal(ctx, 10)
		var uk *seal.UnknownKeyError
		if !errors.As(err, &uk) || uk.ID != "k3" || !strings.Contains(err.Error(), sites[1]) {
			t.Errorf("reseal with a missing key: %v; want an UnknownKeyError for k3 naming %s", err, sites[1])
		}
	})
}

// A burst of 60 sites under one registered domain: 50 reservations, 10
// denied with the time the first leaves the 7-day window, none failed; the
// order limit and the give-back of unseen orders work the same way.
func TestBudgetBurst(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, clk := setupClock(t, db)
		cs := certStore(t, s, keyRing(t, keySpec(t, "k1")), models.BudgetLimits{})
		const account = "https://ca/acct/1"
		granted, denied := 0, 0
		var first time.Time
		for i := range 60 {
			id, err := cs.Reserve(ctx, account, []string{"example.com"})
			var de *models.BudgetDeniedError
			switch {
			case err == nil:
				granted++
				if i == 0 {
					first = clk.Now()
				}
				if err := cs.Settle(ctx, id, true, true); err != nil {
					t.Fatal(err)
				}
			case errors.As(err, &de):
				denied++
				if want := first.Add(7 * 24 * time.Hour); !de.RetryAt().Equal(want) || !strings.Contains(de.Limit, "example.com") {
					t.Errorf("site %d denied until %v (%s); want %v", i, de.RetryAt(), de.Limit, want)
				}
			default:
				t.Fatalf("site %d: %v (a failure, not a deferral)", i, err)
			}
			clk.Advance(time.Minute)
		}
		t.Logf("burst of 60: %d granted, %d deferred", granted, denied)
		if granted != 50 || denied != 10 {
			t.Fatalf("granted %d, denied %d; want 50 and 10", granted, denied)
		}
		// Another registered domain is not held back.
		if _, err := cs.Reserve(ctx, account, []string{"example.net"}); err != nil {
			t.Errorf("another domain: %v", err)
		}
		// After the window the first use leaves and one more fits.
		clk.Advance(7*24*time.Hour - 60*time.Minute)
		if _, err := cs.Reserve(ctx, account, []string{"example.com"}); err != nil {
			t.Errorf("after the window: %v", err)
		}

		// Orders per account: 3 per hour here. An order the CA never saw
		// gives its place back; one it saw keeps it but not the certificate.
		small := certStore(t, s, keyRing(t, keySpec(t, "k1")), models.BudgetLimits{OrdersPerAccount: 3, OrdersWindow: time.Hour})
		const acct = "https://ca/acct/2"
		unseen, err := small.Reserve(ctx, acct, []string{"a.org"})
		if err != nil {
			t.Fatal(err)
		}
		if err := small.Settle(ctx, unseen, false, false); err != nil {
			t.Fatal(err)
		}
		seen, err := small.Reserve(ctx, acct, []string{"a.org"})
		if err != nil {
			t.Fatal(err)
		}
		if err := small.Settle(ctx, seen, true, false); err != nil {
			t.Fatal(err)
		}
		if n, _ := small.BudgetUse(ctx, "order", acct); n != 1 {
			t.Errorf("orders counted = %d; want 1 (the unseen one given back)", n)
		}
		if n, _ := small.BudgetUse(ctx, "cert", "a.org"); n != 0 {
			t.Errorf("certificates counted = %d; want 0 (none issued)", n)
		}
		for range 2 {
			if _, err := small.Reserve(ctx, acct, []string{"b.org"}); err != nil {
				t.Fatal(err)
			}
		}
		_, err = small.Reserve(ctx, acct, []string{"c.org"})
		var de *models.BudgetDeniedError
		if !errors.As(err, &de) || de.Limit != "orders per account" {
			t.Errorf("fourth order in the hour: %v; want denied by orders per account", err)
		}
	})
}

// Concurrent reservations never exceed the limit: on PostgreSQL through the
// advisory locks, on SQLite through its single connection.
func TestBudgetConcurrent(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		cs := certStore(t, s, keyRing(t, keySpec(t, "k1")), models.BudgetLimits{CertsPerDomain: 20, OrdersPerAccount: 1000})
		const n = 64
		var wg sync.WaitGroup
		var mu sync.Mutex
		granted, denied := 0, 0
		var failures []error
		start := time.Now()
		for i := range n {
			wg.Go(func() {
				// Two registered domains per order, in either order: locks are
				// taken sorted, so no deadlock.
				domains := []string{"example.com", "example.org"}
				if i%2 == 1 {
					domains = []string{"example.org", "example.com"}
				}
				_, err := cs.Reserve(ctx, fmt.Sprintf("acct-%d", i%4), domains)
				var de *models.BudgetDeniedError
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					granted++
				case errors.As(err, &de):
					denied++
				default:
					failures = append(failures, err)
				}
			})
		}
		wg.Wait()
		t.Logf("%d concurrent reservations: %d granted, %d denied in %v", n, granted, denied, time.Since(start))
		if len(failures) > 0 {
			t.Fatalf("%d reservations failed: %v", len(failures), failures[0])
		}
		used, _ := cs.BudgetUse(ctx, "cert", "example.com")
		if granted != 20 || denied != n-20 || used != 20 {
			t.Errorf("granted %d, denied %d, ledger %d; want 20, %d, 20", granted, denied, used, n-20)
		}
	})
}

// TestCertificateExpiries lists the certificate of every live site, for the
// expiry metric: not a site whose attempts all failed, not a deleted site.
func TestCertificateExpiries(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, _ := setupClock(t, db)
		cs := certStore(t, s, keyRing(t, keySpec(t, "k1")), models.BudgetLimits{})
		ten := tenant(t, s, "alpha")
		a, b, d, e := activeSite(t, s, ten, "a.example"), activeSite(t, s, ten, "b.example"), activeSite(t, s, ten, "d.example"), activeSite(t, s, ten, "e.example")
		up := issuedCert(d, epoch.Add(10*24*time.Hour))
		up.Source = models.SourceUpload
		for _, r := range []models.SiteCertificate{issuedCert(a, epoch.Add(40*24*time.Hour)), up, issuedCert(e, epoch.Add(5*24*time.Hour))} {
			if err := cs.PutCertificate(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		if err := cs.RecordCertificateError(ctx, b, "ca_refused", "no", epoch.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := db.NewUpdate().Table("sites").Set("status = ?", models.SiteStatusDeleted).Where("id = ?", e).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		got, err := s.CertificateExpiries(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]models.CertificateExpiry{
			a: {SiteID: a, Source: models.SourceACME, NotAfter: epoch.Add(40 * 24 * time.Hour)},
			d: {SiteID: d, Source: models.SourceUpload, NotAfter: epoch.Add(10 * 24 * time.Hour)},
		}
		if len(got) != len(want) {
			t.Fatalf("expiries = %+v, want a's and d's only", got)
		}
		for _, g := range got {
			w, ok := want[g.SiteID]
			if !ok || g.Source != w.Source || !g.NotAfter.Equal(w.NotAfter) {
				t.Errorf("expiry %+v, want %+v", g, w)
			}
		}
	})
}
