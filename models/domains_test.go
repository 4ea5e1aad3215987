package models_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// siteOnServer creates a site for tenantID on domain and provisions it onto vps.
func siteOnServer(t *testing.T, s *models.Store, tenantID, domain string, vps *models.VPSServer) string {
	t.Helper()
	ctx := t.Context()
	siteID, op := createSite(t, s, tenantID, domain)
	if _, err := s.StartOperation(ctx, op.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.BeginProvision(ctx, siteID); err != nil {
		t.Fatal(err)
	}
	if got, err := s.AssignVPS(ctx, siteID); err != nil || got.ID != vps.ID {
		t.Fatalf("AssignVPS = %v, %v; want %s", got, err, vps.ID)
	}
	if ok, err := s.CompleteProvision(ctx, op.ID, siteID, models.ProvisionedSite{DocumentRoot: "/srv/x"}, nil, nil); err != nil || !ok {
		t.Fatalf("CompleteProvision = %v, %v", ok, err)
	}
	return siteID
}

type claimRow struct{ Domain, State string }

func claimStates(t *testing.T, s *models.Store, siteID string) []claimRow {
	t.Helper()
	claims, err := s.SiteClaims(t.Context(), siteID)
	if err != nil {
		t.Fatal(err)
	}
	var out []claimRow
	for _, c := range claims {
		if len(c.Token) < 22 {
			t.Errorf("claim %s token %q is shorter than 128 bits of base64url", c.Domain, c.Token)
		}
		out = append(out, claimRow{c.Domain, c.State})
	}
	return out
}

// startVerify records a domain.verify of the tenant's site and marks it running.
func startVerify(t *testing.T, s *models.Store, tenantID, siteID string) *models.Operation {
	t.Helper()
	acc, err := s.StartVerification(t.Context(), accept(tenantID, "", ""), siteID)
	if err != nil {
		t.Fatalf("StartVerification: %v", err)
	}
	if _, err := s.StartOperation(t.Context(), acc.Operation.ID); err != nil {
		t.Fatal(err)
	}
	return acc.Operation
}

// TestClaimsContested: in contested mode a fresh domain is an open claim and
// provisions at once; another tenant's claim on it is held for proof, and
// its provision is not on the reconciler's list; the same tenant again is a
// conflict naming the field, aliases included.
func TestClaimsContested(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		owner, squatter := tenant(t, s, "owner"), tenant(t, s, "squatter")

		acc, err := s.CreateSite(ctx, models.CreateSiteParams{Accept: accept(owner, "", ""), Domain: "bigbank.example",
			Aliases: []string{"www.bigbank.example"}, SiteType: "html"})
		if err != nil || acc.Held {
			t.Fatalf("CreateSite of a fresh domain = %+v, %v; want accepted, not held", acc, err)
		}
		ownerSite := acc.Operation.TargetID
		if diff := cmp.Diff([]claimRow{{"bigbank.example", models.ClaimOpen}, {"www.bigbank.example", models.ClaimOpen}},
			claimStates(t, s, ownerSite)); diff != "" {
			t.Errorf("owner claims (-want +got):\n%s", diff)
		}
		if got := siteRow(t, s, ownerSite).Aliases; !cmp.Equal(got, models.Aliases{"www.bigbank.example"}) {
			t.Errorf("aliases = %v", got)
		}

		// The other tenant, on the alias: accepted, held.
		held, err := s.CreateSite(ctx, models.CreateSiteParams{Accept: accept(squatter, "", ""), Domain: "www.bigbank.example", SiteType: "html"})
		if err != nil || !held.Held {
			t.Fatalf("CreateSite of a claimed domain = %+v, %v; want held", held, err)
		}
		heldSite := siteRow(t, s, held.Operation.TargetID)
		if heldSite.Status != models.SiteStatusPendingVerification {
			t.Errorf("held site status = %s", heldSite.Status)
		}
		if diff := cmp.Diff([]claimRow{{"www.bigbank.example", models.ClaimPending}}, claimStates(t, s, heldSite.ID)); diff != "" {
			t.Errorf("squatter claims (-want +got):\n%s", diff)
		}
		ops, err := s.UnfinishedOperations(ctx, epoch.Add(time.Second), 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range ops {
			if op.ID == held.Operation.ID {
				t.Error("the reconciler would enqueue the provision of a site waiting for verification")
			}
		}
		if len(ops) != 1 {
			t.Errorf("reconciler list has %d operations, want the owner's provision only", len(ops))
		}

		// The owner again, with the domain as an alias: a conflict naming it.
		_, err = s.CreateSite(ctx, models.CreateSiteParams{Accept: accept(owner, "", ""), Domain: "new.example",
			Aliases: []string{"other.example", "bigbank.example"}, SiteType: "html"})
		if ce := wantConflict(t, err); ce.Field != "aliases[1]" {
			t.Errorf("conflict field = %q, want aliases[1]", ce.Field)
		}
		// Replaying the held request answers Held again (no enqueue on replay).
		k := accept(squatter, "key-1", "h")
		first, err := s.CreateSite(ctx, models.CreateSiteParams{Accept: k, Domain: "bigbank.example", SiteType: "html"})
		if err != nil || !first.Held {
			t.Fatalf("keyed held create = %+v, %v", first, err)
		}
		again, err := s.CreateSite(ctx, models.CreateSiteParams{Accept: k, Domain: "bigbank.example", SiteType: "html"})
		if err != nil || !again.Replayed || !again.Held || again.Operation.ID != first.Operation.ID {
			t.Fatalf("replay of a held create = %+v, %v; want the same operation, replayed and held", again, err)
		}
	})
}

