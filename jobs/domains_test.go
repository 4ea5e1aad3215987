package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/domainverify"
	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// countingProvisioner counts side effects per site, as a server would see them.
type countingProvisioner struct {
	mu           sync.Mutex
	provisions   map[string]int
	deprovisions map[string]int
}

func (p *countingProvisioner) Provision(_ context.Context, s drivers.SiteSpec, _ drivers.ProgressFunc) (drivers.Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.provisions[s.ID]++
	return drivers.Result{DocumentRoot: "/srv/" + s.Domain}, nil
}

func (p *countingProvisioner) Deprovision(_ context.Context, s drivers.SiteSpec) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.deprovisions[s.ID]++
	return nil
}

func (p *countingProvisioner) counts(siteID string) (int, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.provisions[siteID], p.deprovisions[siteID]
}

// orderedEnqueuer keeps the operations enqueued, in order.
type orderedEnqueuer struct {
	mu  sync.Mutex
	ops []*models.Operation
}

func (e *orderedEnqueuer) EnqueueOperation(_ context.Context, op *models.Operation) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ops = append(e.ops, op)
	return nil
}

func (e *orderedEnqueuer) take() []*models.Operation {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.ops
	e.ops = nil
	return out
}

type domainBundle struct {
	store  *models.Store
	dns    *testenv.ChallTestSrv
	prov   *countingProvisioner
	enq    *orderedEnqueuer
	verify *jobs.VerifyDomains
	sites  map[string]asynq.Handler // task type → handler of the site jobs
}

