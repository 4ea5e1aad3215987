package models_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

func TestRegisterVPS(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		acme := tenant(t, s, "acme")
		p := models.RegisterVPSParams{
			Hostname: "web1.example", IPAddress: "192.0.2.1", SSHPort: 22, Provider: "hetzner",
			Region: "fsn1", Allocation: models.AllocationDedicated, TenantID: &acme, SiteCapacity: 10,
			HostKey: "ssh-ed25519 AAAA",
		}
		v, _, err := s.RegisterVPS(ctx, models.Accept{}, p)
		if err != nil {
			t.Fatalf("RegisterVPS: %v", err)
		}
		got, err := s.GetVPS(ctx, v.ID)
		if err != nil {
			t.Fatalf("GetVPS: %v", err)
		}
		want := &models.VPSServer{
			ID: v.ID, Hostname: "web1.example", IPAddress: "192.0.2.1", SSHPort: 22, Provider: "hetzner",
			Region: "fsn1", Allocation: models.AllocationDedicated, TenantID: &acme, SiteCapacity: 10,
			Status: models.VPSStatusActive, HealthStatus: models.HealthUnknown, HostKey: "ssh-ed25519 AAAA",
			HostKeySHA256: models.HostKeySHA256("ssh-ed25519 AAAA"), CreatedAt: epoch, UpdatedAt: epoch,
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("stored server (-want +got):\n%s", diff)
		}
		if v.HostKeySHA256 != want.HostKeySHA256 {
			t.Errorf("RegisterVPS answered fingerprint %q, want %q", v.HostKeySHA256, want.HostKeySHA256)
		}

		p.IPAddress, p.TenantID, p.Allocation = "192.0.2.2", nil, models.AllocationShared
		_, _, err = s.RegisterVPS(ctx, models.Accept{}, p)
		wantConflict(t, err)

		p.Hostname, p.TenantID = "web2.example", ptr("ten_unknown")
		if _, _, err := s.RegisterVPS(ctx, models.Accept{}, p); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("RegisterVPS for an unknown tenant = %v, want ErrNotFound", err)
		}
		if n := count(t, db, "vps_servers", ""); n != 1 {
			t.Fatalf("%d servers, want 1", n)
		}
		if _, err := s.GetVPS(ctx, "vps_unknown"); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("GetVPS(unknown) = %v, want ErrNotFound", err)
		}
	})
}

// server describes a server of an AssignVPS case.
type server struct {
	name       string
	owner      string // "" shared, "own" dedicated to the site's tenant, "other" dedicated to another
	capacity   int
	count      int
	status     string // default active
	health     string // default unknown (as registered)
	wantPlaced bool   // the site lands here
}

