package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/chomhq/chom/models"
)

// Logical topics, versioned. The relay prefixes them (by default "chom.") when it
// publishes, so outbox rows hold "sites.v1" and consumers read "chom.sites.v1".
const (
	TopicSites = "sites.v1"
)

// Event types. A type never changes meaning once shipped; a new shape is a new version.
const (
	TypeSiteProvisioned     = "site.provisioned.v1"
	TypeSiteProvisionFailed = "site.provision_failed.v1"
	TypeSiteDeleted         = "site.deleted.v1"
)

// SourceSites is the CloudEvents source of site events.
const SourceSites = "/chom/sites"

// idNamespace scopes the name-based UUIDs of event IDs to CHOM.
var idNamespace = uuid.MustParse("6f1c1b9e-5a43-4a8e-9d1f-4f1a6f0c2b7d")

// StableID returns the event ID of the fact "eventType happened to key": a UUIDv5,
// identical every time it is computed for the same inputs.
func StableID(eventType, key string) string {
	return uuid.NewSHA1(idNamespace, []byte(eventType+"\x00"+key)).String()
}

// SiteEvent is the data of every site event.
type SiteEvent struct {
	SiteID      string    `json:"site_id"`
	TenantID    string    `json:"tenant_id"`
	Domain      string    `json:"domain"`
	SiteType    string    `json:"site_type"`
	PHPVersion  string    `json:"php_version,omitempty"`
	VPSID       string    `json:"vps_id,omitempty"`
	OperationID string    `json:"operation_id"`
	Status      string    `json:"status"`
	ErrorCode   string    `json:"error_code,omitempty"`
	Error       string    `json:"error,omitempty"`
	OccurredAt  time.Time `json:"occurred_at"`
}

// Validate reports missing fields.
func (e SiteEvent) Validate() error {
	var errs []error
	for name, v := range map[string]string{"site_id": e.SiteID, "tenant_id": e.TenantID, "domain": e.Domain,
		"site_type": e.SiteType, "operation_id": e.OperationID, "status": e.Status} {
		if v == "" {
			errs = append(errs, fmt.Errorf("site event: %s is required", name))
		}
	}
	if e.OccurredAt.IsZero() {
		errs = append(errs, errors.New("site event: occurred_at is required"))
	}
	return errors.Join(errs...)
}

// SiteOutbox builds the outbox row of a site event of eventType. Its ID derives
// from the event type and the operation, so a retried job writes the same event.
func SiteOutbox(eventType string, e SiteEvent) (models.OutboxEvent, error) {
	if err := e.Validate(); err != nil {
		return models.OutboxEvent{}, fmt.Errorf("%s: %w", eventType, err)
	}
	data, err := json.Marshal(e)
	if err != nil {
		return models.OutboxEvent{}, fmt.Errorf("%s: encode: %w", eventType, err)
	}
	return models.OutboxEvent{
		EventID:    StableID(eventType, e.OperationID),
		TenantID:   e.TenantID,
		Topic:      TopicSites,
		Type:       eventType,
		Source:     SourceSites,
		Subject:    e.SiteID,
		Data:       string(data),
		OccurredAt: e.OccurredAt,
	}, nil
}
