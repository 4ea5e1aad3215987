package events_test

import (
	"fmt"
	"time"

	"github.com/chomhq/chom/events"
)

// A usage record becomes an outbox row; the relay publishes it as a CloudEvent
// keyed by tenant, with an ID that is the same however often it is built.
func ExampleUsageOutbox() {
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	row, err := events.UsageOutbox(events.UsageEvent{
		TenantID:    "ten_01a213e6c18b71ed80298ff7f2283556",
		Metric:      "bandwidth_bytes",
		Quantity:    52428800,
		Unit:        "byte",
		PeriodStart: start,
		PeriodEnd:   start.Add(time.Hour),
		OccurredAt:  start.Add(time.Hour + 30*time.Second),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	m := events.Message("chom", row)
	fmt.Println("topic:", m.Topic)
	fmt.Println("key:  ", string(m.Key))
	for _, h := range m.Headers {
		fmt.Printf("%s: %s\n", h.Key, h.Value)
	}
	fmt.Println(string(m.Value))
	// Output:
	// topic: chom.usage.v1
	// key:   ten_01a213e6c18b71ed80298ff7f2283556
	// ce_id: 91e803f0-e234-5a64-9e15-63802046c85f
	// ce_source: /chom/usage
	// ce_type: usage.recorded.v1
	// ce_specversion: 1.0
	// ce_time: 2026-11-25T11:00:30Z
	// ce_subject: bandwidth_bytes
	// ce_partitionkey: ten_01a213e6c18b71ed80298ff7f2283556
	// content-type: application/json
	// {"tenant_id":"ten_01a213e6c18b71ed80298ff7f2283556","metric":"bandwidth_bytes","quantity":52428800,"unit":"byte","period_start":"2026-11-25T10:00:00Z","period_end":"2026-11-25T11:00:00Z","occurred_at":"2026-11-25T11:00:30Z"}
}
