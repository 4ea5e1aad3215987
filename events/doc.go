// Package events defines the facts CHOM publishes for billing and other consumers,
// and carries them to Kafka.
//
// The contract: versioned event types (site.provisioned.v1, usage.recorded.v1, …)
// with their payloads, builders that turn each into an outbox row committed with
// the state change it describes, one JSON Schema per type (Schemas), versioned
// topics under a configurable prefix (FullTopic), and the CloudEvents 1.0 Kafka
// binding in binary mode (Message to write a record, Parse and DecodeUsage to read
// one back).
//
// Event IDs are stable: the same fact always yields the same ID (derived from the
// operation or usage period it describes), so a consumer deduplicates on
// source + id.
//
// The Relay publishes the outbox at least once, in order per tenant; the
// reference consumer that bills usage exactly once is in events/billing.
package events
