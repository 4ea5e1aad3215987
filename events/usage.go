package events

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/chomhq/chom/models"
)

// metricName is the shape of a usage metric or unit name: lower-case words
// joined by '_', '.' or '-', as in "storage_bytes" or "site-hours".
var metricName = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,62}$`)

// siteIDPattern is the shape of the optional site_id: a site ID of models.
var siteIDPattern = regexp.MustCompile(`^site_[0-9a-f]{32}$`)

// UsageEvent is the data of usage.recorded.v1: a metered quantity of one tenant
// for one period. A (tenant, metric, period start) is metered once; its quantity
// is final when the event is emitted, and its ID is the same every time it is
// built, so a consumer bills it exactly once.
type UsageEvent struct {
	TenantID string `json:"tenant_id"`
	Metric   string `json:"metric"`
	// SiteID, when set, makes the event one site's share of the tenant's
	// total of the same metric and period (the event without site_id); a
	// billing consumer bills the totals and may show these as a breakdown.
	// Optional in the schema, so events from before it validate unchanged.
	SiteID      string    `json:"site_id,omitempty"`
	Quantity    int64     `json:"quantity"`
	Unit        string    `json:"unit"`
	PeriodStart time.Time `json:"period_start"`
	PeriodEnd   time.Time `json:"period_end"`
	OccurredAt  time.Time `json:"occurred_at"`
}

// Validate reports every missing or invalid field at once.
func (e UsageEvent) Validate() error {
	var errs []error
	if e.TenantID == "" {
		errs = append(errs, errors.New("usage event: tenant_id is required"))
	}
	if !metricName.MatchString(e.Metric) {
		errs = append(errs, fmt.Errorf("usage event: metric %q must match %s", e.Metric, metricName))
	}
	if !metricName.MatchString(e.Unit) {
		errs = append(errs, fmt.Errorf("usage event: unit %q must match %s", e.Unit, metricName))
	}
	if e.SiteID != "" && !siteIDPattern.MatchString(e.SiteID) {
		errs = append(errs, fmt.Errorf("usage event: site_id %q must match %s", e.SiteID, siteIDPattern))
	}
	if e.Quantity < 0 {
		errs = append(errs, errors.New("usage event: quantity must not be negative"))
	}
	if e.PeriodStart.IsZero() {
		errs = append(errs, errors.New("usage event: period_start is required"))
	} else if !e.PeriodEnd.After(e.PeriodStart) {
		errs = append(errs, errors.New("usage event: period_end must be after period_start"))
	}
	if e.OccurredAt.IsZero() {
		errs = append(errs, errors.New("usage event: occurred_at is required"))
	}
	return errors.Join(errs...)
}

// UsageID is the event ID of the usage of tenant for metric in the period that
// starts at periodStart: the same inputs always give the same ID.
func UsageID(tenantID, metric string, periodStart time.Time) string {
	return StableID(TypeUsageRecorded, tenantID+"\x00"+metric+"\x00"+periodStart.UTC().Format(time.RFC3339Nano))
}

// UsageRecordID is the event ID of one usage record: UsageID for a tenant total
// (siteID empty, so every ID emitted before site_id existed is unchanged), and
// for one site's share an ID that also derives from the site, so the shares and
// the total of a metric and period never share an ID.
func UsageRecordID(tenantID, metric, siteID string, periodStart time.Time) string {
	if siteID == "" {
		return UsageID(tenantID, metric, periodStart)
	}
	return StableID(TypeUsageRecorded, tenantID+"\x00"+metric+"\x00"+periodStart.UTC().Format(time.RFC3339Nano)+"\x00"+siteID)
}

// UsageOutbox builds the outbox row of a usage.recorded.v1 event. Times are
// written in UTC; the subject is the metric. It fails when e does not validate.
func UsageOutbox(e UsageEvent) (models.OutboxEvent, error) {
	if err := e.Validate(); err != nil {
		return models.OutboxEvent{}, fmt.Errorf("%s: %w", TypeUsageRecorded, err)
	}
	// UTC, and microseconds as the databases keep them: the data says what
	// ce_time will say.
	e.PeriodStart, e.PeriodEnd = e.PeriodStart.UTC(), e.PeriodEnd.UTC()
	e.OccurredAt = e.OccurredAt.UTC().Truncate(time.Microsecond)
	return outboxRow(outboxHeader{
		ID: UsageRecordID(e.TenantID, e.Metric, e.SiteID, e.PeriodStart), TenantID: e.TenantID,
		Topic: TopicUsage, Type: TypeUsageRecorded, Source: SourceUsage,
		Subject: e.Metric, OccurredAt: e.OccurredAt,
	}, e)
}
