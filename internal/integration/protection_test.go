package integration

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/local"
	"github.com/chomhq/chom/models"
)

// gateDriver holds every Provision until release is closed, announcing on
// entered that one is running on the server.
type gateDriver struct {
	*local.Provisioner
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (g *gateDriver) Provision(ctx context.Context, s drivers.SiteSpec, p drivers.ProgressFunc) (drivers.Result, error) {
	g.once.Do(func() { close(g.entered) })
	select {
	case <-g.release:
	case <-ctx.Done():
		return drivers.Result{}, ctx.Err()
	}
	return g.Provisioner.Provision(ctx, s, p)
}

// TestDeleteDuringProvision: one mutation at a time per site. While a provision
// runs on the server, DELETE /sites/{id} answers 409 problem+json naming the
// running operation (operation_id member and Location header) and changes
// nothing; once the provision finished, DELETE is accepted.
func TestDeleteDuringProvision(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		gate := &gateDriver{entered: make(chan struct{}), release: make(chan struct{})}
		s := newStack(t, db, stackOpts{wrapDriver: func(p *local.Provisioner) drivers.Provisioner {
			gate.Provisioner = p
			return gate
		}})
		defer func() {
			select {
			case <-gate.release:
			default:
				close(gate.release)
			}
		}()
		op := s.createSite(s.tokenA, "busy-site.example", "html")
		select {
		case <-gate.entered:
		case <-time.After(20 * time.Second):
			t.Fatal("provision never reached the driver")
		}
		type snapshot struct {
			Operations, Outbox, Audit, Keys int
			Site                            models.Site
		}
		snap := func() snapshot {
			var site models.Site
			if err := db.NewSelect().Model(&site).Where("id = ?", op.TargetID).Scan(context.Background()); err != nil {
				t.Fatal(err)
			}
			site.UpdatedAt = site.UpdatedAt.UTC().Truncate(time.Millisecond)
			site.CreatedAt = site.CreatedAt.UTC().Truncate(time.Millisecond)
			return snapshot{s.count("operations", ""), s.count("outbox_events", ""), s.count("audit_logs", ""), s.count("idempotency_keys", ""), site}
		}
		before := snap()
		if before.Site.OperationID == nil || *before.Site.OperationID != op.ID {
			t.Fatalf("site's running operation = %v, want the provision %s", before.Site.OperationID, op.ID)
		}
		for i := range 2 {
			r := s.do("DELETE", "/api/v1/sites/"+op.TargetID, s.tokenA, nil, "Idempotency-Key", "del-"+string(rune('a'+i)))
			p := assertProblem(t, r, http.StatusConflict, "")
			if p.OperationID != op.ID {
				t.Errorf("409 operation_id = %q, want the running provision %s", p.OperationID, op.ID)
			}
			if loc := r.header.Get("Location"); loc != "/api/v1/operations/"+op.ID {
				t.Errorf("409 Location = %q, want the running provision", loc)
			}
		}
		var running struct{ Status string }
		s.do("GET", "/api/v1/operations/"+op.ID, s.tokenA, nil).json(t, &running)
		if running.Status != models.OpRunning {
			t.Errorf("provision is %s during the conflicting deletes, want running", running.Status)
		}
		if diff := cmp.Diff(before, snap(), cmpopts.IgnoreFields(models.Site{}, "BaseModel")); diff != "" {
			t.Errorf("conflicting deletes changed something (-before +after):\n%s", diff)
		}

		close(gate.release)
		if done := s.waitOp(s.tokenA, op.ID); done.Status != models.OpSucceeded {
			t.Fatalf("provision = %s", done.Status)
		}
		r := s.do("DELETE", "/api/v1/sites/"+op.TargetID, s.tokenA, nil)
		if r.status != http.StatusAccepted {
			t.Fatalf("DELETE after the provision finished: %d %s", r.status, r.body)
		}
		var del struct{ ID string }
		r.json(t, &del)
		if done := s.waitOp(s.tokenA, del.ID); done.Status != models.OpSucceeded {
			t.Fatalf("deprovision = %s", done.Status)
		}
	})
}
