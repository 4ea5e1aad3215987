package models

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// Invoice statuses. The reference consumer only ever opens invoices; closing a
// period is the billing team's decision.
const (
	InvoiceOpen = "open"
)

// PrefixInvoice starts every invoice ID.
const PrefixInvoice = "inv_"

// Invoice is a tenant's bill for one billing period (a calendar month, UTC).
type Invoice struct {
	bun.BaseModel `bun:"table:invoices"`

	ID          string    `bun:"id,pk"`
	TenantID    string    `bun:"tenant_id"`
	PeriodStart time.Time `bun:"period_start"`
	PeriodEnd   time.Time `bun:"period_end"`
	Status      string    `bun:"status"`
	CreatedAt   time.Time `bun:"created_at"`
	UpdatedAt   time.Time `bun:"updated_at"`
}

// InvoiceLine is one usage event billed on an invoice.
type InvoiceLine struct {
	bun.BaseModel `bun:"table:invoice_lines"`

	ID          int64     `bun:"id,pk,autoincrement"`
	InvoiceID   string    `bun:"invoice_id"`
	TenantID    string    `bun:"tenant_id"`
	EventSource string    `bun:"event_source"`
	EventID     string    `bun:"event_id"`
	Metric      string    `bun:"metric"`
	Quantity    int64     `bun:"quantity"`
	Unit        string    `bun:"unit"`
	UsageStart  time.Time `bun:"usage_start"`
	UsageEnd    time.Time `bun:"usage_end"`
	CreatedAt   time.Time `bun:"created_at"`
}

// ProcessedEvent records that a consumer applied an event, so a redelivery of
// the same event (same source and ID) is recognised and changes nothing.
type ProcessedEvent struct {
	bun.BaseModel `bun:"table:processed_events"`

	Consumer    string    `bun:"consumer,pk"`
	Source      string    `bun:"source,pk"`
	EventID     string    `bun:"event_id,pk"`
	Type        string    `bun:"event_type"`
	Topic       string    `bun:"topic"`
	Partition   int       `bun:"kafka_partition"`
	Offset      int64     `bun:"kafka_offset"`
	ProcessedAt time.Time `bun:"processed_at"`
}

// BillingPeriod returns the billing period that contains t: the calendar month
// in UTC, as [start, end).
func BillingPeriod(t time.Time) (start, end time.Time) {
	t = t.UTC()
	start = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	return start, start.AddDate(0, 1, 0)
}

// UsageFact is one usage event to bill, with where it was read from.
type UsageFact struct {
	Source      string
	EventID     string
	Type        string
	TenantID    string
	Metric      string
	Quantity    int64
	Unit        string
	PeriodStart time.Time
	PeriodEnd   time.Time
	Topic       string
	Partition   int
	Offset      int64
}

// Validate reports every missing or invalid field at once.
func (f UsageFact) Validate() error {
	var errs []error
	for name, v := range map[string]string{"source": f.Source, "event_id": f.EventID, "type": f.Type,
		"tenant_id": f.TenantID, "metric": f.Metric, "unit": f.Unit, "topic": f.Topic} {
		if v == "" {
			errs = append(errs, fmt.Errorf("usage fact: %s is required", name))
		}
	}
	if f.Quantity < 0 {
		errs = append(errs, errors.New("usage fact: quantity must not be negative"))
	}
	if !f.PeriodEnd.After(f.PeriodStart) {
		errs = append(errs, errors.New("usage fact: period_end must be after period_start"))
	}
	return errors.Join(errs...)
}

// BillUsage applies usage facts for consumer in one transaction, each exactly
// once: a fact whose (source, event ID) consumer already processed is skipped;
// every other one is recorded in processed_events and becomes an invoice line on
// its tenant's invoice for the billing period of its start (the invoice is opened
// when missing). It returns how many facts were new. Nothing is written when it
// fails, so the caller retries the whole batch.
func (s *Store) BillUsage(ctx context.Context, consumer string, facts []UsageFact) (int, error) {
	if consumer == "" {
		return 0, errors.New("bill usage: consumer is required")
	}
	for _, f := range facts {
		if err := f.Validate(); err != nil {
			return 0, fmt.Errorf("bill usage: event %s: %w", f.EventID, err)
		}
	}
	now := s.nowUTC()
	var applied int
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		applied = 0
		invoices := map[string]string{} // tenant + period → invoice ID, within this batch
		for _, f := range facts {
			first, err := markProcessed(ctx, tx, ProcessedEvent{
				Consumer: consumer, Source: f.Source, EventID: f.EventID, Type: f.Type,
				Topic: f.Topic, Partition: f.Partition, Offset: f.Offset, ProcessedAt: now,
			})
			if err != nil {
				return err
			}
			if !first {
				continue
			}
			start, end := BillingPeriod(f.PeriodStart)
			key := f.TenantID + "\x00" + start.Format(time.RFC3339)
			invID, ok := invoices[key]
			if !ok {
				invID, err = openInvoice(ctx, tx, f.TenantID, start, end, now)
				if err != nil {
					return err
				}
				invoices[key] = invID
			}
			line := InvoiceLine{
				InvoiceID: invID, TenantID: f.TenantID, EventSource: f.Source, EventID: f.EventID,
				Metric: f.Metric, Quantity: f.Quantity, Unit: f.Unit,
				UsageStart: f.PeriodStart.UTC(), UsageEnd: f.PeriodEnd.UTC(), CreatedAt: now,
			}
			if _, err := tx.NewInsert().Model(&line).Exec(ctx); err != nil {
				return fmt.Errorf("add invoice line for event %s: %w", f.EventID, err)
			}
			if _, err := tx.NewUpdate().Model((*Invoice)(nil)).Set("updated_at = ?", now).
				Where("id = ?", invID).Exec(ctx); err != nil {
				return fmt.Errorf("touch invoice %s: %w", invID, err)
			}
			applied++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("bill %d usage events: %w", len(facts), err)
	}
	return applied, nil
}

