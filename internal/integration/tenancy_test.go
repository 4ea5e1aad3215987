package integration

import (
	"net/http"
	"strings"
	"testing"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/models"
)

// Every route × tenant A's token × tenant B's IDs → 404, and A's listings never
// show B's rows. The matrix is generated from the registered routes, so a new
// route is covered (or fails here until it is) automatically.
func TestCrossTenantIsNotFound(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{})
		bOp := s.createSite(s.tokenB, "tenant-b.example", "html")
		s.waitOp(s.tokenB, bOp.ID)
		aOp := s.createSite(s.tokenA, "tenant-a.example", "html")
		s.waitOp(s.tokenA, aOp.ID)
		// B's backup, recorded but never enqueued: it stays pending, so nothing
		// changes the database while the matrix runs.
		bBackup, err := s.store.CreateBackup(t.Context(), models.CreateBackupParams{Accept: models.Accept{TenantID: s.tenantB},
			SiteID: bOp.TargetID, BackupType: "files", RetentionDays: 1})
		if err != nil {
			t.Fatal(err)
		}
		bToken, err := s.store.LookupToken(t.Context(), models.HashToken(s.tokenB))
		if err != nil {
			t.Fatal(err)
		}
		before := s.snapshot()

		// IDs of tenant B's resources, by route parameter and path prefix.
		bIDs := map[string]string{"/sites/": bOp.TargetID, "/operations/": bOp.ID, "/backups/": bBackup.Operation.TargetID}
		body := map[string]string{"POST": `{"domain":"steal.example","site_type":"html"}`, "PUT": `{"frequency":"daily","keep":3}`}
		covered := 0
		for _, rt := range s.api.Routes() {
			if !strings.HasPrefix(rt.Path, "/api/v1/") || strings.HasPrefix(rt.Path, "/api/v1/health") {
				continue
			}
			if strings.HasPrefix(rt.Path, "/api/v1/vps") || strings.HasPrefix(rt.Path, "/api/v1/tenants/") || strings.HasPrefix(rt.Path, "/api/v1/tokens/") {
				// Admin routes: a tenant token is refused outright.
				path := strings.Replace(rt.Path, ":id", s.vpsID, 1)
				if strings.HasPrefix(rt.Path, "/api/v1/tokens/") {
					path = strings.Replace(rt.Path, ":id", bToken.ID, 1)
				}
				path = strings.Replace(path, ":tenant", s.tenantB, 1)
				r := s.do(rt.Method, path, s.tokenA, body[rt.Method])
				assertProblem(t, r, http.StatusForbidden, "")
				covered++
				continue
			}
			if !strings.Contains(rt.Path, ":") {
				continue // collection routes: checked below
			}
			path := rt.Path
			for prefix, id := range bIDs {
				if strings.Contains(path, prefix+":id") {
					path = strings.Replace(path, ":id", id, 1)
				}
			}
			if strings.Contains(path, ":") {
				t.Fatalf("route %s %s has a parameter this test cannot fill: extend bIDs", rt.Method, rt.Path)
			}
			if strings.HasSuffix(rt.Path, "/archive") {
				// The signed link is the credential: without a valid one it is
				// 403 for every backup, anyone's, token or not.
				assertProblem(t, s.do(rt.Method, path, s.tokenA, nil), http.StatusForbidden, "")
				covered++
				continue
			}
			for _, q := range []string{"", "?wait=1s"} {
				if q != "" && rt.Method != "GET" {
					continue
				}
				r := s.do(rt.Method, path+q, s.tokenA, body[rt.Method])
				assertProblem(t, r, http.StatusNotFound, "")
			}
			covered++
		}
		if covered < 7 {
			t.Fatalf("covered %d routes, expected at least 7", covered)
		}
		var sites ingress.Page[models.Site]
		s.do("GET", "/api/v1/sites", s.tokenA, nil).json(t, &sites)
		if len(sites.Data) != 1 || sites.Data[0].ID != aOp.TargetID {
			t.Errorf("A's site list = %+v", sites.Data)
		}
		var ops ingress.Page[ingress.OperationView]
		s.do("GET", "/api/v1/operations?target_id="+bOp.TargetID, s.tokenA, nil).json(t, &ops)
		if len(ops.Data) != 0 {
			t.Errorf("A sees B's operations: %+v", ops.Data)
		}
		s.do("GET", "/api/v1/operations", s.tokenA, nil).json(t, &ops)
		for _, o := range ops.Data {
			if o.ID == bOp.ID {
				t.Errorf("A's operation list has B's %s", o.ID)
			}
		}
		if after := s.snapshot(); after != before {
			t.Errorf("cross-tenant requests changed the database: %v → %v", before, after)
		}
	})
}

// Listings page with a cursor and filter by status.
func TestListingPagination(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true})
		want := map[string]bool{}
		for i := 0; i < 5; i++ {
			op := s.createSite(s.tokenA, "page"+string(rune('a'+i))+".example", "html")
			want[op.TargetID] = true
		}
		seen := map[string]bool{}
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 3 {
				t.Fatal("too many pages")
			}
			var p ingress.Page[models.Site]
			s.do("GET", "/api/v1/sites?limit=2&status=pending&cursor="+cursor, s.tokenA, nil).json(t, &p)
			for _, site := range p.Data {
				if seen[site.ID] {
					t.Fatalf("site %s on two pages", site.ID)
				}
				seen[site.ID] = true
			}
			if p.NextCursor == "" {
				break
			}
			cursor = p.NextCursor
		}
		if len(seen) != len(want) {
			t.Errorf("paged through %d sites, want %d", len(seen), len(want))
		}
		var active ingress.Page[models.Site]
		s.do("GET", "/api/v1/sites?status=active", s.tokenA, nil).json(t, &active)
		if len(active.Data) != 0 {
			t.Errorf("status=active lists %d pending sites", len(active.Data))
		}
		var ops ingress.Page[ingress.OperationView]
		s.do("GET", "/api/v1/operations?status=pending&type=site.provision&target_type=site&limit=100", s.tokenA, nil).json(t, &ops)
		if len(ops.Data) != 5 {
			t.Errorf("filtered operations = %d, want 5", len(ops.Data))
		}
	})
}
