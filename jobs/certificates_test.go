package jobs_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/certs"
	"github.com/chomhq/chom/certs/acme"
	"github.com/chomhq/chom/certs/seal"
	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/tlstest"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
	"github.com/chomhq/chom/workers"
	"github.com/chomhq/chom/workers/limits"
)

// fakeIssuer issues from a throwaway CA, or fails with the next queued error.
type fakeIssuer struct {
	tb  testing.TB
	ca  *tlstest.CA
	mu  sync.Mutex
	err []error
	got []acme.Request
	// onIssue, when set, runs at the start of each Issue.
	onIssue func()
}

func (f *fakeIssuer) failNext(errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = append(f.err, errs...)
}

func (f *fakeIssuer) Issue(_ context.Context, r acme.Request) (*certs.Certificate, error) {
	if f.onIssue != nil {
		f.onIssue()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, r)
	if len(f.err) > 0 {
		err := f.err[0]
		f.err = f.err[1:]
		return nil, err
	}
	leaf := f.ca.Issue(f.tb, r.Domains, tlstest.LeafOptions{})
	return certs.Parse(leaf.Cert.ChainPEM, leaf.Cert.KeyPEM)
}

func (f *fakeIssuer) RenewalWindow(context.Context, *x509.Certificate) (*certs.Window, error) {
	return nil, nil
}

func (f *fakeIssuer) requests() []acme.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]acme.Request(nil), f.got...)
}

// fakeDeployer records deploys, or refuses them while refuse is set.
type fakeDeployer struct {
	mu      sync.Mutex
	deploys []drivers.TLSOptions
	serials []string
	refuse  error
	// failOnce, when set, fails the next deploy only.
	failOnce error
}

func (d *fakeDeployer) PutChallenge(context.Context, drivers.SiteSpec, string, string) error {
	return nil
}
func (d *fakeDeployer) RemoveChallenge(context.Context, drivers.SiteSpec, string) error { return nil }
func (d *fakeDeployer) RemoveCertificate(context.Context, drivers.SiteSpec) error       { return nil }

func (d *fakeDeployer) DeployCertificate(_ context.Context, _ drivers.SiteSpec, c drivers.TLSCertificate, o drivers.TLSOptions) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.refuse != nil {
		return d.refuse
	}
	if err := d.failOnce; err != nil {
		d.failOnce = nil
		return err
	}
	cert, err := certs.Parse(c.ChainPEM, c.KeyPEM)
	if err != nil {
		return fmt.Errorf("%w: %w", drivers.ErrInvalidSpec, err)
	}
	d.deploys = append(d.deploys, o)
	d.serials = append(d.serials, cert.Serial)
	return nil
}

func (d *fakeDeployer) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.deploys)
}

type certBundle struct {
	*domainBundle
	db      *bun.DB
	certs   *models.CertificateStore
	issuer  *fakeIssuer
	deploy  *fakeDeployer
	handler *jobs.IssueCertificate
}

// setupCertificates is setupDomains with certificates on: the provision
// starts an issuance, handled by the certificate:issue job over a fake CA
// and a fake server.
func setupCertificates(t *testing.T, db *bun.DB) *certBundle {
	t.Helper()
	b := &certBundle{domainBundle: setupDomains(t, db, models.VerificationContested, time.Second, nil), db: db,
		issuer: &fakeIssuer{tb: t, ca: tlstest.NewCA(t)}, deploy: &fakeDeployer{}}
	key := make([]byte, 32)
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
	log := slog.New(slog.DiscardHandler)
	if b.handler, err = jobs.NewIssueCertificate(jobs.IssueCertificateConfig{Store: b.store, Certs: b.certs,
		Issuer: b.issuer, Deployer: b.deploy, Notifier: jobs.NopNotifier{}, Logger: log}); err != nil {
		t.Fatal(err)
	}
	deps := jobs.Deps{Store: b.store, Provisioner: b.prov, Notifier: jobs.NopNotifier{}, Logger: log, Enqueuer: b.enq,
		IssueCertificates: true}
	prov, err := jobs.NewProvisionSite(deps)
	if err != nil {
		t.Fatal(err)
	}
	b.sites[queue.TypeSiteProvision] = prov
	b.sites[queue.TypeCertificateIssue] = b.handler
	return b
}