// MarkProcessed records events that consumer applied with no other effect (they
// are read, valid, and mean nothing to it), each once. It returns how many were new.
func (s *Store) MarkProcessed(ctx context.Context, evs []ProcessedEvent) (int, error) {
	now := s.nowUTC()
	var n int
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		n = 0
		for _, e := range evs {
			if e.ProcessedAt.IsZero() {
				e.ProcessedAt = now
			}
			first, err := markProcessed(ctx, tx, e)
			if err != nil {
				return err
			}
			if first {
				n++
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("mark %d events processed: %w", len(evs), err)
	}
	return n, nil
}

// markProcessed inserts e unless its consumer already processed the event, and
// reports whether it was new. A concurrent transaction inserting the same event
// (two consumers during a rebalance) makes this one wait, then see it.
func markProcessed(ctx context.Context, tx bun.Tx, e ProcessedEvent) (bool, error) {
	res, err := tx.NewInsert().Model(&e).On("CONFLICT DO NOTHING").Exec(ctx)
	if err != nil {
		return false, fmt.Errorf("record processed event %s %s: %w", e.Source, e.EventID, err)
	}
	return affected(res) == 1, nil
}

// openInvoice returns the ID of the tenant's invoice for the period starting at
// start, creating it when missing.
func openInvoice(ctx context.Context, tx bun.Tx, tenantID string, start, end, now time.Time) (string, error) {
	inv := Invoice{
		ID: NewID(PrefixInvoice), TenantID: tenantID, PeriodStart: start, PeriodEnd: end,
		Status: InvoiceOpen, CreatedAt: now, UpdatedAt: now,
	}
	if _, err := tx.NewInsert().Model(&inv).On("CONFLICT DO NOTHING").Exec(ctx); err != nil {
		return "", fmt.Errorf("open invoice of tenant %s for %s: %w", tenantID, start.Format("2006-01"), err)
	}
	var id string
	err := tx.NewSelect().Model((*Invoice)(nil)).Column("id").
		Where("tenant_id = ? AND period_start = ?", tenantID, start).Scan(ctx, &id)
	if err != nil {
		return "", fmt.Errorf("find invoice of tenant %s for %s: %w", tenantID, start.Format("2006-01"), err)
	}
	return id, nil
}

// GetInvoice returns the tenant's invoice for the billing period that contains
// t, or ErrNotFound.
func (s *Store) GetInvoice(ctx context.Context, tenantID string, t time.Time) (*Invoice, error) {
	start, _ := BillingPeriod(t)
	inv := new(Invoice)
	err := s.db.NewSelect().Model(inv).Where("tenant_id = ? AND period_start = ?", tenantID, start).Scan(ctx)
	if err != nil {
		return nil, notFound(err, "invoice of tenant "+tenantID+" for", start.Format("2006-01"))
	}
	return inv, nil
}

// InvoiceTotal is the summed quantity of one metric (in one unit) on an invoice.
type InvoiceTotal struct {
	Metric   string `bun:"metric"`
	Unit     string `bun:"unit"`
	Quantity int64  `bun:"quantity"`
	Lines    int    `bun:"lines"`
}

// InvoiceTotals returns the totals of an invoice per metric and unit, sorted by
// metric then unit.
func (s *Store) InvoiceTotals(ctx context.Context, invoiceID string) ([]InvoiceTotal, error) {
	var out []InvoiceTotal
	err := s.db.NewSelect().Model((*InvoiceLine)(nil)).
		ColumnExpr("metric, unit, SUM(quantity) AS quantity, COUNT(*) AS lines").
		Where("invoice_id = ?", invoiceID).
		GroupExpr("metric, unit").OrderExpr("metric ASC, unit ASC").
		Scan(ctx, &out)
	if err != nil {
		return nil, fmt.Errorf("totals of invoice %s: %w", invoiceID, err)
	}
	return out, nil
}

// InvoiceLines returns the lines of an invoice in the order they were billed.
func (s *Store) InvoiceLines(ctx context.Context, invoiceID string) ([]InvoiceLine, error) {
	var out []InvoiceLine
	if err := s.db.NewSelect().Model(&out).Where("invoice_id = ?", invoiceID).OrderExpr("id ASC").Scan(ctx); err != nil {
		return nil, fmt.Errorf("lines of invoice %s: %w", invoiceID, err)
	}
	return out, nil
}