// TestClaimsStrict: in strict mode every new claim waits for proof.
func TestClaimsStrict(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		setup(t, db) // migrate
		s, err := models.New(models.Config{DB: db, DomainVerification: models.VerificationStrict})
		if err != nil {
			t.Fatal(err)
		}
		ten := tenant(t, s, "acme")
		acc, err := s.CreateSite(ctx, siteParams(accept(ten, "", ""), "fresh.example"))
		if err != nil || !acc.Held {
			t.Fatalf("strict CreateSite = %+v, %v; want held", acc, err)
		}
		if _, err := models.New(models.Config{DB: db, DomainVerification: "lax"}); err == nil {
			t.Error("New accepted DomainVerification \"lax\"")
		}
	})
}

// TestProveClaims: the owner proves a domain the squatter got first (open,
// served): the squatter's claim is released, its served site gets one
// unserve deprovision and ends pending_verification off its server; the
// owner's held provision is released. The squatter then cannot prove it.
func TestProveClaims(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		owner, squatter := tenant(t, s, "owner"), tenant(t, s, "squatter")
		vps := registerVPS(t, s, "web1.example", 10)
		squatSite := siteOnServer(t, s, squatter, "bigbank.example", vps)
		if siteCount(t, db, vps.ID) != 1 {
			t.Fatal("site not counted on its server")
		}

		held, err := s.CreateSite(ctx, siteParams(accept(owner, "", ""), "bigbank.example"))
		if err != nil || !held.Held {
			t.Fatalf("owner CreateSite = %+v, %v; want held", held, err)
		}
		ownerSite := held.Operation.TargetID

		// No second verification while one is unfinished.
		verify := startVerify(t, s, owner, ownerSite)
		if _, err := s.StartVerification(ctx, accept(owner, "", ""), ownerSite); err == nil {
			t.Error("a second verification was accepted while one runs")
		}
		if _, err := s.StartVerification(ctx, accept(squatter, "", ""), ownerSite); !errors.Is(err, models.ErrNotFound) {
			t.Errorf("StartVerification of another tenant's site = %v, want ErrNotFound", err)
		}
		res, err := s.ProveClaims(ctx, verify.ID, ownerSite, []string{"bigbank.example"})
		if err != nil {
			t.Fatalf("ProveClaims: %v", err)
		}
		// The squatter's site is on a server: it is taken off first, and the
		// owner's provision waits for that.
		if !res.Finished || len(res.Enqueue) != 1 ||
			res.Enqueue[0].Type != models.OpTypeSiteDeprovision || res.Enqueue[0].TargetID != squatSite {
			t.Fatalf("ProveClaims = %+v; want the squatter's deprovision only", res)
		}
		unserve := res.Enqueue[0]
		if op := opRow(t, s, verify.ID); op.Status != models.OpSucceeded {
			t.Errorf("verify operation %s", op.Status)
		}
		if got := siteRow(t, s, ownerSite).Status; got != models.SiteStatusPendingVerification {
			t.Errorf("owner site %s, want pending_verification until the squatter's site is off its server", got)
		}
		sq := siteRow(t, s, squatSite)
		if sq.Status != models.SiteStatusDeprovisioning || sq.OperationID == nil || *sq.OperationID != unserve.ID {
			t.Errorf("squatter site = %s op %v", sq.Status, sq.OperationID)
		}
		if diff := cmp.Diff([]claimRow{{"bigbank.example", models.ClaimPending}}, claimStates(t, s, squatSite)); diff != "" {
			t.Errorf("squatter claims (-want +got):\n%s", diff)
		}
		payload := decodeJSON[models.SitePayload](t, unserve.Payload)
		if !payload.Unserve {
			t.Errorf("deprovision payload %+v lacks unserve", payload)
		}
		// A second delivery of the verify task finds it finished: nothing again.
		again, err := s.ProveClaims(ctx, verify.ID, ownerSite, []string{"bigbank.example"})
		if err != nil || again.Finished || len(again.Enqueue) != 0 {
			t.Fatalf("repeated ProveClaims = %+v, %v; want nothing done", again, err)
		}

		// The unserve deprovision completes: off the server, pending_verification.
		if _, err := s.StartOperation(ctx, unserve.ID); err != nil {
			t.Fatal(err)
		}
		ok, ready, err := s.CompleteUnserve(ctx, unserve.ID, squatSite, nil)
		if err != nil || !ok || len(ready) != 1 || ready[0].ID != held.Operation.ID {
			t.Fatalf("CompleteUnserve = %v, %v, %v; want the owner's held provision released", ok, ready, err)
		}
		if got := siteRow(t, s, ownerSite).Status; got != models.SiteStatusPending {
			t.Errorf("owner site %s after the unserve, want pending", got)
		}
		sq = siteRow(t, s, squatSite)
		if sq.Status != models.SiteStatusPendingVerification || sq.VPSID != nil || sq.OperationID != nil || sq.DeletedAt != nil {
			t.Errorf("squatter site after unserve = %+v", sq)
		}
		if siteCount(t, db, vps.ID) != 0 {
			t.Error("the unserved site still counts on its server")
		}

		// The squatter tries to prove it back: refused, nothing changes.
		sv := startVerify(t, s, squatter, squatSite)
		if _, err := s.ProveClaims(ctx, sv.ID, squatSite, []string{"bigbank.example"}); !errors.Is(err, models.ErrProvenElsewhere) {
			t.Fatalf("squatter ProveClaims = %v, want ErrProvenElsewhere", err)
		}
		if op := opRow(t, s, sv.ID); op.Status != models.OpRunning {
			t.Errorf("refused proof changed the operation to %s", op.Status)
		}

		// Once the owner's site is deleted, its proof goes with it and the
		// squatter's claim can be proven: a new provision operation.
		if _, err := s.AbandonProvision(ctx, held.Operation.ID, ownerSite, models.Outcome{Status: models.OpCancelled}, nil); err != nil {
			t.Fatal(err)
		}
		res, err = s.ProveClaims(ctx, sv.ID, squatSite, []string{"bigbank.example"})
		if err != nil || len(res.Enqueue) != 1 || res.Enqueue[0].Type != models.OpTypeSiteProvision {
			t.Fatalf("ProveClaims after the owner left = %+v, %v; want a new provision", res, err)
		}
		if sq := siteRow(t, s, squatSite); sq.Status != models.SiteStatusPending || sq.OperationID == nil || *sq.OperationID != res.Enqueue[0].ID {
			t.Errorf("squatter site = %+v", sq)
		}
	})
}

