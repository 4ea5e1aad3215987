package queue

import (
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/hibiken/asynq"
)

// TypeSiteMigrateLayout brings one site's server-side layout to the current
// one (drivers.LayoutMigrator; docs/operations.md, Isolation).
const TypeSiteMigrateLayout = "site:migrate_layout"

// SiteMigrateLayoutPayload is the payload of site:migrate_layout.
type SiteMigrateLayoutPayload struct {
	SiteID string `json:"site_id"`
}

// siteIDPattern is the shape of a site ID (models.PrefixSite + 32 hex); it
// goes into a task ID, so nothing else is accepted.
var siteIDPattern = regexp.MustCompile(`^site_[0-9a-f]{32}$`)

// Validate reports a missing or invalid site ID.
func (p SiteMigrateLayoutPayload) Validate() error {
	if !siteIDPattern.MatchString(p.SiteID) {
		return fmt.Errorf("site_id %q must be a site ID", p.SiteID)
	}
	return nil
}

// NewSiteMigrateLayoutTask returns the site:migrate_layout task of siteID, on
// the low queue. Its task ID is the site's, so a migration already waiting or
// running is not queued twice; the migration is idempotent, so a retry (at
// most 5) or a later one changes nothing more.
func NewSiteMigrateLayoutTask(siteID string) (*asynq.Task, error) {
	p := SiteMigrateLayoutPayload{SiteID: siteID}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("queue: site:migrate_layout: %w", err)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("queue: encode site:migrate_layout payload: %w", err)
	}
	return asynq.NewTask(TypeSiteMigrateLayout, b, asynq.TaskID("migrate-layout:"+siteID),
		asynq.Queue(QueueLow), asynq.MaxRetry(5), asynq.Timeout(10*time.Minute), asynq.Retention(time.Hour)), nil
}

// DecodeSiteMigrateLayoutPayload parses and validates a site:migrate_layout
// payload (unknown fields refused); a bad one wraps ErrBadPayload.
func DecodeSiteMigrateLayoutPayload(b []byte) (SiteMigrateLayoutPayload, error) {
	var p SiteMigrateLayoutPayload
	if err := decodeStrict(b, &p); err != nil {
		return p, err
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("%w: site:migrate_layout: %w", ErrBadPayload, err)
	}
	return p, nil
}

// TypeSiteMigrateLayoutSweep enqueues site:migrate_layout for every active
// site; the scheduler enqueues it every CHOM_LAYOUT_MIGRATE_INTERVAL, so
// sites provisioned under an older layout converge after an upgrade.
const TypeSiteMigrateLayoutSweep = "site:migrate_layout_sweep"

// NewSiteMigrateLayoutSweepTask builds the periodic site:migrate_layout_sweep
// task, on the low queue.
func NewSiteMigrateLayoutSweepTask() *asynq.Task {
	return asynq.NewTask(TypeSiteMigrateLayoutSweep, nil, asynq.Queue(QueueLow), asynq.MaxRetry(3), asynq.Timeout(10*time.Minute))
}
