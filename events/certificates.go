package events

import (
	"errors"
	"fmt"
	"time"

	"github.com/chomhq/chom/models"
)

// Certificate event types, on TopicSites (keyed by tenant, subject the site):
// a certificate is part of how a site is served.
const (
	// TypeSiteCertificateIssued: a certificate was installed on the site's
	// server and is served (issued through ACME, renewed, or uploaded).
	TypeSiteCertificateIssued = "site.certificate_issued.v1"
	// TypeSiteCertificateFailed: a certificate operation failed for good; the
	// site serves what it served before.
	TypeSiteCertificateFailed = "site.certificate_failed.v1"
)

// CertificateEvent is the data of every certificate event.
type CertificateEvent struct {
	SiteID      string `json:"site_id"`
	TenantID    string `json:"tenant_id"`
	Domain      string `json:"domain"`
	OperationID string `json:"operation_id"`
	// Reason is why the operation ran: provision, request, renewal, upload.
	Reason string `json:"reason"`
	// Domains are the names on the certificate (issued) or asked for (failed).
	Domains []string `json:"domains"`
	// Source, Issuer, Serial, NotBefore, NotAfter and RenewAfter describe the
	// certificate installed (issued events only).
	Source     string    `json:"source,omitempty"`
	Issuer     string    `json:"issuer,omitempty"`
	Serial     string    `json:"serial,omitempty"`
	NotBefore  time.Time `json:"not_before,omitzero"`
	NotAfter   time.Time `json:"not_after,omitzero"`
	RenewAfter time.Time `json:"renew_after,omitzero"`
	// ErrorCode and Error say why it failed (failed events only).
	ErrorCode  string    `json:"error_code,omitempty"`
	Error      string    `json:"error,omitempty"`
	OccurredAt time.Time `json:"occurred_at"`
}

// Validate reports every missing field at once.
func (e CertificateEvent) Validate() error {
	var errs []error
	for name, v := range map[string]string{"site_id": e.SiteID, "tenant_id": e.TenantID, "domain": e.Domain,
		"operation_id": e.OperationID, "reason": e.Reason} {
		if v == "" {
			errs = append(errs, fmt.Errorf("certificate event: %s is required", name))
		}
	}
	if len(e.Domains) == 0 {
		errs = append(errs, errors.New("certificate event: domains is required"))
	}
	if e.OccurredAt.IsZero() {
		errs = append(errs, errors.New("certificate event: occurred_at is required"))
	}
	return errors.Join(errs...)
}

// CertificateOutbox builds the outbox row of a certificate event of
// eventType: topic sites.v1, key the tenant, subject the site. Its ID
// derives from the event type and the operation, so a retried job writes
// the same event.
func CertificateOutbox(eventType string, e CertificateEvent) (models.OutboxEvent, error) {
	if err := e.Validate(); err != nil {
		return models.OutboxEvent{}, fmt.Errorf("%s: %w", eventType, err)
	}
	for _, t := range []*time.Time{&e.OccurredAt, &e.NotBefore, &e.NotAfter, &e.RenewAfter} {
		if !t.IsZero() {
			*t = t.UTC().Truncate(time.Microsecond)
		}
	}
	return outboxRow(outboxHeader{
		ID: StableID(eventType, e.OperationID), TenantID: e.TenantID,
		Topic: TopicSites, Type: eventType, Source: SourceSites,
		Subject: e.SiteID, OccurredAt: e.OccurredAt,
	}, e)
}
