package migrations

import (
	"context"

	"github.com/uptrace/bun"
)

// The reference billing consumer's tables. They hold no foreign key to tenants:
// the consumer knows tenants only from the events it reads, and a billing team may
// run it against a database of its own.
var billingUp = []string{
	// One invoice per tenant and billing period (a calendar month, UTC).
	`CREATE TABLE invoices (
		id TEXT PRIMARY KEY,
		tenant_id TEXT NOT NULL,
		period_start {ts} NOT NULL,
		period_end {ts} NOT NULL,
		status TEXT NOT NULL DEFAULT 'open',
		created_at {ts} NOT NULL,
		updated_at {ts} NOT NULL
	)`,
	`CREATE UNIQUE INDEX invoices_tenant_period_key ON invoices (tenant_id, period_start)`,

	// One line per usage event billed. The unique (source, event ID) is a second
	// guard behind processed_events: an event can never be billed twice.
	`CREATE TABLE invoice_lines (
		id {serial_pk},
		invoice_id TEXT NOT NULL REFERENCES invoices (id),
		tenant_id TEXT NOT NULL,
		event_source TEXT NOT NULL,
		event_id TEXT NOT NULL,
		metric TEXT NOT NULL,
		quantity {bigint} NOT NULL,
		unit TEXT NOT NULL,
		usage_start {ts} NOT NULL,
		usage_end {ts} NOT NULL,
		created_at {ts} NOT NULL
	)`,
	`CREATE UNIQUE INDEX invoice_lines_event_key ON invoice_lines (event_source, event_id)`,
	`CREATE INDEX invoice_lines_invoice_idx ON invoice_lines (invoice_id, metric)`,

	// The events a consumer has applied, written in the transaction of their
	// effect: a redelivered event finds its row and changes nothing.
	`CREATE TABLE processed_events (
		consumer TEXT NOT NULL,
		source TEXT NOT NULL,
		event_id TEXT NOT NULL,
		event_type TEXT NOT NULL,
		topic TEXT NOT NULL,
		kafka_partition INTEGER NOT NULL,
		kafka_offset {bigint} NOT NULL,
		processed_at {ts} NOT NULL,
		PRIMARY KEY (consumer, source, event_id)
	)`,
	`CREATE INDEX processed_events_processed_idx ON processed_events (processed_at)`,
}

var billingDown = []string{
	`DROP TABLE processed_events`,
	`DROP TABLE invoice_lines`,
	`DROP TABLE invoices`,
}

func init() {
	Migrations.MustRegister(
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, billingUp) },
		func(ctx context.Context, db *bun.DB) error { return execAll(ctx, db, billingDown) },
	)
}
