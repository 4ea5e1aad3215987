package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// LayoutConfig is what MigrateLayout needs.
type LayoutConfig struct {
	Store *models.Store
	// Migrator is the driver's drivers.LayoutMigrator, under the job guard.
	Migrator drivers.LayoutMigrator
	Logger   *slog.Logger
}

// MigrateLayout runs site:migrate_layout: it brings one active site's
// server-side layout to the current one (drivers.LayoutMigrator: log
// directory ownership, document root modes, pool settings, server block;
// docs/operations.md, Isolation). It is idempotent, like the driver call: a
// second run changes nothing. A site that is gone, not active or on no server
// has nothing to migrate; a re-provision converges it anyway.
type MigrateLayout struct {
	cfg               LayoutConfig
	migrated, current atomic.Uint64
}

// NewMigrateLayout returns the handler, or an error naming every missing
// field of cfg.
func NewMigrateLayout(cfg LayoutConfig) (*MigrateLayout, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("jobs: migrate layout: Store is required"))
	}
	if cfg.Migrator == nil {
		errs = append(errs, errors.New("jobs: migrate layout: Migrator is required"))
	}
	if cfg.Logger == nil {
		errs = append(errs, errors.New("jobs: migrate layout: Logger is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &MigrateLayout{cfg: cfg}, nil
}

// Routes is site:migrate_layout.
func (h *MigrateLayout) Routes() []Route { return []Route{{queue.TypeSiteMigrateLayout, h}} }

// Counts returns how many runs changed a site (migrated) and how many found
// it already current.
func (h *MigrateLayout) Counts() (migrated, current uint64) {
	return h.migrated.Load(), h.current.Load()
}

// ProcessTask runs one delivery. A malformed payload or a spec the driver
// refuses is not retried (asynq.SkipRetry); an unreachable server is.
func (h *MigrateLayout) ProcessTask(ctx context.Context, t *asynq.Task) error {
	p, err := queue.DecodeSiteMigrateLayoutPayload(t.Payload())
	if err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	log := h.cfg.Logger.With("task", queue.TypeSiteMigrateLayout, "site_id", p.SiteID)
	site, err := h.cfg.Store.SiteByID(ctx, p.SiteID)
	if errors.Is(err, models.ErrNotFound) {
		log.InfoContext(ctx, "site gone; no layout to migrate")
		return nil
	}
	if err != nil {
		return fmt.Errorf("migrate layout of site %s: %w", p.SiteID, err)
	}
	if site.Status != models.SiteStatusActive || site.VPSID == nil {
		log.InfoContext(ctx, "site not active on a server; no layout to migrate", "status", site.Status)
		return nil
	}
	vps, err := h.cfg.Store.GetVPS(ctx, *site.VPSID)
	if err != nil {
		return fmt.Errorf("migrate layout of site %s: server %s: %w", p.SiteID, *site.VPSID, err)
	}
	changed, err := h.cfg.Migrator.MigrateLayout(ctx, siteSpec(site, vps))
	if errors.Is(err, drivers.ErrInvalidSpec) {
		return fmt.Errorf("migrate layout of site %s: %w: %w", p.SiteID, err, asynq.SkipRetry)
	}
	if err != nil {
		return fmt.Errorf("migrate layout of site %s: %w", p.SiteID, err)
	}
	if changed {
		h.migrated.Add(1)
	} else {
		h.current.Add(1)
	}
	log.InfoContext(ctx, "site layout migrated", "vps_id", vps.ID, "changed", changed)
	return nil
}

// LayoutEnqueuer is the part of queue.Enqueuer the layout sweep uses; like
// it, a task already queued (its ID taken) is not an error.
type LayoutEnqueuer interface {
	Enqueue(ctx context.Context, task *asynq.Task, opts ...asynq.Option) error
}

// layoutSweepPage is how many site IDs the sweep reads at once.
const layoutSweepPage = 500

// MigrateLayoutSweep runs site:migrate_layout_sweep: it enqueues
// site:migrate_layout for every active site, page by page. A site whose
// migration is already queued is skipped by its task ID; a migration that
// finds the site current changes nothing, so sweeping a converged fleet costs
// one cheap check per site.
type MigrateLayoutSweep struct {
	store    *models.Store
	enqueuer LayoutEnqueuer
	log      *slog.Logger
}

// NewMigrateLayoutSweep returns the sweep over store and enqueuer.
func NewMigrateLayoutSweep(store *models.Store, enqueuer LayoutEnqueuer, log *slog.Logger) (*MigrateLayoutSweep, error) {
	if store == nil || enqueuer == nil || log == nil {
		return nil, errors.New("jobs: migrate layout sweep: Store, Enqueuer and Logger are required")
	}
	return &MigrateLayoutSweep{store: store, enqueuer: enqueuer, log: log}, nil
}

// Routes is site:migrate_layout_sweep.
func (h *MigrateLayoutSweep) Routes() []Route { return []Route{{queue.TypeSiteMigrateLayoutSweep, h}} }

// ProcessTask enqueues every active site's migration; a failed page is
// returned for backoff after the pages before it were enqueued.
func (h *MigrateLayoutSweep) ProcessTask(ctx context.Context, _ *asynq.Task) error {
	n, err := h.Sweep(ctx)
	h.log.InfoContext(ctx, "layout sweep", "sites", n, "ok", err == nil)
	return err
}

// Sweep enqueues site:migrate_layout for every active site and returns how
// many it enqueued (those already queued included).
func (h *MigrateLayoutSweep) Sweep(ctx context.Context) (int, error) {
	n, after := 0, ""
	for {
		ids, err := h.store.ActiveSiteIDs(ctx, after, layoutSweepPage)
		if err != nil {
			return n, err
		}
		for _, id := range ids {
			task, err := queue.NewSiteMigrateLayoutTask(id)
			if err != nil {
				return n, err
			}
			if err := h.enqueuer.Enqueue(ctx, task); err != nil {
				return n, fmt.Errorf("enqueue the layout migration of %s: %w", id, err)
			}
			n++
		}
		if len(ids) < layoutSweepPage {
			return n, nil
		}
		after = ids[len(ids)-1]
	}
}
