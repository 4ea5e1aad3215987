package events

import (
	"errors"
	"fmt"
	"time"

	"github.com/chomhq/chom/models"
)

// TypeVPSHealthChanged is emitted when a server's health status changes (after
// hysteresis), on TopicVPS.
const TypeVPSHealthChanged = "vps.health_changed.v1"

// SourceVPS is the CloudEvents source of server events.
const SourceVPS = "/chom/vps"

// HealthMeasurements summarises the check that changed a server's status.
// Percentages are 0–100 with one decimal; a measurement the check could not
// take is absent.
type HealthMeasurements struct {
	Reachable      bool     `json:"reachable"`
	ConnectMS      *float64 `json:"connect_ms,omitempty"`
	Load1          *float64 `json:"load1,omitempty"`
	LoadPerCPU     *float64 `json:"load_per_cpu,omitempty"`
	CPUs           *int     `json:"cpus,omitempty"`
	MemUsedPercent *float64 `json:"mem_used_percent,omitempty"`
	DiskUsedPct    *float64 `json:"disk_used_percent,omitempty"`
	HTTPStatus     *int     `json:"http_status,omitempty"`
}

// VPSHealthEvent is the data of vps.health_changed.v1. Servers belong to the
// platform, not to a tenant, so the record key is the VPS ID (a server's
// transitions stay in order on one partition); TenantID is set only for a
// dedicated server.
type VPSHealthEvent struct {
	VPSID    string `json:"vps_id"`
	Hostname string `json:"hostname"`
	TenantID string `json:"tenant_id,omitempty"`
	From     string `json:"from"`
	To       string `json:"to"`
	Reason   string `json:"reason"`
	// CheckKey is the check that decided the change: the sweep period (RFC 3339)
	// or the operation ID of an on-demand check. The event ID derives from it.
	CheckKey     string             `json:"check_key"`
	Measurements HealthMeasurements `json:"measurements"`
	CheckedAt    time.Time          `json:"checked_at"`
}

var healthStatuses = map[string]bool{
	models.HealthHealthy: true, models.HealthDegraded: true, models.HealthUnhealthy: true, models.HealthUnknown: true,
}

// Validate reports every missing or invalid field at once.
func (e VPSHealthEvent) Validate() error {
	var errs []error
	for name, v := range map[string]string{"vps_id": e.VPSID, "hostname": e.Hostname, "check_key": e.CheckKey, "reason": e.Reason} {
		if v == "" {
			errs = append(errs, fmt.Errorf("vps health event: %s is required", name))
		}
	}
	if !healthStatuses[e.From] || !healthStatuses[e.To] {
		errs = append(errs, fmt.Errorf("vps health event: from %q and to %q must be health statuses", e.From, e.To))
	} else if e.From == e.To {
		errs = append(errs, errors.New("vps health event: from and to must differ"))
	}
	if e.CheckedAt.IsZero() {
		errs = append(errs, errors.New("vps health event: checked_at is required"))
	}
	return errors.Join(errs...)
}

// VPSHealthID is the event ID of the change decided by check key on server vpsID.
func VPSHealthID(vpsID, checkKey string) string {
	return StableID(TypeVPSHealthChanged, vpsID+"\x00"+checkKey)
}

// VPSHealthOutbox builds the outbox row of a vps.health_changed.v1 event: topic
// vps.v1, key and subject the VPS ID. It fails when e does not validate.
func VPSHealthOutbox(e VPSHealthEvent) (models.OutboxEvent, error) {
	if err := e.Validate(); err != nil {
		return models.OutboxEvent{}, fmt.Errorf("%s: %w", TypeVPSHealthChanged, err)
	}
	e.CheckedAt = e.CheckedAt.UTC().Truncate(time.Microsecond)
	return outboxRow(outboxHeader{
		ID: VPSHealthID(e.VPSID, e.CheckKey), TenantID: e.VPSID,
		Topic: TopicVPS, Type: TypeVPSHealthChanged, Source: SourceVPS,
		Subject: e.VPSID, OccurredAt: e.CheckedAt,
	}, e)
}
