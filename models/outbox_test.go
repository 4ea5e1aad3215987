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

// outboxRows inserts n outbox rows for tenantID (created at the store's clock)
// and returns their IDs in order.
func outboxRows(t *testing.T, db *bun.DB, s *models.Store, tenantID string, n int) []int64 {
	t.Helper()
	now := epoch
	rows := make([]models.OutboxEvent, n)
	for i := range rows {
		rows[i] = models.OutboxEvent{
			EventID: fmt.Sprintf("%s-%03d", tenantID, i), TenantID: tenantID, Topic: "sites.v1",
			Type: "site.provisioned.v1", Source: "/chom/sites", Subject: "site", Data: `{}`,
			OccurredAt: now, CreatedAt: now,
		}
	}
	if _, err := db.NewInsert().Model(&rows).Exec(t.Context()); err != nil {
		t.Fatalf("insert outbox rows: %v", err)
	}
	ids := make([]int64, n)
	for i, r := range rows {
		ids[i] = r.ID
	}
	return ids
}

func ids(rows []models.OutboxEvent) []int64 {
	out := make([]int64, len(rows))
	for i, r := range rows {
		out[i] = r.ID
	}
	return out
}

func TestOutboxReadMarkPrune(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, clk := setupClock(t, db)
		all := outboxRows(t, db, s, "ten_a", 5)

		lease, err := s.TryOutboxLease(ctx)
		if err != nil || lease == nil {
			t.Fatalf("TryOutboxLease = %v, %v; want a lease", lease, err)
		}
		defer func() { _ = lease.Release(ctx) }()

		rows, err := lease.UnpublishedExcept(ctx, nil, 3)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(all[:3], ids(rows)); diff != "" {
			t.Fatalf("first page (-want +got):\n%s", diff)
		}
		clk.Advance(time.Minute)
		if lag, err := s.OutboxLag(ctx); err != nil || lag != time.Minute {
			t.Errorf("OutboxLag = %v, %v; want 1m", lag, err)
		}
		if err := s.MarkOutboxPublished(ctx, all[:3]); err != nil {
			t.Fatal(err)
		}
		rows, err = lease.UnpublishedExcept(ctx, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(all[3:], ids(rows)); diff != "" {
			t.Fatalf("after marking (-want +got):\n%s", diff)
		}
		if n, err := s.CountUnpublished(ctx); err != nil || n != 2 {
			t.Errorf("CountUnpublished = %d, %v; want 2", n, err)
		}

		// Marking again keeps the first published_at.
		clk.Advance(time.Hour)
		if err := s.MarkOutboxPublished(ctx, all[:1]); err != nil {
			t.Fatal(err)
		}
		if got := count(t, db, "outbox_events", "published_at = ?", epoch.Add(time.Minute)); got != 3 {
			t.Errorf("%d rows published at the first mark, want 3", got)
		}

		// Pruning removes published rows older than the cutoff, never unpublished ones.
		n, err := s.PruneOutbox(ctx, epoch.Add(30*time.Minute), 2)
		if err != nil || n != 3 {
			t.Fatalf("PruneOutbox = %d, %v; want 3", n, err)
		}
		if got := count(t, db, "outbox_events", ""); got != 2 {
			t.Errorf("%d rows left, want the 2 unpublished", got)
		}
		if err := s.MarkOutboxPublished(ctx, all[3:]); err != nil {
			t.Fatal(err)
		}
		if lag, err := s.OutboxLag(ctx); err != nil || lag != 0 {
			t.Errorf("OutboxLag of a drained outbox = %v, %v; want 0", lag, err)
		}
		if n, err := s.PruneOutbox(ctx, epoch, 100); err != nil || n != 0 {
			t.Errorf("PruneOutbox before anything was published = %d, %v; want 0", n, err)
		}
	})
}

// On PostgreSQL one session at a time holds the lease; releasing it, or its
// session dying, lets another take it.
func TestOutboxLeaseIsExclusive(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := testenv.Postgres(t)
	s := setup(t, db)
	other, err := models.New(models.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}

	first, err := s.TryOutboxLease(ctx)
	if err != nil || first == nil {
		t.Fatalf("first TryOutboxLease = %v, %v", first, err)
	}
	if second, err := other.TryOutboxLease(ctx); err != nil || second != nil {
		t.Fatalf("second TryOutboxLease while held = %v, %v; want nil, nil", second, err)
	}
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := first.Release(ctx); err != nil {
		t.Errorf("second Release: %v", err)
	}
	second, err := other.TryOutboxLease(ctx)
	if err != nil || second == nil {
		t.Fatalf("TryOutboxLease after release = %v, %v; want a lease", second, err)
	}

	// The holder's session dies (a crashed relay): the lock goes with it.
	var pid int
	const holder = `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
		AND ((classid::bigint << 32) | objid::bigint) = hashtext(current_schema() || '.chom_outbox_relay')::bigint`
	if err := db.QueryRowContext(ctx, holder).Scan(&pid); err != nil {
		t.Fatalf("find the lease holder: %v", err)
	}
	if _, err := db.ExecContext(ctx, "SELECT pg_terminate_backend(?)", pid); err != nil {
		t.Fatal(err)
	}
	if _, err := second.UnpublishedExcept(ctx, nil, 1); err == nil {
		t.Error("UnpublishedExcept on a dead session succeeded; want an error")
	}
	_ = second.Release(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for {
		third, err := s.TryOutboxLease(ctx)
		if err == nil && third != nil {
			_ = third.Release(ctx)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease not free after its session died: %v, %v", third, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
