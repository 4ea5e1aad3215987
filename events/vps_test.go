package events_test

import (
	"testing"
	"time"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/models"
)

func TestVPSHealthOutbox(t *testing.T) {
	t.Parallel()
	e := events.VPSHealthEvent{VPSID: vpsID, Hostname: "web1.example", From: models.HealthHealthy,
		To: models.HealthUnhealthy, Reason: "unreachable", CheckKey: "2026-12-01T10:00:00Z", CheckedAt: at}
	row, err := events.VPSHealthOutbox(e)
	if err != nil {
		t.Fatal(err)
	}
	if row.TenantID != vpsID || row.Subject != vpsID || row.Topic != events.TopicVPS || row.Source != events.SourceVPS ||
		!row.OccurredAt.Equal(at.Truncate(time.Microsecond)) {
		t.Errorf("row = %+v", row)
	}
	again, _ := events.VPSHealthOutbox(e)
	if again.EventID != row.EventID || row.EventID != events.VPSHealthID(vpsID, e.CheckKey) {
		t.Errorf("event ID is not stable: %s, %s", row.EventID, again.EventID)
	}
	other := e
	other.CheckKey = "2026-12-01T10:01:00Z"
	if r, _ := events.VPSHealthOutbox(other); r.EventID == row.EventID {
		t.Error("two checks gave one event ID")
	}
	for name, mod := range map[string]func(*events.VPSHealthEvent){
		"no change":     func(e *events.VPSHealthEvent) { e.To = e.From },
		"bad status":    func(e *events.VPSHealthEvent) { e.To = "sick" },
		"no check key":  func(e *events.VPSHealthEvent) { e.CheckKey = "" },
		"no checked_at": func(e *events.VPSHealthEvent) { e.CheckedAt = time.Time{} },
	} {
		bad := e
		mod(&bad)
		if _, err := events.VPSHealthOutbox(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