// setupDomains starts a real DNS server and the handlers of site:provision,
// site:deprovision and domain:verify over db, in mode, with checker options
// opts applied.
func setupDomains(t *testing.T, db *bun.DB, mode string, timeout time.Duration, opts func(*domainverify.Config)) *domainBundle {
	t.Helper()
	ctx := t.Context()
	if _, err := models.MigrateUp(ctx, db); err != nil {
		t.Fatal(err)
	}
	b := &domainBundle{dns: testenv.StartChallTestSrv(t), enq: &orderedEnqueuer{},
		prov: &countingProvisioner{provisions: map[string]int{}, deprovisions: map[string]int{}}}
	var err error
	if b.store, err = models.New(models.Config{DB: db, DomainVerification: mode}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.store.RegisterVPS(ctx, models.Accept{}, models.RegisterVPSParams{Hostname: "web1.example", IPAddress: "192.0.2.1",
		SSHPort: 22, Provider: "test", Region: "eu", Allocation: models.AllocationShared, SiteCapacity: 10}); err != nil {
		t.Fatal(err)
	}
	cfg := domainverify.Config{Resolver: b.dns.DNSAddr, HTTPTimeout: time.Second, DNSTimeout: time.Second}
	if opts != nil {
		opts(&cfg)
	}
	checker, err := domainverify.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if b.verify, err = jobs.NewVerifyDomains(jobs.VerifyDomainsConfig{Store: b.store, Checker: checker, Enqueuer: b.enq,
		Notifier: jobs.NopNotifier{}, Logger: log, Timeout: timeout, Backoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	deps := jobs.Deps{Store: b.store, Provisioner: b.prov, Notifier: jobs.NopNotifier{}, Logger: log, Enqueuer: b.enq}
	prov, err := jobs.NewProvisionSite(deps)
	if err != nil {
		t.Fatal(err)
	}
	deprov, err := jobs.NewDeprovisionSite(deps)
	if err != nil {
		t.Fatal(err)
	}
	b.sites = map[string]asynq.Handler{queue.TypeSiteProvision: prov, queue.TypeSiteDeprovision: deprov, queue.TypeDomainVerify: b.verify}
	return b
}

// run delivers op's task to its handler.
func (b *domainBundle) run(t *testing.T, op *models.Operation) error {
	t.Helper()
	task, _, err := queue.TaskForOperation(op)
	if err != nil {
		t.Fatal(err)
	}
	return b.sites[task.Type()].ProcessTask(t.Context(), task)
}

// runAll delivers every enqueued operation's task twice (a redelivery must
// change nothing) until nothing more is enqueued.
func (b *domainBundle) runAll(t *testing.T) {
	t.Helper()
	for ops := b.enq.take(); len(ops) > 0; ops = b.enq.take() {
		for _, op := range ops {
			for range 2 {
				if err := b.run(t, op); err != nil {
					t.Fatalf("run %s %s: %v", op.Type, op.ID, err)
				}
			}
		}
	}
}

func (b *domainBundle) createSite(t *testing.T, tenantID, domain string) *models.Accepted {
	t.Helper()
	acc, err := b.store.CreateSite(t.Context(), models.CreateSiteParams{Accept: models.Accept{TenantID: tenantID, Actor: "tok"},
		Domain: domain, SiteType: "html"})
	if err != nil {
		t.Fatalf("CreateSite(%s): %v", domain, err)
	}
	if !acc.Held {
		_ = b.enq.EnqueueOperation(t.Context(), acc.Operation) // what the ingress does
	}
	return acc
}

// verifySite records a domain.verify of the site and runs it to its end.
func (b *domainBundle) verifySite(t *testing.T, tenantID, siteID string) *models.Operation {
	t.Helper()
	acc, err := b.store.StartVerification(t.Context(), models.Accept{TenantID: tenantID, Actor: "tok"}, siteID)
	if err != nil {
		t.Fatalf("StartVerification: %v", err)
	}
	start := time.Now()
	if err := b.run(t, acc.Operation); err != nil {
		t.Fatalf("verify: %v", err)
	}
	op, err := b.store.OperationByID(t.Context(), acc.Operation.ID)
	if err != nil {
		t.Fatal(err)
	}
	msg := ""
	if op.ErrorMessage != nil {
		msg = *op.ErrorMessage
	}
	t.Logf("verification of %s: %s in %v %s", siteID, op.Status, time.Since(start).Round(time.Millisecond), msg)
	return op
}

func (b *domainBundle) token(t *testing.T, siteID, domain string) string {
	t.Helper()
	claims, err := b.store.SiteClaims(t.Context(), siteID)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range claims {
		if c.Domain == domain {
			return c.Token
		}
	}
	t.Fatalf("site %s has no claim on %s", siteID, domain)
	return ""
}

func (b *domainBundle) site(t *testing.T, id string) *models.Site {
	t.Helper()
	s, err := b.store.SiteByID(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func wantFailed(t *testing.T, op *models.Operation, code string, msgParts ...string) {
	t.Helper()
	if op.Status != models.OpFailed || op.ErrorCode == nil || *op.ErrorCode != code {
		t.Fatalf("operation %s = %s %v; want failed %s", op.ID, op.Status, op.ErrorCode, code)
	}
	for _, p := range msgParts {
		if !strings.Contains(*op.ErrorMessage, p) {
			t.Errorf("message %q lacks %q", *op.ErrorMessage, p)
		}
	}
}

// TestVerifyOwnerTakesBack: the squatter got bigbank.example first and
// serves it; the owner publishes its TXT record and verifies: the squatter's
// site is deprovisioned once and ends pending_verification, the owner's site
// is provisioned once. The squatter then cannot take the proven domain back,
// neither with its own token published at the right name (as a new owner of
// the DNS would) nor with its token under another name.
func TestVerifyOwnerTakesBack(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		b := setupDomains(t, db, models.VerificationContested, 2*time.Second, nil)
		owner, err := b.store.EnsureTenant(ctx, "owner")
		if err != nil {
			t.Fatal(err)
		}
		squatter, err := b.store.EnsureTenant(ctx, "squatter")
		if err != nil {
			t.Fatal(err)
		}
		squat := b.createSite(t, squatter.ID, "bigbank.example")
		b.runAll(t)
		squatSite := squat.Operation.TargetID
		if s := b.site(t, squatSite); s.Status != models.SiteStatusActive {
			t.Fatalf("squatter site %s, want active", s.Status)
		}

		held := b.createSite(t, owner.ID, "bigbank.example")
		ownerSite := held.Operation.TargetID
		if !held.Held {
			t.Fatal("the owner's site on a claimed domain was not held")
		}
		// A held provision delivered anyway does not start.
		if err := b.run(t, held.Operation); !errors.Is(err, asynq.SkipRetry) {
			t.Fatalf("held provision ran: %v", err)
		}
		if p, _ := b.prov.counts(ownerSite); p != 0 {
			t.Fatal("a held provision reached the server")
		}

		if err := b.dns.SetTXT(ctx, domainverify.RecordName("bigbank.example"), b.token(t, ownerSite, "bigbank.example")); err != nil {
			t.Fatal(err)
		}
		op := b.verifySite(t, owner.ID, ownerSite)
		if op.Status != models.OpSucceeded {
			t.Fatalf("owner verification %s", op.Status)
		}
		b.runAll(t)

		if s := b.site(t, ownerSite); s.Status != models.SiteStatusActive {
			t.Errorf("owner site %s, want active", s.Status)
		}
		if p, d := b.prov.counts(ownerSite); p != 1 || d != 0 {
			t.Errorf("owner site provisioned %d, deprovisioned %d; want 1, 0", p, d)
		}
		sq := b.site(t, squatSite)
		if sq.Status != models.SiteStatusPendingVerification || sq.VPSID != nil {
			t.Errorf("squatter site %s on %v, want pending_verification on no server", sq.Status, sq.VPSID)
		}
		if p, d := b.prov.counts(squatSite); p != 1 || d != 1 {
			t.Errorf("squatter site provisioned %d, deprovisioned %d; want 1, 1", p, d)
		}

		// The squatter publishes its own token at the right name and under
		// another one: refused, the proof stays with the owner.
		squatToken := b.token(t, squatSite, "bigbank.example")
		if err := b.dns.SetTXT(ctx, domainverify.RecordName("bigbank.example"), squatToken); err != nil {
			t.Fatal(err)
		}
		op = b.verifySite(t, squatter.ID, squatSite)
		wantFailed(t, op, jobs.CodeDomainNotVerified, "bigbank.example", "verified by another account")

		if err := b.dns.ClearTXT(ctx, domainverify.RecordName("bigbank.example")); err != nil {
			t.Fatal(err)
		}
		if err := b.dns.SetTXT(ctx, domainverify.RecordName("squatter.example"), squatToken); err != nil {
			t.Fatal(err)
		}
		op = b.verifySite(t, squatter.ID, squatSite)
		wantFailed(t, op, jobs.CodeDomainNotVerified, "_chom-challenge.bigbank.example", squatToken)
		if strings.Contains(*op.ErrorMessage, "another account") {
			t.Errorf("a squatter without DNS control was told %q", *op.ErrorMessage)
		}

		b.runAll(t)
		if s := b.site(t, ownerSite); s.Status != models.SiteStatusActive {
			t.Errorf("owner site %s after the squatter's tries", s.Status)
		}
		if s := b.site(t, squatSite); s.Status != models.SiteStatusPendingVerification {
			t.Errorf("squatter site %s after its tries", s.Status)
		}
		if p, d := b.prov.counts(squatSite); p != 1 || d != 1 {
			t.Errorf("squatter site provisioned %d, deprovisioned %d after its tries; want 1, 1", p, d)
		}
	})
}

// TestVerifyHTTP: in strict mode a fresh domain waits for proof; the HTTP
// token served on loopback (reachable with the test-only option) proves it
// and the held provision runs once.
func TestVerifyHTTP(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		var token string
		var mu sync.Mutex
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			if token == "" || r.URL.Path != domainverify.PathPrefix+token {
				http.NotFound(w, r)
				return
			}
			fmt.Fprint(w, token)
		}))
		t.Cleanup(srv.Close)
		_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
		b := setupDomains(t, db, models.VerificationStrict, 2*time.Second, func(c *domainverify.Config) {
			c.AllowNonPublic = true
			c.HTTPPort, _ = strconv.Atoi(port)
		})
		ten, err := b.store.EnsureTenant(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		acc := b.createSite(t, ten.ID, "fresh.example")
		if !acc.Held {
			t.Fatal("strict mode did not hold a fresh domain")
		}
		if err := b.dns.AddA(ctx, "fresh.example", "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		token = b.token(t, acc.Operation.TargetID, "fresh.example")
		mu.Unlock()
		if op := b.verifySite(t, ten.ID, acc.Operation.TargetID); op.Status != models.OpSucceeded {
			t.Fatalf("verification over HTTP %s %v", op.Status, op.ErrorMessage)
		}
		b.runAll(t)
		if p, _ := b.prov.counts(acc.Operation.TargetID); p != 1 {
			t.Errorf("provisioned %d times, want 1", p)
		}
		if s := b.site(t, acc.Operation.TargetID); s.Status != models.SiteStatusActive {
			t.Errorf("site %s, want active", s.Status)
		}
	})
}

