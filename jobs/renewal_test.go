package jobs_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/certs"
	"github.com/chomhq/chom/certs/seal"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/models"
)

// renewClock is the sweep's and the store's clock: the wall clock moved by
// an offset the test sets (Pebble's answers follow the wall clock).
type renewClock struct {
	mu     sync.Mutex
	fixed  time.Time // when set, the clock stands still there
	offset time.Duration
}

func (c *renewClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.fixed.IsZero() {
		return c.fixed.Add(c.offset)
	}
	return time.Now().Add(c.offset)
}

func (c *renewClock) set(offset time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset = offset
}

// sweepStore is the sweep's store, as the assembly builds it.
type sweepStore struct {
	*models.Store
	*models.CertificateStore
}

// failingEnqueuer refuses every enqueue (Redis is down).
type failingEnqueuer struct{}

func (failingEnqueuer) EnqueueOperation(context.Context, *models.Operation) error {
	return errors.New("redis: connection refused")
}

// advisorFunc is a RenewalAdvisor from a function.
type advisorFunc func(ctx context.Context, leaf *x509.Certificate) (*certs.Window, error)

func (f advisorFunc) RenewalWindow(ctx context.Context, leaf *x509.Certificate) (*certs.Window, error) {
	return f(ctx, leaf)
}

type renewBundle struct {
	db     *bun.DB
	store  *models.Store
	certs  *models.CertificateStore
	clk    *renewClock
	enq    *orderedEnqueuer
	tenant string
}

// setupRenewal migrates db and returns a store and certificate store on one
// clock, a tenant and a server.
func setupRenewal(t *testing.T, db *bun.DB, clk *renewClock) *renewBundle {
	t.Helper()
	ctx := t.Context()
	if _, err := models.MigrateUp(ctx, db); err != nil {
		t.Fatal(err)
	}
	b := &renewBundle{db: db, clk: clk, enq: &orderedEnqueuer{}}
	var err error
	if b.store, err = models.New(models.Config{DB: db, Now: clk.Now}); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, seal.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	ring, err := seal.ParseKeys("k1:" + base64.StdEncoding.EncodeToString(key))
	if err != nil {
		t.Fatal(err)
	}
	if b.certs, err = models.NewCertificateStore(models.CertificateStoreConfig{Store: b.store, Ring: ring}); err != nil {
		t.Fatal(err)
	}
	ten, err := b.store.EnsureTenant(ctx, "renewals")
	if err != nil {
		t.Fatal(err)
	}
	b.tenant = ten.ID
	if _, _, err := b.store.RegisterVPS(ctx, models.Accept{}, models.RegisterVPSParams{Hostname: "web1.example", IPAddress: "192.0.2.1",
		SSHPort: 22, Provider: "test", Region: "eu", Allocation: models.AllocationShared, SiteCapacity: 100}); err != nil {
		t.Fatal(err)
	}
	return b
}

// site provisions an active site on domain (HTTPS off: no automatic
// issuance competes with the sweep's).
func (b *renewBundle) site(t *testing.T, domain string) string {
	t.Helper()
	ctx := t.Context()
	acc, err := b.store.CreateSite(ctx, models.CreateSiteParams{Accept: models.Accept{TenantID: b.tenant, Actor: "tok_test"},
		Domain: domain, SiteType: "static", HTTPS: models.HTTPSOff})
	if err != nil {
		t.Fatal(err)
	}
	op := acc.Operation
	if _, err := b.store.StartOperation(ctx, op.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.AssignVPS(ctx, op.TargetID); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.store.CompleteProvision(ctx, op.ID, op.TargetID, models.ProvisionedSite{}, nil, nil); err != nil || !ok {
		t.Fatalf("CompleteProvision = %v, %v", ok, err)
	}
	return op.TargetID
}

// put stores cert as siteID's ACME certificate, due at renewAfter.
func (b *renewBundle) put(t *testing.T, siteID string, cert *certs.Certificate, renewAfter time.Time) {
	t.Helper()
	rec := models.SiteCertificate{SiteID: siteID, Status: models.CertificateIssued, Source: models.SourceACME,
		Issuer: cert.Issuer, Domains: cert.Domains, Serial: cert.Serial, NotBefore: &cert.NotBefore, NotAfter: &cert.NotAfter,
		RenewAfter: &renewAfter, ChainPEM: string(cert.ChainPEM), KeyPEM: cert.KeyPEM}
	if err := b.certs.PutCertificate(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
}

// fakeCert is a self-signed certificate of domain valid from notBefore for
// life: what the sweep parses to ask the CA about it.
func fakeCert(t *testing.T, domain string, notBefore time.Time, life time.Duration) *certs.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: domain}, DNSNames: []string{domain},
		NotBefore: notBefore, NotAfter: notBefore.Add(life)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &certs.Certificate{ChainPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Domains: []string{domain},
		Serial: fmt.Sprintf("%x", serial), Issuer: domain, NotBefore: tpl.NotBefore.UTC(), NotAfter: tpl.NotAfter.UTC()}
}

