package integration

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/breaker"
	"github.com/chomhq/chom/drivers/local"
	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/models"
)

// countingDriver counts the calls that reached the (local) server.
type countingDriver struct {
	*local.Provisioner
	calls atomic.Int64
}

func (c *countingDriver) Provision(ctx context.Context, s drivers.SiteSpec, p drivers.ProgressFunc) (drivers.Result, error) {
	c.calls.Add(1)
	return c.Provisioner.Provision(ctx, s, p)
}

func (c *countingDriver) Deprovision(ctx context.Context, s drivers.SiteSpec) error {
	c.calls.Add(1)
	return c.Provisioner.Deprovision(ctx, s)
}

// A provision whose server's breaker is open is deferred (every ~2s, no retry
// spent) while the breaker stays open for ten minutes. A cancel request ends
// it as cancelled within a few seconds: no attempt ever reached the server,
// so there is nothing to undo there and the cancel does not wait for the
// server. The site is deleted (its domain free), its slot released, no event
// is written, the driver was never called, and the breaker is still open.
func TestCancelDeferredProvision(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		reg, err := breaker.New(breaker.Config{Failures: 1, OpenTimeout: 10 * time.Minute, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		inner := &countingDriver{}
		s := newStack(t, db, stackOpts{wrapDriver: func(p *local.Provisioner) drivers.Provisioner {
			inner.Provisioner = p
			return reg.WrapProvisioner(inner)
		}})
		// Another job met the server down: its breaker opens for ten minutes.
		_ = reg.Guard(context.Background(), drivers.SiteSpec{Server: drivers.Server{ID: s.vpsID}}, func() error {
			return fmt.Errorf("dial 192.0.2.1:22: i/o timeout: %w", drivers.ErrUnreachable)
		})
		if st := reg.State(s.vpsID); st != breaker.StateOpen {
			t.Fatalf("breaker %s, want open", st)
		}

		op := s.createSite(s.tokenA, "deferred.example", "html")
		// Wait until it has been deferred at least twice.
		deadline := time.Now().Add(20 * time.Second)
		for {
			var cur models.Operation
			if err := db.NewSelect().Model(&cur).Where("id = ?", op.ID).Scan(context.Background()); err != nil {
				t.Fatal(err)
			}
			if cur.Status != models.OpRunning && cur.Status != models.OpPending {
				t.Fatalf("provision %s while its breaker is open, want it deferred", cur.Status)
			}
			if cur.Attempts >= 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("provision attempted %d times in 20s", cur.Attempts)
			}
			time.Sleep(50 * time.Millisecond)
		}

		asked := time.Now()
		r := s.do("POST", "/api/v1/operations/"+op.ID+"/cancel", s.tokenA, nil)
		if r.status != http.StatusAccepted {
			t.Fatalf("cancel: %d %s", r.status, r.body)
		}
		var done ingress.OperationView
		for {
			s.do("GET", "/api/v1/operations/"+op.ID, s.tokenA, nil).json(t, &done)
			if models.IsTerminal(done.Status) {
				break
			}
			if time.Since(asked) > 5*time.Second {
				t.Fatalf("cancel of a deferred provision not done 5s after the request (breaker %s): %+v", reg.State(s.vpsID), done)
			}
			time.Sleep(50 * time.Millisecond)
		}
		took := time.Since(asked)
		t.Logf("cancelled %s after the request", took.Round(time.Millisecond))
		if done.Status != models.OpCancelled {
			t.Fatalf("provision %s, want cancelled: %+v", done.Status, done)
		}
		if st := reg.State(s.vpsID); st != breaker.StateOpen {
			t.Errorf("breaker %s after the cancel, want still open", st)
		}
		var final models.Operation
		if err := db.NewSelect().Model(&final).Where("id = ?", op.ID).Scan(context.Background()); err != nil {
			t.Fatal(err)
		}
		if final.ServerTouchedAt != nil {
			t.Errorf("a provision whose every call was refused is marked as having touched its server")
		}
		if n := inner.calls.Load(); n != 0 {
			t.Errorf("%d driver calls reached the server through the open breaker", n)
		}
		var site models.Site
		if err := db.NewSelect().Model(&site).Where("id = ?", op.TargetID).Scan(context.Background()); err != nil {
			t.Fatal(err)
		}
		if site.Status != models.SiteStatusDeleted || site.OperationID != nil {
			t.Errorf("site %s (operation %v), want deleted and idle", site.Status, site.OperationID)
		}
		if n := s.count("sites", "vps_id = ? AND deleted_at IS NULL", s.vpsID); n != 0 {
			t.Errorf("%d live sites still on the server", n)
		}
		if n := s.count("outbox_events", ""); n != 0 {
			t.Errorf("%d outbox rows for a cancelled provision, want none", n)
		}
		// The domain is free again: a new site takes it (and is deferred in turn).
		s.createSite(s.tokenA, "deferred.example", "html")
	})
}
