package models_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

func TestBillingPeriod(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in         time.Time
		start, end string
	}{
		{time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"},
		{time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC), "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{time.Date(2027, 1, 1, 0, 30, 0, 0, time.FixedZone("CET", 3600)), "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"},
	} {
		start, end := models.BillingPeriod(tc.in)
		if got := start.Format(time.RFC3339) + " " + end.Format(time.RFC3339); got != tc.start+" "+tc.end {
			t.Errorf("BillingPeriod(%v) = %s, want %s %s", tc.in, got, tc.start, tc.end)
		}
	}
}

func usageFact(tenantID, metric string, hour int, qty int64) models.UsageFact {
	start := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC).Add(time.Duration(hour) * time.Hour)
	return models.UsageFact{
		Source: "/chom/usage", EventID: fmt.Sprintf("%s/%s/%d", tenantID, metric, hour), Type: "usage.recorded.v1",
		TenantID: tenantID, Metric: metric, Quantity: qty, Unit: "byte",
		PeriodStart: start, PeriodEnd: start.Add(time.Hour), Topic: "chom.usage.v1",
	}
}

// BillUsage applies each event once, whatever the batches and repeats, and puts
// it on the invoice of its tenant and month.
func TestBillUsageExactlyOnce(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		a1, a2 := usageFact("ten_a", "storage_bytes", 1, 100), usageFact("ten_a", "storage_bytes", 2, 50)
		b1 := usageFact("ten_b", "storage_bytes", 1, 7)
		dec := usageFact("ten_a", "storage_bytes", 24, 1000) // 1 December: next invoice

		for _, tc := range []struct {
			batch []models.UsageFact
			want  int
		}{
			{[]models.UsageFact{a1, a1, b1}, 2}, // a duplicate inside a batch
			{[]models.UsageFact{a1, a2}, 1},     // a redelivered batch with one new event
			{[]models.UsageFact{b1}, 0},
			{[]models.UsageFact{dec}, 1},
		} {
			n, err := s.BillUsage(ctx, "billing", tc.batch)
			if err != nil || n != tc.want {
				t.Fatalf("BillUsage(%d facts) = %d, %v; want %d", len(tc.batch), n, err, tc.want)
			}
		}
		// Another consumer name bills on its own (it keeps its own books).
		if n, err := s.BillUsage(ctx, "audit", []models.UsageFact{b1}); err == nil || n != 0 {
			// The invoice line of b1 exists: a second consumer on the same tables
			// would bill twice, which the unique event index refuses.
			t.Fatalf("BillUsage by a second consumer = %d, %v; want the unique line index to refuse", n, err)
		}

		inv, err := s.GetInvoice(ctx, "ten_a", a1.PeriodStart)
		if err != nil {
			t.Fatal(err)
		}
		if got := inv.PeriodStart.UTC().Format("2006-01"); got != "2026-11" {
			t.Errorf("invoice period %s, want 2026-11", got)
		}
		totals, err := s.InvoiceTotals(ctx, inv.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]models.InvoiceTotal{{Metric: "storage_bytes", Unit: "byte", Quantity: 150, Lines: 2}}, totals); diff != "" {
			t.Errorf("November totals of ten_a (-want +got):\n%s", diff)
		}
		lines, err := s.InvoiceLines(ctx, inv.ID)
		if err != nil || len(lines) != 2 || lines[0].EventID != a1.EventID {
			t.Errorf("lines = %+v, %v", lines, err)
		}
		decInv, err := s.GetInvoice(ctx, "ten_a", dec.PeriodStart)
		if err != nil || decInv.ID == inv.ID {
			t.Fatalf("December invoice = %+v, %v; want another invoice", decInv, err)
		}
		if _, err := s.GetInvoice(ctx, "ten_c", a1.PeriodStart); err == nil {
			t.Error("GetInvoice of a tenant with no usage succeeded")
		}
		if got := count(t, db, "processed_events", "consumer = ?", "billing"); got != 4 {
			t.Errorf("%d processed events, want 4", got)
		}

		bad := a1
		bad.Quantity = -1
		if _, err := s.BillUsage(ctx, "billing", []models.UsageFact{bad}); err == nil {
			t.Error("BillUsage accepted a negative quantity")
		}
	})
}

func TestMarkProcessed(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		s := setup(t, db)
		ev := models.ProcessedEvent{Consumer: "billing", Source: "/chom/sites", EventID: "e1", Type: "site.deleted.v1", Topic: "chom.sites.v1"}
		for _, want := range []int{1, 0} {
			if n, err := s.MarkProcessed(t.Context(), []models.ProcessedEvent{ev}); err != nil || n != want {
				t.Fatalf("MarkProcessed = %d, %v; want %d", n, err, want)
			}
		}
	})
}