// TestVerifyTimeout: no record ever appears: after the timeout the operation
// fails with domain_not_verified naming the domain, what it expected and
// what it found; the site stays held and nothing is provisioned. A record
// published while a verification waits is found by a later check.
func TestVerifyTimeout(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		b := setupDomains(t, db, models.VerificationStrict, time.Second, nil)
		ten, err := b.store.EnsureTenant(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		acc := b.createSite(t, ten.ID, "late.example")
		siteID := acc.Operation.TargetID
		token := b.token(t, siteID, "late.example")
		op := b.verifySite(t, ten.ID, siteID)
		wantFailed(t, op, jobs.CodeDomainNotVerified, "late.example", "_chom-challenge.late.example", token, "found")
		if s := b.site(t, siteID); s.Status != models.SiteStatusPendingVerification {
			t.Errorf("site %s after a failed verification", s.Status)
		}
		if p, _ := b.prov.counts(siteID); p != 0 || len(b.enq.take()) != 0 {
			t.Error("a failed verification provisioned or enqueued something")
		}

		// The record comes during the next verification's waits.
		go func() {
			time.Sleep(300 * time.Millisecond)
			_ = b.dns.SetTXT(context.WithoutCancel(ctx), domainverify.RecordName("late.example"), token)
		}()
		if op := b.verifySite(t, ten.ID, siteID); op.Status != models.OpSucceeded {
			t.Fatalf("second verification %s", op.Status)
		}
		b.runAll(t)
		if p, _ := b.prov.counts(siteID); p != 1 {
			t.Errorf("provisioned %d times, want 1", p)
		}
	})
}
