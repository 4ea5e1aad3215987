package models_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// A store write that commits outbox rows notifies a listener of its schema;
// on SQLite there is nothing to listen to.
func TestOutboxWritesNotify(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		s, _ := setupClock(t, db)
		ten := tenant(t, s, "notified")
		l, err := s.ListenOutbox(t.Context())
		if !models.IsPostgres(db) {
			if !errors.Is(err, models.ErrListenUnsupported) {
				t.Fatalf("ListenOutbox on SQLite = %v, want ErrListenUnsupported", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close(context.WithoutCancel(t.Context()))
		if _, err := s.RecordUsage(t.Context(), []models.UsageWrite{usageWrite(ten, "disk_bytes", "", 1, epoch.Add(-time.Hour))}); err != nil {
			t.Fatal(err)
		}
		// A generous deadline for "eventually": the notification is sent at the commit.
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		if err := l.Wait(ctx); err != nil {
			t.Fatalf("no notification after the store wrote the outbox: %v", err)
		}
	})
}
