package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/local"
	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// The same task delivered twice (a worker killed mid-job, a lease that expired),
// even at the same moment, leaves exactly one site: one active row, one slot taken,
// one set of files, one event.
func TestSameTaskDeliveredTwice(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true})
		op := s.createSite(s.tokenA, "twice.example", "html")
		payload, _ := json.Marshal(queue.OperationPayload{OperationID: op.ID, TenantID: s.tenantA})
		task := asynq.NewTask(queue.TypeSiteProvision, payload)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range errs {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = s.provision.ProcessTask(context.Background(), task) }()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("delivery failed: %v", err)
			}
		}
		// And a third, late delivery after success.
		if err := s.provision.ProcessTask(context.Background(), task); err != nil {
			t.Fatalf("late delivery: %v", err)
		}
		if n := s.count("sites", "domain = ? AND status = ?", "twice.example", models.SiteStatusActive); n != 1 {
			t.Errorf("active sites = %d, want 1", n)
		}
		if n := s.count("outbox_events", "event_type = ?", "site.provisioned.v1"); n != 1 {
			t.Errorf("provisioned events = %d, want 1", n)
		}
		vps, _ := s.store.GetVPS(context.Background(), s.vpsID)
		if vps.SiteCount != 1 {
			t.Errorf("vps site_count = %d, want 1", vps.SiteCount)
		}
		confs, _ := filepath.Glob(filepath.Join(s.root, s.vpsID, "nginx", "sites-enabled", "*.conf"))
		if len(confs) != 1 {
			t.Errorf("nginx server blocks = %v, want one", confs)
		}
		got, _ := s.store.OperationByID(context.Background(), op.ID)
		if got.Status != models.OpSucceeded {
			t.Errorf("operation = %s", got.Status)
		}
	})
}

// Concurrent provisions never overbook a server: with two servers of capacity 3
// and ten sites at once, six are placed (three on each) and four fail with
// no_capacity after their retries, their sites marked failed and their files undone.
func TestConcurrentProvisionsNeverOverbook(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{vpsCapacity: []int{3, 3}})
		const n = 10
		ops := make([]ingress.OperationView, n)
		var wg sync.WaitGroup
		for i := range ops {
			wg.Add(1)
			go func() { defer wg.Done(); ops[i] = s.createSite(s.tokenA, fmt.Sprintf("busy%d.example", i), "html") }()
		}
		wg.Wait()
		counts := map[string]int{}
		for _, op := range ops {
			done := s.waitOp(s.tokenA, op.ID)
			counts[done.Status]++
			if done.Status == models.OpFailed && (done.Error == nil || done.Error.Code != "no_capacity") {
				t.Errorf("failed operation error = %+v", done.Error)
			}
		}
		if counts[models.OpSucceeded] != 6 || counts[models.OpFailed] != 4 {
			t.Fatalf("outcomes = %v, want 6 succeeded and 4 failed", counts)
		}
		var rows []struct {
			ID           string `bun:"id"`
			SiteCount    int    `bun:"site_count"`
			SiteCapacity int    `bun:"site_capacity"`
		}
		if err := db.NewSelect().Table("vps_servers").Column("id", "site_count", "site_capacity").Scan(context.Background(), &rows); err != nil {
			t.Fatal(err)
		}
		for _, v := range rows {
			bound := s.count("sites", "vps_id = ? AND deleted_at IS NULL", v.ID)
			if v.SiteCount != 3 || bound != 3 {
				t.Errorf("vps %s: site_count %d, sites bound %d, want 3 and 3", v.ID, v.SiteCount, bound)
			}
		}
		if got := s.count("sites", "status = ?", models.SiteStatusFailed); got != 4 {
			t.Errorf("failed sites = %d, want 4", got)
		}
		if got := s.count("outbox_events", "event_type = ?", "site.provision_failed.v1"); got != 4 {
			t.Errorf("provision_failed events = %d, want 4", got)
		}
	})
}