func (b *certBundle) createHTTPS(t *testing.T, tenantID, domain, https string, aliases ...string) string {
	t.Helper()
	acc, err := b.store.CreateSite(t.Context(), models.CreateSiteParams{Accept: models.Accept{TenantID: tenantID, Actor: "tok"},
		Domain: domain, Aliases: aliases, SiteType: "html", HTTPS: https})
	if err != nil {
		t.Fatalf("CreateSite(%s): %v", domain, err)
	}
	_ = b.enq.EnqueueOperation(t.Context(), acc.Operation)
	return acc.Operation.TargetID
}

func (b *certBundle) record(t *testing.T, siteID string) *models.SiteCertificate {
	t.Helper()
	rec, err := b.certs.CertificateBySite(t.Context(), siteID)
	if err != nil {
		t.Fatalf("certificate of %s: %v", siteID, err)
	}
	return rec
}

func (b *certBundle) op(t *testing.T, id string) *models.Operation {
	t.Helper()
	op, err := b.store.OperationByID(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return op
}

func (b *certBundle) events(t *testing.T, eventType string) int {
	t.Helper()
	n, err := b.db.NewSelect().Table("outbox_events").Where("event_type = ?", eventType).Count(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// certOps lists the site's certificate.issue operations.
func (b *certBundle) certOps(t *testing.T, siteID string) []models.Operation {
	t.Helper()
	var ops []models.Operation
	if err := b.db.NewSelect().Model(&ops).Where("target_id = ? AND op_type = ?", siteID, models.OpTypeCertificateIssue).
		OrderExpr("created_at").Scan(t.Context()); err != nil {
		t.Fatal(err)
	}
	return ops
}

// TestAutoIssueAfterProvision: a site provisioned on a platform with
// certificates gets its first certificate without asking: the provision
// records the issuance in its own transaction, the job issues for the domain
// and its aliases, deploys with the site's HSTS choice, records the
// certificate sealed and writes one site.certificate_issued.v1; a redelivery
// changes nothing; a site that opted out gets none.
func TestAutoIssueAfterProvision(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		b := setupCertificates(t, db)
		ten, err := b.store.EnsureTenant(ctx, "acme-shop")
		if err != nil {
			t.Fatal(err)
		}
		site := b.createHTTPS(t, ten.ID, "shop.example", "", "www.shop.example")
		off := b.createHTTPS(t, ten.ID, "plain.example", models.HTTPSOff)
		b.runAll(t) // provisions, then the issuance they enqueued (each delivered twice)

		if ops := b.certOps(t, off); len(ops) != 0 {
			t.Errorf("a site that opted out got %d certificate operations", len(ops))
		}
		if _, err := b.certs.CertificateBySite(ctx, off); !errors.Is(err, models.ErrNotFound) {
			t.Errorf("a site that opted out has a certificate record: %v", err)
		}
		ops := b.certOps(t, site)
		if len(ops) != 1 || ops[0].Status != models.OpSucceeded {
			t.Fatalf("certificate operations of the site: %+v; want one succeeded", ops)
		}
		rec := b.record(t, site)
		if rec.Status != models.CertificateIssued || rec.Source != models.SourceACME || len(rec.KeyPEM) == 0 ||
			fmt.Sprint(rec.Domains) != "[shop.example www.shop.example]" || rec.RenewAfter == nil || rec.LastErrorCode != "" {
			t.Errorf("record = %+v", rec)
		}
		if want := rec.NotAfter.Add(-certs.RenewBefore); rec.RenewAfter.After(want) || rec.RenewAfter.Before(want.Add(-certs.MaxJitter)) {
			t.Errorf("renew_after %s, want within the jitter before %s", rec.RenewAfter, want)
		}
		if reqs := b.issuer.requests(); len(reqs) != 1 || reqs[0].Challenge != acme.HTTP01 || reqs[0].HTTP01 == nil || reqs[0].Replaces != nil {
			t.Errorf("issuer requests %+v; want one HTTP-01 order (the redelivery orders nothing)", reqs)
		}
		if b.deploy.count() != 1 || b.deploy.serials[0] != rec.Serial || b.deploy.deploys[0].HSTS {
			t.Errorf("deploys %v %v; want one of serial %s without HSTS", b.deploy.deploys, b.deploy.serials, rec.Serial)
		}
		if s := b.site(t, site); s.OperationID != nil || s.Status != models.SiteStatusActive {
			t.Errorf("site after issuance: %s, lock %v", s.Status, s.OperationID)
		}
		if n := b.events(t, "site.certificate_issued.v1"); n != 1 {
			t.Errorf("%d certificate_issued events, want 1", n)
		}

		// The tenant asks again, turning HSTS on: the new order replaces the
		// current certificate (ARI) and the deploy carries HSTS.
		on := true
		acc, err := b.store.StartCertificateIssue(ctx, models.Accept{TenantID: ten.ID, Actor: "tok"}, site, models.IssueRequest{HSTS: &on})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.store.StartCertificateIssue(ctx, models.Accept{TenantID: ten.ID, Actor: "tok"}, site, models.IssueRequest{}); !isConflict(err, acc.Operation.ID) {
			t.Errorf("a second issuance while one is unfinished: %v; want a conflict naming %s", err, acc.Operation.ID)
		}
		if err := b.run(t, acc.Operation); err != nil {
			t.Fatal(err)
		}
		reqs := b.issuer.requests()
		if len(reqs) != 2 || reqs[1].Replaces == nil || hex.EncodeToString(reqs[1].Replaces.SerialNumber.Bytes()) != rec.Serial {
			t.Errorf("the re-issue does not name the certificate it replaces: %+v", reqs)
		}
		if !b.deploy.deploys[1].HSTS || b.record(t, site).Serial == rec.Serial {
			t.Errorf("re-issue: deploy %+v, serial still %s", b.deploy.deploys[1], rec.Serial)
		}
	})
}

func isConflict(err error, opID string) bool {
	var c *models.ConflictError
	return errors.As(err, &c) && c.OperationID == opID
}

// TestIssueFailures: every way an issuance can fail, and what it leaves.
// Nothing reaches the server unless a certificate was issued; a site with a
// certificate keeps it; a retry later succeeds.
func TestIssueFailures(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		b := setupCertificates(t, db)
		ten, err := b.store.EnsureTenant(ctx, "failures")
		if err != nil {
			t.Fatal(err)
		}
		accept := models.Accept{TenantID: ten.ID, Actor: "tok"}
		// Each case issues for a fresh site (a first issuance) after its
		// provision, with the auto-issue failing as the case says.
		firstIssue := func(t *testing.T, domain string, errs ...error) (string, *models.Operation) {
			t.Helper()
			b.issuer.failNext(errs...)
			site := b.createHTTPS(t, ten.ID, domain, "")
			for _, op := range b.enq.take() {
				if err := b.run(t, op); err != nil {
					t.Fatal(err)
				}
			}
			ops := b.enq.take()
			if len(ops) != 1 || ops[0].Type != models.OpTypeCertificateIssue {
				t.Fatalf("after the provision: %v", ops)
			}
			return site, ops[0]
		}
		// A direct call is the last attempt (nothing retries it).
		final := func(op *models.Operation) error { return b.run(t, op) }

		t.Run("CA refuses: failed at once, the site serves plain HTTP", func(t *testing.T) {
			deploys := b.deploy.count()
			site, op := firstIssue(t, "refused.example", &acme.Error{Code: acme.CodeCARefused, Message: "the CA will not issue for refused.example"})
			if err := final(op); err == nil || workers.IsFailure(err) == false {
				t.Fatalf("attempt: %v; want a final failure", err)
			}
			wantFailed(t, b.op(t, op.ID), acme.CodeCARefused, "will not issue")
			rec := b.record(t, site)
			if rec.Status != models.CertificateFailed || rec.LastErrorCode != acme.CodeCARefused || rec.RenewAfter == nil ||
				rec.RenewAfter.Before(time.Now().Add(23*time.Hour)) {
				t.Errorf("record %+v; want failed, retried by the sweep in a day", rec)
			}
			if b.deploy.count() != deploys {
				t.Error("a refused issuance reached the server")
			}
			if s := b.site(t, site); s.OperationID != nil {
				t.Errorf("the site is still locked by %s", *s.OperationID)
			}
			// A retry later succeeds.
			acc, err := b.store.StartCertificateIssue(ctx, accept, site, models.IssueRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if rec := b.record(t, site); rec.Status != models.CertificatePending {
				t.Errorf("a new issuance shows %s, want pending", rec.Status)
			}
			if err := b.run(t, acc.Operation); err != nil {
				t.Fatal(err)
			}
			if rec := b.record(t, site); rec.Status != models.CertificateIssued || rec.LastErrorCode != "" {
				t.Errorf("after the retry: %+v", rec)
			}
		})

		t.Run("CA unreachable: retried, noted, then failed on the last attempt", func(t *testing.T) {
			down := &acme.Error{Code: acme.CodeCAUnreachable, Message: "the CA did not answer", Temporary: true}
			site, op := firstIssue(t, "flaky.example", down, down)
			// Under asynq, one retry allowed: the first attempt fails and
			// notes the error, the second (the last) fails the operation.
			var noted string
			b.issuer.onIssue = func() {
				if rec, err := b.certs.CertificateBySite(ctx, site); err == nil {
					noted = rec.Status + "/" + rec.LastErrorCode
				}
			}
			b.runUnderAsynq(t, op, 1)
			b.issuer.onIssue = nil
			if noted != models.CertificatePending+"/"+acme.CodeCAUnreachable {
				t.Errorf("between the attempts the record was %s; want pending with the error noted", noted)
			}
			wantFailed(t, b.op(t, op.ID), acme.CodeCAUnreachable)
			if n := b.events(t, "site.certificate_failed.v1"); n < 1 {
				t.Error("no certificate_failed event")
			}
		})

		t.Run("budget spent: deferred to its time, no retry spent, nothing failed", func(t *testing.T) {
			until := time.Now().Add(3 * time.Hour).Truncate(time.Second)
			site, op := firstIssue(t, "burst.example", &acme.Error{Code: acme.CodeDeferred, Temporary: true, RetryAt: until,
				Message: "the rate-limit budget is spent until later"})
			err := final(op) // even on the last attempt
			if err == nil || workers.IsFailure(err) {
				t.Fatalf("deferral: %v; want a deferral (no retry spent)", err)
			}
			var ra interface{ RetryAt() time.Time }
			if !errors.As(err, &ra) || !ra.RetryAt().Equal(until) {
				t.Errorf("deferral %v names no time or the wrong one", err)
			}
			if d := workers.RetryDelay(time.Second, time.Minute, 10*time.Second)(8, err, nil); d < 2*time.Hour {
				t.Errorf("the worker would run it again in %s, before the budget has room", d)
			}
			if got := b.op(t, op.ID); got.Status != models.OpRunning {
				t.Errorf("deferred operation is %s, want running", got.Status)
			}
			rec := b.record(t, site)
			if rec.Status != models.CertificatePending || rec.LastErrorCode != acme.CodeDeferred {
				t.Errorf("record %+v; want pending, deferred", rec)
			}
			if s := b.site(t, site); s.OperationID != nil {
				t.Error("a deferred issuance holds the site's lock")
			}
			// The budget has room again: the same operation issues.
			if err := b.run(t, op); err != nil {
				t.Fatal(err)
			}
			if rec := b.record(t, site); rec.Status != models.CertificateIssued {
				t.Errorf("after the deferral: %s", rec.Status)
			}
		})

		t.Run("site busy: the deploy waits without spending a retry", func(t *testing.T) {
			site, op := firstIssue(t, "busy.example")
			// Another operation (a backup, a restore) holds the site.
			other := models.NewID(models.PrefixOperation)
			if err := b.store.LockSiteForDeploy(ctx, site, other); err != nil {
				t.Fatal(err)
			}
			deploys := b.deploy.count()
			err := final(op)
			if err == nil || workers.IsFailure(err) || !errors.Is(err, drivers.ErrDeferred) {
				t.Fatalf("deploy beside another operation: %v; want a deferral", err)
			}
			if b.deploy.count() != deploys {
				t.Error("deployed while another operation held the site")
			}
			if s := b.site(t, site); s.OperationID == nil || *s.OperationID != other {
				t.Errorf("the other operation's lock was taken: %v", s.OperationID)
			}
			if err := b.store.UnlockSite(ctx, site, other); err != nil {
				t.Fatal(err)
			}
			if err := b.run(t, op); err != nil {
				t.Fatal(err)
			}
			if len(b.issuer.requests()) == 0 || b.record(t, site).Status != models.CertificateIssued {
				t.Error("not issued once the site was free")
			}
		})

		t.Run("server full: deferred before any order exists at the CA", func(t *testing.T) {
			// The worker's wiring: the server's slots (workers/limits on
			// Redis) around the whole order and around the deploy.
			lim, err := limits.New(limits.Config{Redis: redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()}),
				VPSMax: 1, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			slotted, err := jobs.NewIssueCertificate(jobs.IssueCertificateConfig{Store: b.store, Certs: b.certs,
				Issuer: b.issuer, Deployer: b.deploy, Slots: lim.Guard, Notifier: jobs.NopNotifier{}, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			b.sites[queue.TypeCertificateIssue] = slotted
			t.Cleanup(func() { b.sites[queue.TypeCertificateIssue] = b.handler })

			site, op := firstIssue(t, "full.example")
			vps := *b.site(t, site).VPSID
			held, err := lim.Acquire(ctx, vps, "another-tenant") // a provision on the same server
			if err != nil {
				t.Fatal(err)
			}
			orders, deploys := len(b.issuer.requests()), b.deploy.count()
			err = final(op)
			if err == nil || workers.IsFailure(err) || !errors.Is(err, drivers.ErrDeferred) {
				t.Fatalf("issuance on a full server: %v; want a deferral", err)
			}
			if n := len(b.issuer.requests()) - orders; n != 0 {
				t.Errorf("%d orders created at the CA while the server was full; want none", n)
			}
			if b.deploy.count() != deploys || b.op(t, op.ID).Terminal() {
				t.Error("deployed or finished while the server was full")
			}
			held.Release(ctx)
			if err := b.run(t, op); err != nil {
				t.Fatal(err)
			}
			if n := len(b.issuer.requests()) - orders; n != 1 || b.record(t, site).Status != models.CertificateIssued {
				t.Errorf("once the server was free: %d orders, record %s; want 1 order, issued", n, b.record(t, site).Status)
			}
			if n, _ := lim.InUse(ctx, limits.KindVPS, vps); n != 0 {
				t.Errorf("%d slots of the server still held after the issuance", n)
			}
		})

		t.Run("nginx refuses the configuration: failed, the old certificate stays", func(t *testing.T) {
			site, op := firstIssue(t, "renew.example")
			if err := b.run(t, op); err != nil {
				t.Fatal(err)
			}
			old := b.record(t, site)
			acc, err := b.store.StartCertificateIssue(ctx, accept, site, models.IssueRequest{})
			if err != nil {
				t.Fatal(err)
			}
			b.deploy.mu.Lock()
			b.deploy.refuse = fmt.Errorf("nginx -t: %w", drivers.ErrConfigRejected)
			b.deploy.mu.Unlock()
			defer func() { b.deploy.mu.Lock(); b.deploy.refuse = nil; b.deploy.mu.Unlock() }()
			if err := final(acc.Operation); err == nil {
				t.Fatal("a rejected deploy succeeded")
			}
			wantFailed(t, b.op(t, acc.Operation.ID), jobs.CodeDeployRejected, "previous configuration")
			rec := b.record(t, site)
			if rec.Status != models.CertificateIssued || rec.Serial != old.Serial || rec.LastErrorCode != jobs.CodeDeployRejected {
				t.Errorf("record after a rejected renewal: %+v; want the old certificate with the error", rec)
			}
			if s := b.site(t, site); s.OperationID != nil {
				t.Errorf("the site is still locked by %s", *s.OperationID)
			}
		})

		t.Run("deploy fails once: the retry installs the staged certificate without ordering again", func(t *testing.T) {
			site, op := firstIssue(t, "staged.example")
			b.deploy.mu.Lock()
			b.deploy.failOnce = errors.New("ssh: connection reset by peer")
			b.deploy.mu.Unlock()
			orders := len(b.issuer.requests())
			b.runUnderAsynq(t, op, 2)
			if got := b.op(t, op.ID); got.Status != models.OpSucceeded {
				t.Fatalf("operation %s, want succeeded on the retry", got.Status)
			}
			if n := len(b.issuer.requests()) - orders; n != 1 {
				t.Errorf("%d orders for one certificate; the retry must install the staged one", n)
			}
			if n, err := b.db.NewSelect().Table("certificate_uploads").Where("operation_id = ?", op.ID).Count(ctx); err != nil || n != 0 {
				t.Errorf("%d staged certificates left after the install (%v)", n, err)
			}
			if rec := b.record(t, site); rec.Status != models.CertificateIssued || rec.Serial != b.deploy.serials[len(b.deploy.serials)-1] {
				t.Errorf("record %+v; want the staged certificate issued", rec)
			}
		})

		t.Run("cancelled before it ran: nothing left, no event", func(t *testing.T) {
			site, op := firstIssue(t, "cancel.example")
			failed := b.events(t, "site.certificate_failed.v1")
			res, err := b.store.CancelOperation(ctx, ten.ID, op.ID)
			if err != nil || !res.Immediate {
				t.Fatalf("cancel: %+v, %v; want immediate", res, err)
			}
			if _, err := b.certs.CertificateBySite(ctx, site); !errors.Is(err, models.ErrNotFound) {
				t.Errorf("a cancelled first issuance left a record: %v", err)
			}
			if b.events(t, "site.certificate_failed.v1") != failed {
				t.Error("a cancel wrote a certificate_failed event")
			}
			if err := b.run(t, op); err != nil { // a late delivery of its task
				t.Fatal(err)
			}
			if got := b.op(t, op.ID); got.Status != models.OpCancelled {
				t.Errorf("operation %s after a late delivery, want cancelled", got.Status)
			}
		})

		t.Run("site deleted before the job ran: failed, target_missing", func(t *testing.T) {
			site, op := firstIssue(t, "gone.example")
			del, err := b.store.DeleteSite(ctx, accept, site)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.run(t, del.Operation); err != nil {
				t.Fatal(err)
			}
			if err := final(op); err == nil {
				t.Fatal("issued for a deleted site")
			}
			wantFailed(t, b.op(t, op.ID), "target_missing")
			if _, err := b.certs.CertificateBySite(ctx, site); !errors.Is(err, models.ErrNotFound) {
				t.Errorf("a deleted site keeps a certificate record: %v", err)
			}
		})
	})
}

// runUnderAsynq runs op's task on a real asynq server (on an in-process
// Redis) with maxRetry retries a few milliseconds apart, until op has
// finished.
func (b *certBundle) runUnderAsynq(t *testing.T, op *models.Operation, maxRetry int) {
	t.Helper()
	mr := miniredis.RunT(t)
	opt := asynq.RedisClientOpt{Addr: mr.Addr()}
	task, _, err := queue.TaskForOperation(op)
	if err != nil {
		t.Fatal(err)
	}
	c := asynq.NewClient(opt)
	defer c.Close()
	if _, err := c.EnqueueContext(t.Context(), task, asynq.MaxRetry(maxRetry)); err != nil {
		t.Fatal(err)
	}
	srv := asynq.NewServer(opt, asynq.Config{Concurrency: 1, IsFailure: workers.IsFailure,
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return 10 * time.Millisecond },
		Logger:         quietAsynq{}, LogLevel: asynq.FatalLevel})
	mux := asynq.NewServeMux()
	mux.Handle(queue.TypeCertificateIssue, b.handler)
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	deadline := time.Now().Add(30 * time.Second)
	for !b.op(t, op.ID).Terminal() {
		if time.Now().After(deadline) {
			t.Fatalf("operation %s did not finish under asynq", op.ID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// quietAsynq drops asynq's own log lines.
type quietAsynq struct{}

func (quietAsynq) Debug(...any) {}
func (quietAsynq) Info(...any)  {}
func (quietAsynq) Warn(...any)  {}
func (quietAsynq) Error(...any) {}
func (quietAsynq) Fatal(...any) {}