// TestProveClaimsBusy: a released site with an operation in flight makes the
// proof wait (ErrReleaseBusy) and writes nothing.
func TestProveClaimsBusy(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		owner, squatter := tenant(t, s, "owner"), tenant(t, s, "squatter")
		squatSite, _ := createSite(t, s, squatter, "busy.example") // provision pending
		held, err := s.CreateSite(ctx, siteParams(accept(owner, "", ""), "busy.example"))
		if err != nil || !held.Held {
			t.Fatal(err)
		}
		verify := startVerify(t, s, owner, held.Operation.TargetID)
		if _, err := s.ProveClaims(ctx, verify.ID, held.Operation.TargetID, []string{"busy.example"}); !errors.Is(err, models.ErrReleaseBusy) {
			t.Fatalf("ProveClaims = %v, want ErrReleaseBusy", err)
		}
		if diff := cmp.Diff([]claimRow{{"busy.example", models.ClaimOpen}}, claimStates(t, s, squatSite)); diff != "" {
			t.Errorf("squatter claims changed (-want +got):\n%s", diff)
		}
		if op := opRow(t, s, verify.ID); op.Status != models.OpRunning {
			t.Errorf("verify operation %s, want still running", op.Status)
		}
	})
}

// TestDeleteHeldSite: deleting a site that waits for verification cancels its
// held provision and records the deprovision; its claims go with it.
func TestDeleteHeldSite(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		owner, other := tenant(t, s, "owner"), tenant(t, s, "other")
		createSite(t, s, owner, "held.example")
		held, err := s.CreateSite(ctx, siteParams(accept(other, "", ""), "held.example"))
		if err != nil || !held.Held {
			t.Fatal(err)
		}
		siteID := held.Operation.TargetID
		del, err := s.DeleteSite(ctx, accept(other, "", ""), siteID)
		if err != nil {
			t.Fatalf("DeleteSite of a held site: %v", err)
		}
		if op := opRow(t, s, held.Operation.ID); op.Status != models.OpCancelled {
			t.Errorf("held provision %s, want cancelled", op.Status)
		}
		if _, err := s.StartOperation(ctx, del.Operation.ID); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.CompleteDeprovision(ctx, del.Operation.ID, siteID, nil); err != nil || !ok {
			t.Fatalf("CompleteDeprovision = %v, %v", ok, err)
		}
		if n := count(t, db, "domain_claims", "site_id = ?", siteID); n != 0 {
			t.Errorf("%d claims left on the deleted site", n)
		}
	})
}