// flakyDriver fails every Provision after its first step, to exercise the last
// retry's compensation.
type flakyDriver struct {
	*local.Provisioner
	provisions, deprovisions atomic.Int32
}

var errDiskFull = errors.New("disk full")

func (f *flakyDriver) Provision(ctx context.Context, site drivers.SiteSpec, progress drivers.ProgressFunc) (drivers.Result, error) {
	f.provisions.Add(1)
	_, err := f.Provisioner.Provision(ctx, site, func(ctx context.Context, step drivers.Step) error {
		if err := progress(ctx, step); err != nil {
			return err
		}
		if step.Name == drivers.StepIndexPage {
			return errDiskFull
		}
		return nil
	})
	return drivers.Result{}, err
}

func (f *flakyDriver) Deprovision(ctx context.Context, site drivers.SiteSpec) error {
	f.deprovisions.Add(1)
	return f.Provisioner.Deprovision(ctx, site)
}

// A provision that fails on every attempt is retried up to its limit, then its
// work on the server is undone (compensation), the slot freed and the site failed.
func TestFailedProvisionIsCompensated(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		var drv *flakyDriver
		s := newStack(t, db, stackOpts{wrapDriver: func(p *local.Provisioner) drivers.Provisioner {
			drv = &flakyDriver{Provisioner: p}
			return drv
		}})
		op := s.createSite(s.tokenA, "flaky.example", "html")
		done := s.waitOp(s.tokenA, op.ID)
		if done.Status != models.OpFailed || done.Error == nil || done.Error.Code != "provisioning_failed" {
			t.Fatalf("operation = %+v", done)
		}
		_, spec, _ := queue.TaskForOperation(&models.Operation{Type: models.OpTypeSiteProvision})
		if got, want := int(drv.provisions.Load()), spec.MaxRetry+1; got != want {
			t.Errorf("attempts = %d, want %d", got, want)
		}
		if drv.deprovisions.Load() != 1 {
			t.Errorf("compensations = %d, want 1", drv.deprovisions.Load())
		}
		if _, err := os.Stat(filepath.Join(s.root, s.vpsID, "sites", "flaky.example")); !os.IsNotExist(err) {
			t.Errorf("site files left behind: %v", err)
		}
		vps, _ := s.store.GetVPS(context.Background(), s.vpsID)
		if vps.SiteCount != 0 {
			t.Errorf("slot not freed: site_count %d", vps.SiteCount)
		}
		var site models.Site
		s.do("GET", "/api/v1/sites/"+op.TargetID, s.tokenA, nil).json(t, &site)
		if site.Status != models.SiteStatusFailed || site.OperationID != nil {
			t.Errorf("site = %+v", site)
		}
		// A failed site can be deleted.
		r := s.do("DELETE", "/api/v1/sites/"+site.ID, s.tokenA, nil)
		if r.status != http.StatusAccepted {
			t.Fatalf("DELETE failed site: %d %s", r.status, r.body)
		}
	})
}

// A malformed task payload is archived at once (no retry) and changes nothing.
func TestMalformedPayloadSkipsRetry(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true})
		for _, payload := range []string{`{`, `{"operation_id":""}`, `[]`} {
			err := s.provision.ProcessTask(context.Background(), asynq.NewTask(queue.TypeSiteProvision, []byte(payload)))
			if !errors.Is(err, asynq.SkipRetry) || !errors.Is(err, queue.ErrBadPayload) {
				t.Errorf("payload %s: err = %v, want SkipRetry", payload, err)
			}
		}
		err := s.provision.ProcessTask(context.Background(), asynq.NewTask(queue.TypeSiteProvision,
			[]byte(`{"operation_id":"op_00000000000000000000000000000000","tenant_id":"x"}`)))
		if !errors.Is(err, asynq.SkipRetry) {
			t.Errorf("unknown operation: err = %v, want SkipRetry", err)
		}
	})
}