func (b *renewBundle) sweeper(t *testing.T, cfg jobs.RenewSweepConfig) *jobs.RenewSweep {
	t.Helper()
	cfg.Store = sweepStore{b.store, b.certs}
	if cfg.Enqueuer == nil {
		cfg.Enqueuer = b.enq
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Now = b.clk.Now
	h, err := jobs.NewRenewSweep(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func sweepOnce(t *testing.T, h *jobs.RenewSweep) jobs.RenewSweepReport {
	t.Helper()
	rep, err := h.Sweep(t.Context())
	if err != nil {
		t.Fatalf("Sweep: %v (report %+v)", err, rep)
	}
	return rep
}

// renewalsOf returns the sites the enqueued operations renew, checking each
// is a pending certificate.issue with reason renewal.
func renewalsOf(t *testing.T, store *models.Store, ops []*models.Operation) []string {
	t.Helper()
	var sites []string
	for _, op := range ops {
		stored, err := store.OperationByID(t.Context(), op.ID)
		if err != nil {
			t.Fatal(err)
		}
		var p models.CertificatePayload
		if err := json.Unmarshal([]byte(stored.Payload), &p); err != nil {
			t.Fatal(err)
		}
		if stored.Type != models.OpTypeCertificateIssue || stored.Status != models.OpPending || p.Reason != models.IssueRenewal {
			t.Errorf("enqueued %+v (payload %+v); want a pending certificate.issue for a renewal", stored, p)
		}
		sites = append(sites, p.SiteID)
	}
	return sites
}

// TestRenewSweep: the sweep starts the renewals of the due certificates, the
// most overdue first, Batch per sweep, each once; busy sites do not hold
// the head of the list; a failed enqueue is left to the reconciler.
func TestRenewSweep(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		clk := &renewClock{fixed: time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)}
		b := setupRenewal(t, db, clk)
		now := clk.Now()
		life := 90 * 24 * time.Hour
		var due []string
		for i, late := range []time.Duration{3 * time.Hour, 2 * time.Hour, time.Hour} {
			id := b.site(t, fmt.Sprintf("due%d.example", i))
			b.put(t, id, fakeCert(t, "x.example", now.Add(-60*24*time.Hour), life), now.Add(-late))
			due = append(due, id)
		}
		later := b.site(t, "later.example")
		b.put(t, later, fakeCert(t, "later.example", now.Add(-10*24*time.Hour), life), now.Add(3*time.Hour))
		expired := b.site(t, "expired.example")
		b.put(t, expired, fakeCert(t, "expired.example", now.Add(-91*24*time.Hour), life), now.Add(-31*24*time.Hour))

		h := b.sweeper(t, jobs.RenewSweepConfig{Batch: 2})
		rep := sweepOnce(t, h)
		if got := renewalsOf(t, b.store, b.enq.take()); rep.Due != 2 || rep.Started != 2 || len(got) != 2 || got[0] != expired || got[1] != due[0] {
			t.Fatalf("first sweep %+v started %v; want the expired certificate then the most overdue", rep, got)
		}
		rep = sweepOnce(t, h)
		if got := renewalsOf(t, b.store, b.enq.take()); rep.Started != 2 || len(got) != 2 || got[0] != due[1] || got[1] != due[2] {
			t.Fatalf("second sweep %+v started %v; want the next two", rep, got)
		}
		if rep = sweepOnce(t, h); rep.Due != 0 || rep.Started != 0 {
			t.Fatalf("third sweep %+v; want nothing due", rep)
		}

		// A site due after them, which the busy ones must not starve.
		behind := b.site(t, "behind.example")
		b.put(t, behind, fakeCert(t, "behind.example", now.Add(-60*24*time.Hour), life), now.Add(90*time.Minute))

		// Two hours on, the renewals still run: due again, but busy.
		clk.set(2 * time.Hour)
		rep = sweepOnce(t, h)
		if rep.Due != 2 || rep.Skipped != 2 || rep.Started != 0 || len(b.enq.take()) != 0 {
			t.Errorf("sweep while the renewals run %+v; want 2 due, skipped", rep)
		}
		// The busy ones moved out of the way: the rest of the list comes next.
		rep = sweepOnce(t, h)
		if rep.Due != 2 || rep.Skipped != 2 {
			t.Errorf("next sweep %+v; want the 2 other busy ones", rep)
		}
		rep = sweepOnce(t, h)
		if got := renewalsOf(t, b.store, b.enq.take()); rep.Due != 1 || rep.Started != 1 || len(got) != 1 || got[0] != behind {
			t.Errorf("third sweep %+v started %v; want the site behind the busy ones (they moved an hour on)", rep, got)
		}
		if rep = sweepOnce(t, h); rep.Due != 0 {
			t.Errorf("last sweep %+v; want nothing due", rep)
		}
		for _, id := range append(due, expired, later, behind) {
			if n, err := b.db.NewSelect().Table("operations").Where("target_id = ?", id).
				Where("op_type = ?", models.OpTypeCertificateIssue).Count(ctx); err != nil || n > 1 {
				t.Errorf("site %s: %d certificate.issue operations (%v); want at most 1", id, n, err)
			}
		}
		st := h.Stats()
		t.Logf("sweeps in all: %+v", st)
		if st.Started != 5 || st.Skipped != 4 {
			t.Errorf("stats %+v; want 5 started, 4 skipped", st)
		}

		// Fault: Redis refuses the enqueue. The renewal is recorded all the
		// same (the ledger: one pending certificate.issue of the site), and
		// the reconciler, which lists it, enqueues it.
		t.Log("injecting: every enqueue fails (Redis down) during a sweep with one renewal due")
		clk.set(0)
		lost := b.site(t, "lost.example")
		b.put(t, lost, fakeCert(t, "lost.example", now.Add(-61*24*time.Hour), life), now.Add(-time.Minute))
		down := b.sweeper(t, jobs.RenewSweepConfig{Enqueuer: failingEnqueuer{}})
		rep, err := down.Sweep(ctx)
		if err != nil || rep.Started != 1 || rep.EnqueueFailed != 1 {
			t.Fatalf("sweep with Redis down = %+v, %v; want 1 started, its enqueue failed, no error", rep, err)
		}
		pending, err := b.store.UnfinishedOperations(ctx, clk.Now().Add(time.Minute), 100)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, op := range pending {
			found = found || (op.TargetID == lost && op.Type == models.OpTypeCertificateIssue)
		}
		if !found {
			t.Error("the renewal whose enqueue failed is not among the reconciler's unfinished operations")
		}
	})
}