// TestUnserveFailedThenDeleted: the released site's unserve fails for good
// (the site stays failed on its server) and the prover waits; deleting the
// released site lets the prover's provision go.
func TestUnserveFailedThenDeleted(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		owner, squatter := tenant(t, s, "owner"), tenant(t, s, "squatter")
		vps := registerVPS(t, s, "web1.example", 10)
		squatSite := siteOnServer(t, s, squatter, "stuck.example", vps)
		held, err := s.CreateSite(ctx, siteParams(accept(owner, "", ""), "stuck.example"))
		if err != nil || !held.Held {
			t.Fatal(err)
		}
		ownerSite := held.Operation.TargetID
		res, err := s.ProveClaims(ctx, startVerify(t, s, owner, ownerSite).ID, ownerSite, []string{"stuck.example"})
		if err != nil || len(res.Enqueue) != 1 {
			t.Fatalf("ProveClaims = %+v, %v", res, err)
		}
		unserve := res.Enqueue[0]
		if _, err := s.StartOperation(ctx, unserve.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AbandonDeprovision(ctx, unserve.ID, squatSite, models.SiteStatusActive,
			models.Outcome{Status: models.OpFailed, ErrorCode: "deprovisioning_failed"}, nil); err != nil {
			t.Fatal(err)
		}
		if got := siteRow(t, s, ownerSite).Status; got != models.SiteStatusPendingVerification {
			t.Fatalf("owner site %s while the released site is still on its server", got)
		}
		del, err := s.DeleteSite(ctx, accept(squatter, "", ""), squatSite)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.StartOperation(ctx, del.Operation.ID); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.CompleteDeprovision(ctx, del.Operation.ID, squatSite, nil); err != nil || !ok {
			t.Fatalf("CompleteDeprovision = %v, %v", ok, err)
		}
		if got := siteRow(t, s, ownerSite); got.Status != models.SiteStatusPending || got.OperationID == nil || *got.OperationID != held.Operation.ID {
			t.Errorf("owner site after the released site was deleted = %+v, want pending with its provision", got)
		}
		if held, err := s.ProvisionHeld(ctx, held.Operation.ID); err != nil || held {
			t.Errorf("ProvisionHeld = %v, %v; want released", held, err)
		}
	})
}

// TestClaimRace: eight tenants create a site on the same fresh domain at the
// same moment, each in its own transaction. Each planned its claim before any
// other committed, so each planned it open; the database lets one open claim
// serve. Every create must still be accepted: one site serves, the others
// are held for proof, and none fails.
func TestClaimRace(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		const n = 8
		tenants := make([]string, n)
		for i := range tenants {
			tenants[i] = tenant(t, s, fmt.Sprintf("racer%d", i))
		}
		for round := range 5 {
			domain := fmt.Sprintf("race%d.example", round)
			accs := make([]*models.Accepted, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					accs[i], errs[i] = s.CreateSite(ctx, models.CreateSiteParams{Accept: accept(tenants[i], "", ""), Domain: domain, SiteType: "html"})
				})
			}
			close(start)
			wg.Wait()
			serving := 0
			for i := range n {
				if errs[i] != nil {
					t.Fatalf("round %d: tenant %d's create failed: %v", round, i, errs[i])
				}
				if !accs[i].Held {
					serving++
				}
			}
			if serving != 1 {
				t.Errorf("round %d: %d sites serve %s, want 1 (the others held)", round, serving, domain)
			}
		}
	})
}
