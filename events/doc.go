// Package events defines the facts CHOM publishes for billing and other consumers:
// versioned event types, their payloads, and how each becomes an outbox row that
// commits with the state change it describes.
//
// Event IDs are stable: the same fact always yields the same ID (derived from the
// operation or record it describes), so a consumer deduplicates on source + id.
package events