// TestRenewSweepARI: the CA's renewal window makes a certificate due at the
// next sweep (a window already past: revoked), or leaves it (a later
// window); its Retry-After spaces the questions; a CA that fails is logged
// and the renewals go on; a CA that keeps failing is left alone for the rest
// of the sweep.
func TestRenewSweepARI(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		clk := &renewClock{fixed: time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)}
		b := setupRenewal(t, db, clk)
		now := clk.Now()
		life := 90 * 24 * time.Hour
		windows := map[string]func() (*certs.Window, error){}
		var mu sync.Mutex
		asked := map[string]int{}
		advisor := advisorFunc(func(_ context.Context, leaf *x509.Certificate) (*certs.Window, error) {
			mu.Lock()
			defer mu.Unlock()
			asked[leaf.Subject.CommonName]++
			return windows[leaf.Subject.CommonName]()
		})
		ids := map[string]string{}
		for _, name := range []string{"revoked", "later", "failing", "none", "due"} {
			ids[name] = b.site(t, name+".example")
			b.put(t, ids[name], fakeCert(t, name, now.Add(-10*24*time.Hour), life), now.Add(50*24*time.Hour))
		}
		windows["revoked"] = func() (*certs.Window, error) {
			return &certs.Window{Start: now.Add(-2 * time.Hour), End: now.Add(-time.Hour), RetryAfter: time.Hour}, nil
		}
		windows["later"] = func() (*certs.Window, error) {
			return &certs.Window{Start: now.Add(60 * 24 * time.Hour), End: now.Add(62 * 24 * time.Hour), RetryAfter: 12 * time.Hour}, nil
		}
		windows["failing"] = func() (*certs.Window, error) { return nil, errors.New("acme: renewal info: 503") }
		windows["none"] = func() (*certs.Window, error) { return nil, nil }
		windows["due"] = func() (*certs.Window, error) {
			return &certs.Window{Start: now.Add(-2 * time.Hour), End: now}, nil
		}

		h := b.sweeper(t, jobs.RenewSweepConfig{Advisor: advisor})
		rep := sweepOnce(t, h)
		got := renewalsOf(t, b.store, b.enq.take())
		t.Logf("first sweep: %+v", rep)
		if rep.ARIChecked != 5 || rep.ARIErrors != 1 || rep.Started != 2 || len(got) != 2 {
			t.Fatalf("first sweep %+v started %v; want 5 asked, 1 error, 2 started (revoked, due)", rep, got)
		}
		for _, id := range got {
			if id != ids["revoked"] && id != ids["due"] {
				t.Errorf("started %s; want only revoked and due", id)
			}
		}
		// Asked again only when the time (6 h, or the CA's longer
		// Retry-After: 12 h for "later") has come.
		for _, step := range []struct {
			at   time.Duration
			want int
		}{{time.Hour, 0}, {6*time.Hour + time.Minute, 4}, {12 * time.Hour, 1}} {
			clk.set(step.at)
			rep := sweepOnce(t, h)
			if rep.ARIChecked != step.want {
				t.Errorf("sweep at +%v asked about %d; want %d (%+v)", step.at, rep.ARIChecked, step.want, rep)
			}
		}
		mu.Lock()
		if asked["later"] != 2 || asked["none"] != 2 {
			t.Errorf("asked %v; want later and none twice", asked)
		}
		mu.Unlock()

		// Fault: the CA fails every question. The sweep stops asking after
		// 10 and still starts what is due on CHOM's own time.
		t.Log("injecting: the CA's renewal information fails for 21 certificates, one of them due")
		clk.set(0)
		for i := range 20 {
			id := b.site(t, fmt.Sprintf("down%02d.example", i))
			b.put(t, id, fakeCert(t, "down", now.Add(-10*24*time.Hour), life), now.Add(50*24*time.Hour))
		}
		duenow := b.site(t, "duenow.example")
		b.put(t, duenow, fakeCert(t, "duenow", now.Add(-61*24*time.Hour), life), now.Add(-time.Minute))
		windows["down"] = func() (*certs.Window, error) { return nil, errors.New("acme: renewal info: connection refused") }
		windows["duenow"] = windows["down"]
		rep, err := b.sweeper(t, jobs.RenewSweepConfig{Advisor: advisor}).Sweep(ctx)
		t.Logf("sweep with the CA down: %+v", rep)
		if err != nil || rep.ARIErrors < 10 || rep.ARIChecked > 14 || rep.Started != 1 {
			t.Errorf("sweep with the CA down = %+v, %v; want it to stop asking after 10 errors (at most 4 more in flight) and start the due renewal", rep, err)
		}
	})
}