func TestAssignVPS(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		servers []server
	}{
		{"least loaded by ratio, not by count", []server{
			{name: "big", capacity: 10, count: 3, wantPlaced: true}, // 0.3
			{name: "small", capacity: 4, count: 2},                  // 0.5
		}},
		{"empty small server beats a busy big one", []server{
			{name: "big", capacity: 100, count: 1},
			{name: "small", capacity: 2, count: 0, wantPlaced: true},
		}},
		{"skips unhealthy", []server{
			{name: "sick", capacity: 10, health: models.HealthUnhealthy},
			{name: "busy", capacity: 10, count: 9, wantPlaced: true},
		}},
		{"degraded still takes sites", []server{
			{name: "degraded", capacity: 10, health: models.HealthDegraded, wantPlaced: true},
			{name: "busy", capacity: 10, count: 5, health: models.HealthHealthy},
		}},
		{"skips servers that are not active", []server{
			{name: "maint", capacity: 10, status: models.VPSStatusMaintenance},
			{name: "gone", capacity: 10, status: models.VPSStatusDecommissioned},
			{name: "busy", capacity: 10, count: 9, wantPlaced: true},
		}},
		{"skips full", []server{
			{name: "full", capacity: 5, count: 5},
			{name: "busy", capacity: 10, count: 9, wantPlaced: true},
		}},
		{"prefers the tenant's dedicated server", []server{
			{name: "shared", capacity: 10},
			{name: "mine", owner: "own", capacity: 10, count: 8, wantPlaced: true},
		}},
		{"own dedicated full falls back to shared", []server{
			{name: "mine", owner: "own", capacity: 2, count: 2},
			{name: "shared", capacity: 10, count: 9, wantPlaced: true},
		}},
		{"own dedicated unhealthy falls back to shared", []server{
			{name: "mine", owner: "own", capacity: 10, health: models.HealthUnhealthy},
			{name: "shared", capacity: 10, count: 9, wantPlaced: true},
		}},
		{"never another tenant's dedicated server", []server{
			{name: "theirs", owner: "other", capacity: 10},
			{name: "shared", capacity: 10, count: 9, wantPlaced: true},
		}},
		{"only another tenant's dedicated server", []server{
			{name: "theirs", owner: "other", capacity: 10},
		}},
		{"no servers", nil},
		{"nothing eligible", []server{
			{name: "full", capacity: 3, count: 3},
			{name: "sick", capacity: 10, health: models.HealthUnhealthy},
			{name: "maint", capacity: 10, status: models.VPSStatusMaintenance},
			{name: "theirs", owner: "other", capacity: 10},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testenv.Backends(t, func(t *testing.T, db *bun.DB) {
				ctx := t.Context()
				s := setup(t, db)
				acme, other := tenant(t, s, "acme"), tenant(t, s, "other")
				ids := map[string]string{} // name → ID
				wantName := ""
				for _, sv := range tc.servers {
					p := models.RegisterVPSParams{Hostname: sv.name + ".example", IPAddress: "192.0.2.1", SSHPort: 22,
						Provider: "test", Region: "eu", Allocation: models.AllocationShared, SiteCapacity: sv.capacity}
					switch sv.owner {
					case "own":
						p.Allocation, p.TenantID = models.AllocationDedicated, &acme
					case "other":
						p.Allocation, p.TenantID = models.AllocationDedicated, &other
					}
					v, _, err := s.RegisterVPS(ctx, models.Accept{}, p)
					if err != nil {
						t.Fatal(err)
					}
					ids[sv.name] = v.ID
					q := db.NewUpdate().Model((*models.VPSServer)(nil)).Set("site_count = ?", sv.count).Where("id = ?", v.ID)
					if sv.status != "" {
						q = q.Set("status = ?", sv.status)
					}
					if sv.health != "" {
						q = q.Set("health_status = ?", sv.health)
					}
					if _, err := q.Exec(ctx); err != nil {
						t.Fatal(err)
					}
					if sv.wantPlaced {
						wantName = sv.name
					}
				}
				siteID, _ := createSite(t, s, acme, "placed.example")

				v, err := s.AssignVPS(ctx, siteID)
				site := siteRow(t, s, siteID)
				if wantName == "" {
					if !errors.Is(err, models.ErrNoCapacity) {
						t.Fatalf("AssignVPS = %+v, %v; want ErrNoCapacity", v, err)
					}
					if site.VPSID != nil {
						t.Errorf("site bound to %s after ErrNoCapacity", *site.VPSID)
					}
				} else {
					if err != nil {
						t.Fatalf("AssignVPS: %v", err)
					}
					if v.ID != ids[wantName] {
						t.Fatalf("AssignVPS chose %s, want %s (%s)", v.Hostname, wantName, ids[wantName])
					}
					if site.VPSID == nil || *site.VPSID != v.ID {
						t.Errorf("site.vps_id = %s, want %s", deref(site.VPSID), v.ID)
					}
				}
				for _, sv := range tc.servers {
					want := sv.count
					if sv.name == wantName {
						want++
					}
					if got := siteCount(t, db, ids[sv.name]); got != want {
						t.Errorf("server %s: site_count = %d, want %d", sv.name, got, want)
					}
					if sv.name == wantName && v.SiteCount != want {
						t.Errorf("returned SiteCount = %d, want %d", v.SiteCount, want)
					}
				}
			})
		})
	}
}

