package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/models"
)

// The whole path: POST → 202 → worker → succeeded → site active → outbox row, then
// DELETE → 202 → worker → site deleted → outbox row, files gone, slot freed.
func TestProvisionAndDeprovision(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{})
		r := s.do("POST", "/api/v1/sites", s.tokenA, map[string]string{"domain": "Shop.Example.", "site_type": "php"})
		if r.status != http.StatusAccepted {
			t.Fatalf("POST /sites: %d %s", r.status, r.body)
		}
		var op ingress.OperationView
		r.json(t, &op)
		if got := r.header.Get("Location"); got != "/api/v1/operations/"+op.ID {
			t.Errorf("Location = %q", got)
		}
		if r.header.Get("Retry-After") == "" || r.header.Get("ETag") == "" {
			t.Errorf("202 lacks Retry-After or ETag: %v", r.header)
		}
		if op.Status != models.OpPending || op.Type != models.OpTypeSiteProvision || op.TargetType != "site" {
			t.Errorf("accepted operation = %+v", op)
		}

		done := s.waitOp(s.tokenA, op.ID)
		if done.Status != models.OpSucceeded || done.Progress != 100 || done.StartedAt == nil || done.FinishedAt == nil {
			t.Fatalf("finished operation = %+v", done)
		}
		var result map[string]string
		if err := json.Unmarshal(done.Result, &result); err != nil || result["site_id"] != op.TargetID || result["vps_id"] != s.vpsID {
			t.Errorf("result = %s (%v)", done.Result, err)
		}

		var site models.Site
		s.do("GET", "/api/v1/sites/"+op.TargetID, s.tokenA, nil).json(t, &site)
		if site.Status != models.SiteStatusActive || site.Domain != "shop.example" || site.PHPVersion != "8.3" || site.OperationID != nil {
			t.Fatalf("site = %+v", site)
		}
		page, err := os.ReadFile(filepath.Join(site.DocumentRoot, "index.php"))
		if err != nil || !strings.Contains(string(page), "shop.example") {
			t.Errorf("starter page: %v %q", err, page)
		}
		if n := s.count("outbox_events", "event_type = ? AND subject = ? AND tenant_id = ?", "site.provisioned.v1", site.ID, s.tenantA); n != 1 {
			t.Errorf("site.provisioned outbox rows = %d, want 1", n)
		}
		if n := s.count("audit_logs", "action = ? AND target_id = ?", "site.create", site.ID); n != 1 {
			t.Errorf("audit rows = %d, want 1", n)
		}
		vps, err := s.store.GetVPS(context.Background(), s.vpsID)
		if err != nil || vps.SiteCount != 1 {
			t.Fatalf("vps site_count = %d (%v), want 1", vps.SiteCount, err)
		}

		r = s.do("DELETE", "/api/v1/sites/"+site.ID, s.tokenA, nil)
		if r.status != http.StatusAccepted {
			t.Fatalf("DELETE: %d %s", r.status, r.body)
		}
		var del ingress.OperationView
		r.json(t, &del)
		if done := s.waitOp(s.tokenA, del.ID); done.Status != models.OpSucceeded {
			t.Fatalf("deprovision = %+v", done)
		}
		s.do("GET", "/api/v1/sites/"+site.ID, s.tokenA, nil).json(t, &site)
		if site.Status != models.SiteStatusDeleted || site.DeletedAt == nil {
			t.Errorf("site after delete = %+v", site)
		}
		if _, err := os.Stat(site.DocumentRoot); !os.IsNotExist(err) {
			t.Errorf("document root still there: %v", err)
		}
		var list ingress.Page[models.Site]
		s.do("GET", "/api/v1/sites", s.tokenA, nil).json(t, &list)
		if len(list.Data) != 0 {
			t.Errorf("deleted site still listed: %+v", list.Data)
		}
		if n := s.count("outbox_events", "event_type = ? AND subject = ?", "site.deleted.v1", site.ID); n != 1 {
			t.Errorf("site.deleted outbox rows = %d, want 1", n)
		}
		if vps, _ := s.store.GetVPS(context.Background(), s.vpsID); vps.SiteCount != 0 {
			t.Errorf("vps site_count after delete = %d, want 0", vps.SiteCount)
		}
		// The domain is free again.
		again := s.createSite(s.tokenB, "shop.example", "html")
		if done := s.waitOp(s.tokenB, again.ID); done.Status != models.OpSucceeded {
			t.Fatalf("re-create = %+v", done)
		}
	})
}

// Redis unreachable when the request arrives: the API still answers 202 (the row
// is committed), nothing is queued, and once Redis is back the reconciler enqueues
// the operation, which then completes. Nothing accepted is lost.
func TestRedisDownAtAcceptTime(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{})
		s.proxy.Cut()
		ops := make([]ingress.OperationView, 3)
		for i := range ops {
			ops[i] = s.createSite(s.tokenA, "down"+string(rune('a'+i))+".example", "html")
		}
		s.proxy.Restore()
		for _, op := range ops {
			cur := s.do("GET", "/api/v1/operations/"+op.ID, s.tokenA, nil)
			var v ingress.OperationView
			cur.json(t, &v)
			if v.Status != models.OpPending {
				t.Fatalf("operation ran without a task: %+v", v)
			}
		}
		rep, err := s.reconciler.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if rep.Enqueued != len(ops) {
			t.Fatalf("reconciler enqueued %d, want %d (%+v)", rep.Enqueued, len(ops), rep)
		}
		for _, op := range ops {
			if done := s.waitOp(s.tokenA, op.ID); done.Status != models.OpSucceeded {
				t.Fatalf("operation %s = %+v", op.ID, done)
			}
		}
		// A second pass finds nothing to do.
		rep, err = s.reconciler.Run(context.Background())
		if err != nil || rep.Enqueued != 0 || rep.Checked != 0 {
			t.Fatalf("second pass = %+v, %v", rep, err)
		}
		if n := s.count("sites", "status = ?", models.SiteStatusActive); n != len(ops) {
			t.Errorf("active sites = %d, want %d", n, len(ops))
		}
	})
}
