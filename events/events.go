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
// publishes, so outbox rows hold "sites.v1" and consumers read "chom.sites.v1"
// (see [FullTopic]). A topic never changes its meaning or partition count once
// shipped: a new shape of events goes to a new version of the topic.
const (
	TopicSites   = "sites.v1"
	TopicUsage   = "usage.v1"
	TopicBackups = "backups.v1"
	TopicVPS     = "vps.v1"

	// TopicBillingDLQ receives the records the reference billing consumer could
	// not parse or validate, with the reason in a header.
	TopicBillingDLQ = "billing.dlq.v1"
)

// Topics returns the logical topics CHOM publishes to, which the relay creates at
// start-up when they are missing.
func Topics() []string { return []string{TopicSites, TopicUsage, TopicBackups, TopicVPS} }

// DefaultTopicPrefix is the prefix of every topic name unless configured.
const DefaultTopicPrefix = "chom"

// FullTopic returns the Kafka topic name of a logical topic under prefix:
// "chom" and "sites.v1" give "chom.sites.v1"; an empty prefix leaves the topic as is.
func FullTopic(prefix, topic string) string {
	if prefix == "" {
		return topic
	}
	return prefix + "." + topic
}

// ValidTopicPrefix reports whether prefix can start Kafka topic names: ASCII
// letters, digits, '.', '_' and '-', at most 200 characters, not "." or "..".
func ValidTopicPrefix(prefix string) error {
	if len(prefix) > 200 {
		return fmt.Errorf("topic prefix %q: longer than 200 characters", prefix)
	}
	if prefix == "." || prefix == ".." {
		return fmt.Errorf("topic prefix %q: not allowed", prefix)
	}
	for _, r := range prefix {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("topic prefix %q: only letters, digits, '.', '_' and '-' are allowed", prefix)
		}
	}
	return nil
}

// Event types. A type never changes meaning once shipped; a new shape is a new version.
const (
	TypeSiteProvisioned     = "site.provisioned.v1"
	TypeSiteProvisionFailed = "site.provision_failed.v1"
	TypeSiteDeleted         = "site.deleted.v1"
	TypeUsageRecorded       = "usage.recorded.v1"
)

// Types returns every event type CHOM emits, each with a JSON Schema in schemas/.
func Types() []string {
	return []string{TypeSiteProvisioned, TypeSiteProvisionFailed, TypeSiteDeleted, TypeUsageRecorded,
		TypeVPSHealthChanged, TypeBackupCompleted, TypeBackupFailed, TypeBackupRestored, TypeBackupDeleted,
		TypeSiteCertificateIssued, TypeSiteCertificateFailed}
}

// CloudEvents sources of CHOM's events. A consumer deduplicates on source + ID.
const (
	SourceSites = "/chom/sites"
	SourceUsage = "/chom/usage"
)

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
	// The databases keep microseconds: the data says what ce_time will say.
	e.OccurredAt = e.OccurredAt.UTC().Truncate(time.Microsecond)
	return outboxRow(outboxHeader{
		ID: StableID(eventType, e.OperationID), TenantID: e.TenantID,
		Topic: TopicSites, Type: eventType, Source: SourceSites,
		Subject: e.SiteID, OccurredAt: e.OccurredAt,
	}, e)
}

// outboxHeader is what an outbox row says about its event besides the data.
type outboxHeader struct {
	ID, TenantID, Topic, Type, Source, Subject string
	OccurredAt                                 time.Time
}

// outboxRow encodes data, an event already validated and normalised by its
// builder, as the JSON of an outbox row with header h.
func outboxRow(h outboxHeader, data any) (models.OutboxEvent, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return models.OutboxEvent{}, fmt.Errorf("%s: encode: %w", h.Type, err)
	}
	return models.OutboxEvent{
		EventID:    h.ID,
		TenantID:   h.TenantID,
		Topic:      h.Topic,
		Type:       h.Type,
		Source:     h.Source,
		Subject:    h.Subject,
		Data:       string(b),
		OccurredAt: h.OccurredAt,
	}, nil
}