func TestAssignVPSIsIdempotent(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		acme := tenant(t, s, "acme")
		a := registerVPS(t, s, "a.example", 10)
		siteID, _ := createSite(t, s, acme, "once.example")
		first, err := s.AssignVPS(ctx, siteID)
		if err != nil || first.ID != a.ID {
			t.Fatalf("AssignVPS = %+v, %v", first, err)
		}
		// A less loaded server appears; the placed site stays where it is.
		b := registerVPS(t, s, "b.example", 100)
		for range 3 {
			again, err := s.AssignVPS(ctx, siteID)
			if err != nil || again.ID != a.ID {
				t.Fatalf("repeated AssignVPS = %+v, %v; want %s", again, err, a.ID)
			}
		}
		if got := []int{siteCount(t, db, a.ID), siteCount(t, db, b.ID)}; !cmp.Equal(got, []int{1, 0}) {
			t.Fatalf("site counts = %v, want [1 0]", got)
		}
		if _, err := s.AssignVPS(ctx, "site_unknown"); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("AssignVPS(unknown) = %v, want ErrNotFound", err)
		}
	})
}

// TestAssignVPSRace places 30 sites on 10 slots at once: exactly 10 win, and no
// server ever holds more sites than its capacity.
func TestAssignVPSRace(t *testing.T) {
	t.Parallel()
	const sites, capacity = 30, 5
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		if models.IsPostgres(db) {
			db.SetMaxOpenConns(40)
		}
		acme := tenant(t, s, "acme")
		servers := []*models.VPSServer{registerVPS(t, s, "a.example", capacity), registerVPS(t, s, "b.example", capacity)}
		ids := make([]string, sites)
		for i := range ids {
			ids[i], _ = createSite(t, s, acme, fmt.Sprintf("race%02d.example", i))
		}

		got := make([]*models.VPSServer, sites)
		errs := make([]error, sites)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range sites {
			wg.Go(func() {
				<-start
				got[i], errs[i] = s.AssignVPS(ctx, ids[i])
			})
		}
		close(start)
		wg.Wait()

		placed := map[string]int{}
		noCapacity := 0
		for i := range sites {
			switch {
			case errs[i] == nil:
				placed[got[i].ID]++
				if site := siteRow(t, s, ids[i]); site.VPSID == nil || *site.VPSID != got[i].ID {
					t.Errorf("site %d bound to %s, AssignVPS said %s", i, deref(site.VPSID), got[i].ID)
				}
			case errors.Is(errs[i], models.ErrNoCapacity):
				noCapacity++
			default:
				t.Errorf("site %d: %v", i, errs[i])
			}
		}
		if total := placed[servers[0].ID] + placed[servers[1].ID]; total != 2*capacity || noCapacity != sites-2*capacity {
			t.Fatalf("%d placed (%v), %d ErrNoCapacity; want %d and %d", total, placed, noCapacity, 2*capacity, sites-2*capacity)
		}
		for _, v := range servers {
			bound := count(t, db, "sites", "vps_id = ?", v.ID)
			if n := siteCount(t, db, v.ID); n != capacity || bound != capacity || placed[v.ID] != capacity {
				t.Errorf("server %s: site_count %d, %d sites bound, %d placements; want %d each", v.Hostname, n, bound, placed[v.ID], capacity)
			}
		}
		if n := count(t, db, "sites", "vps_id IS NULL"); n != sites-2*capacity {
			t.Errorf("%d unplaced sites, want %d", n, sites-2*capacity)
		}
	})
}

// The first host key is pinned; a later, different one never replaces it.
func TestPinHostKey(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		v, _, err := s.RegisterVPS(ctx, models.Accept{}, models.RegisterVPSParams{Hostname: "pin.example", IPAddress: "192.0.2.9",
			SSHPort: 22, Provider: "p", Region: "r", Allocation: models.AllocationShared, SiteCapacity: 5})
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{"ssh-ed25519 FIRST", "ssh-ed25519 SECOND"} {
			if err := s.PinHostKey(ctx, v.ID, key); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.GetVPS(ctx, v.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.HostKey != "ssh-ed25519 FIRST" {
			t.Errorf("host key %q, want the first one pinned", got.HostKey)
		}
	})
}
