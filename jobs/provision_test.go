package jobs_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// stepDriver reports the local driver's steps; before the step named
// blockAt it calls before (when set), and after the last step it calls after
// (when set). It counts its calls.
type stepDriver struct {
	blockAt      string
	before       func()
	after        func()
	provisions   atomic.Int32
	deprovisions atomic.Int32
}

func (d *stepDriver) Provision(ctx context.Context, s drivers.SiteSpec, progress drivers.ProgressFunc) (drivers.Result, error) {
	d.provisions.Add(1)
	for _, st := range []drivers.Step{{Name: drivers.StepSiteRoot, Progress: 20}, {Name: drivers.StepIndexPage, Progress: 40},
		{Name: drivers.StepPHPPool, Progress: 60}, {Name: drivers.StepNginxConfig, Progress: 80}, {Name: drivers.StepReload, Progress: 100}} {
		if st.Name == d.blockAt && d.before != nil {
			d.before()
		}
		if err := progress(ctx, st); err != nil {
			return drivers.Result{}, err
		}
	}
	if d.after != nil {
		d.after()
	}
	return drivers.Result{DocumentRoot: "/srv/" + s.Domain + "/public"}, nil
}

func (d *stepDriver) Deprovision(context.Context, drivers.SiteSpec) error {
	d.deprovisions.Add(1)
	return nil
}

// provisionBundle is a store with one server and a provision handler over drv.
type provisionBundle struct {
	store  *models.Store
	tenant string
	prov   *jobs.ProvisionSite
}

func newProvisionBundle(t *testing.T, db *bun.DB, drv drivers.Provisioner) *provisionBundle {
	t.Helper()
	ctx := t.Context()
	if _, err := models.MigrateUp(ctx, db); err != nil {
		t.Fatal(err)
	}
	store, err := models.New(models.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	ten, err := store.EnsureTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.RegisterVPS(ctx, models.Accept{}, models.RegisterVPSParams{Hostname: "web1.example", IPAddress: "192.0.2.1",
		SSHPort: 22, Provider: "test", Region: "eu", Allocation: models.AllocationShared, SiteCapacity: 10}); err != nil {
		t.Fatal(err)
	}
	prov, err := jobs.NewProvisionSite(jobs.Deps{Store: store, Provisioner: drv, Notifier: jobs.NopNotifier{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return &provisionBundle{store: store, tenant: ten.ID, prov: prov}
}

// create accepts a site on domain and returns its provision operation.
func (b *provisionBundle) create(t *testing.T, domain string) *models.Operation {
	t.Helper()
	acc, err := b.store.CreateSite(t.Context(), models.CreateSiteParams{Accept: models.Accept{TenantID: b.tenant, Actor: "tok_test"},
		Domain: domain, SiteType: "php", PHPVersion: "8.3"})
	if err != nil {
		t.Fatal(err)
	}
	return acc.Operation
}

// run delivers op's task to the handler, as asynq would.
func (b *provisionBundle) run(ctx context.Context, op *models.Operation) error {
	task, _, err := queue.TaskForOperation(op)
	if err != nil {
		return err
	}
	return b.prov.ProcessTask(ctx, task)
}

// A provision stuck at a step shows how far it got: the progress of the
// steps it finished, which came too quickly to be recorded one by one, is
// recorded while it waits.
func TestProvisionRecordsProgressWhileAStepHangs(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		hung, release := make(chan struct{}), make(chan struct{})
		drv := &stepDriver{blockAt: drivers.StepReload, before: func() { close(hung); <-release }}
		b := newProvisionBundle(t, db, drv)
		op := b.create(t, "stuck.example")
		done := make(chan error, 1)
		go func() { done <- b.run(t.Context(), op) }()
		<-hung
		// nginx_config ends at 80 % of the driver's share: 10 + 0.9 × 80.
		deadline := time.Now().Add(10 * time.Second)
		var got *models.Operation
		for {
			var err error
			if got, err = b.store.OperationByID(t.Context(), op.ID); err != nil {
				t.Fatal(err)
			}
			if got.Progress >= 82 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatalf("provision: %v", err)
		}
		if got.Progress != 82 || got.Status != models.OpRunning {
			t.Fatalf("while the reload hung: %s at %d %%, want running at 82 %%", got.Status, got.Progress)
		}
		end, err := b.store.OperationByID(t.Context(), op.ID)
		if err != nil {
			t.Fatal(err)
		}
		if end.Status != models.OpSucceeded || end.Progress != 100 {
			t.Fatalf("after the reload: %s at %d %%, want succeeded at 100 %%", end.Status, end.Progress)
		}
	})
}

// A cancel asked after the job's last look between steps, while the driver
// finishes, is still honoured: the success does not commit, the site is
// undone on its server once and deleted, the operation ends cancelled with
// no event (a cancelled provision writes none).
func TestProvisionCancelledAfterTheLastStep(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		drv := &stepDriver{}
		b := newProvisionBundle(t, db, drv)
		op := b.create(t, "late.example")
		drv.after = func() {
			if _, err := b.store.CancelOperation(context.WithoutCancel(t.Context()), b.tenant, op.ID); err != nil {
				t.Errorf("cancel: %v", err)
			}
		}
		if err := b.run(t.Context(), op); err != nil {
			t.Fatalf("provision: %v", err)
		}
		end, err := b.store.OperationByID(t.Context(), op.ID)
		if err != nil {
			t.Fatal(err)
		}
		site, err := b.store.SiteByID(t.Context(), op.TargetID)
		if err != nil {
			t.Fatal(err)
		}
		if end.Status != models.OpCancelled || site.Status != models.SiteStatusDeleted || site.VPSID != nil {
			t.Errorf("operation %s, site %s on %v; want cancelled, deleted, unplaced", end.Status, site.Status, site.VPSID)
		}
		if p, d := drv.provisions.Load(), drv.deprovisions.Load(); p != 1 || d != 1 {
			t.Errorf("driver: %d provisions, %d deprovisions; want 1 and 1 (the undo)", p, d)
		}
		n, err := db.NewSelect().Table("outbox_events").Count(t.Context())
		if err != nil || n != 0 {
			t.Errorf("%d outbox rows (%v), want none", n, err)
		}
	})
}
