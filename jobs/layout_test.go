package jobs_test

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/local"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/queue"
)

// site:migrate_layout brings an active site whose server block is of the old
// layout (no disable_symlinks) to the current one through the driver, and a
// second run finds it current and changes nothing; a malformed payload is
// not retried.
func TestMigrateLayoutTwiceChangesNothingTheSecondTime(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		b := setupBackups(t, db)
		root := t.TempDir()
		drv, err := local.New(local.Config{Root: root, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		site, err := b.store.SiteByID(ctx, b.siteID)
		if err != nil {
			t.Fatal(err)
		}
		vps, err := b.store.GetVPS(ctx, *site.VPSID)
		if err != nil {
			t.Fatal(err)
		}
		spec := drivers.SiteSpec{ID: site.ID, TenantID: site.TenantID, Domain: site.Domain, SiteType: site.SiteType,
			PHPVersion: site.PHPVersion, Server: drivers.Server{ID: vps.ID, IPAddress: vps.IPAddress, SSHPort: vps.SSHPort}}
		if _, err := drv.Provision(ctx, spec, nil); err != nil {
			t.Fatal(err)
		}
		confs, _ := filepath.Glob(filepath.Join(root, "*", "nginx", "sites-enabled", site.Domain+".conf"))
		if len(confs) != 1 {
			t.Fatalf("server block of %s: %v", site.Domain, confs)
		}
		current, err := os.ReadFile(confs[0])
		if err != nil {
			t.Fatal(err)
		}
		old := strings.ReplaceAll(string(current), "disable_symlinks if_not_owner from=$document_root;", "")
		if err := os.WriteFile(confs[0], []byte(old), 0o644); err != nil {
			t.Fatal(err)
		}

		h, err := jobs.NewMigrateLayout(jobs.LayoutConfig{Store: b.store, Migrator: drv, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		task, err := queue.NewSiteMigrateLayoutTask(site.ID)
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range [][2]uint64{{1, 0}, {1, 1}} {
			if err := h.ProcessTask(ctx, task); err != nil {
				t.Fatalf("run %d: %v", i+1, err)
			}
			if m, c := h.Counts(); m != want[0] || c != want[1] {
				t.Errorf("after run %d: migrated %d, current %d; want %d, %d", i+1, m, c, want[0], want[1])
			}
			if got, _ := os.ReadFile(confs[0]); string(got) != string(current) {
				t.Errorf("after run %d the server block is not the current one:\n%s", i+1, got)
			}
		}
		if err := h.ProcessTask(ctx, asynq.NewTask(queue.TypeSiteMigrateLayout, []byte(`{"site_id":"../x"}`))); !errors.Is(err, asynq.SkipRetry) {
			t.Errorf("malformed payload: %v; want SkipRetry", err)
		}
	})
}
