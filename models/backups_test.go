package models_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// backupOf records a backup of siteID and returns its operation.
func backupOf(t *testing.T, s *models.Store, tenantID, siteID string, retention int) *models.Operation {
	t.Helper()
	acc, err := s.CreateBackup(t.Context(), models.CreateBackupParams{Accept: accept(tenantID, "", ""),
		SiteID: siteID, BackupType: "full", RetentionDays: retention})
	if err != nil {
		t.Fatalf("CreateBackup(%s): %v", siteID, err)
	}
	return acc.Operation
}

// completeBackup runs the finishing transaction of a backup job.
func completeBackup(t *testing.T, s *models.Store, op *models.Operation) *models.SiteBackup {
	t.Helper()
	b, err := s.BackupByID(t.Context(), op.TargetID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartOperation(t.Context(), op.ID); err != nil {
		t.Fatal(err)
	}
	ok, err := s.CompleteBackup(t.Context(), op.ID, b, models.BackupArchive{StorageKey: b.StorageKey, Format: "tar+gzip",
		SizeBytes: 42, SHA256: strings.Repeat("0", 64)}, nil, []models.OutboxEvent{{EventID: "ev-" + op.ID, TenantID: b.TenantID,
		Topic: "backups.v1", Type: "backup.completed.v1", Source: "/chom/backups", Subject: b.ID, Data: "{}"}})
	if err != nil || !ok {
		t.Fatalf("CompleteBackup = %v, %v", ok, err)
	}
	b, err = s.BackupByID(t.Context(), op.TargetID)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func conflictOp(t *testing.T, err error) string {
	t.Helper()
	var c *models.ConflictError
	if !errors.As(err, &c) {
		t.Fatalf("error %v, want a ConflictError", err)
	}
	return c.OperationID
}

func TestBackupLifecycle(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, clk := setupClock(t, db)
		ten, other := tenant(t, s, "acme"), tenant(t, s, "other")
		siteID := activeSite(t, s, ten, "backup.example")

		op := backupOf(t, s, ten, siteID, 7)
		if op.Type != models.OpTypeBackupCreate || op.TargetType != models.TargetBackup || op.Status != models.OpPending {
			t.Fatalf("operation %+v", op)
		}
		// The site is locked: a second backup, a delete of the site, all 409 with op.
		if active, err := s.ActiveMutation(ctx, ten, siteID); err != nil || active == nil || active.ID != op.ID {
			t.Fatalf("ActiveMutation = %+v, %v; want %s", active, err, op.ID)
		}
		_, err := s.CreateBackup(ctx, models.CreateBackupParams{Accept: accept(ten, "", ""), SiteID: siteID, BackupType: "files"})
		if got := conflictOp(t, err); got != op.ID {
			t.Fatalf("second backup conflicts with %q, want %s", got, op.ID)
		}
		_, err = s.DeleteSite(ctx, accept(ten, "", ""), siteID)
		if got := conflictOp(t, err); got != op.ID {
			t.Fatalf("delete site conflicts with %q, want %s", got, op.ID)
		}
		// Another tenant sees nothing.
		if _, err := s.CreateBackup(ctx, models.CreateBackupParams{Accept: accept(other, "", ""), SiteID: siteID, BackupType: "full"}); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("other tenant's CreateBackup: %v, want ErrNotFound", err)
		}
		if _, err := s.GetBackup(ctx, other, op.TargetID); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("other tenant's GetBackup: %v", err)
		}
		if _, err := s.ListBackups(ctx, other, siteID, models.BackupFilter{}); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("other tenant's ListBackups: %v", err)
		}
		// A backup not yet completed cannot be restored or deleted.
		_, err = s.RestoreBackup(ctx, accept(ten, "", ""), op.TargetID)
		if got := conflictOp(t, err); got != op.ID {
			t.Fatalf("restore of a running backup conflicts with %q", got)
		}

		clk.Advance(time.Minute)
		b := completeBackup(t, s, op)
		if b.Status != models.BackupStatusCompleted || b.SizeBytes != 42 || b.OperationID != nil || b.CompletedAt == nil ||
			b.ExpiresAt == nil || !b.ExpiresAt.Equal(b.CompletedAt.Add(7*24*time.Hour)) {
			t.Fatalf("completed backup %+v", b)
		}
		if active, err := s.ActiveMutation(ctx, ten, siteID); err != nil || active != nil {
			t.Fatalf("after completion ActiveMutation = %+v, %v; want none", active, err)
		}
		if n := count(t, db, "outbox_events", "event_type = ?", "backup.completed.v1"); n != 1 {
			t.Fatalf("%d completed events, want 1", n)
		}

		// Restore: locks the site and the backup.
		racc, err := s.RestoreBackup(ctx, accept(ten, "", ""), b.ID)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.DeleteBackup(ctx, accept(ten, "", ""), b.ID)
		if got := conflictOp(t, err); got != racc.Operation.ID {
			t.Fatalf("delete during restore conflicts with %q, want %s", got, racc.Operation.ID)
		}
		_, err = s.CreateBackup(ctx, models.CreateBackupParams{Accept: accept(ten, "", ""), SiteID: siteID, BackupType: "full"})
		if got := conflictOp(t, err); got != racc.Operation.ID {
			t.Fatalf("backup during restore conflicts with %q", got)
		}
		if ok, err := s.FinishRestore(ctx, racc.Operation.ID, b, models.Outcome{Status: models.OpSucceeded}, nil); err != nil || !ok {
			t.Fatalf("FinishRestore = %v, %v", ok, err)
		}
		b, _ = s.BackupByID(ctx, b.ID)
		if b.RestoredAt == nil || b.OperationID != nil {
			t.Fatalf("restored backup %+v", b)
		}

		// Delete: deleting, then deleted, and gone from the listing.
		dacc, err := s.DeleteBackup(ctx, accept(ten, "k1", "h1"), b.ID)
		if err != nil {
			t.Fatal(err)
		}
		replay, err := s.DeleteBackup(ctx, accept(ten, "k1", "h1"), b.ID)
		if err != nil || !replay.Replayed || replay.Operation.ID != dacc.Operation.ID {
			t.Fatalf("replayed delete = %+v, %v", replay, err)
		}
		if b, _ = s.BackupByID(ctx, b.ID); b.Status != models.BackupStatusDeleting {
			t.Fatalf("status %s, want deleting", b.Status)
		}
		if ok, err := s.CompleteBackupDelete(ctx, dacc.Operation.ID, b, nil); err != nil || !ok {
			t.Fatalf("CompleteBackupDelete = %v, %v", ok, err)
		}
		list, err := s.ListBackups(ctx, ten, siteID, models.BackupFilter{})
		if err != nil || len(list) != 0 {
			t.Fatalf("listing after delete = %v, %v", list, err)
		}
		if _, err := s.DeleteBackup(ctx, accept(ten, "", ""), b.ID); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("delete of a deleted backup: %v", err)
		}
	})
}

func TestBackupRefusedWhileProvisioning(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		s := setup(t, db)
		ten := tenant(t, s, "acme")
		siteID, prov := createSite(t, s, ten, "busy.example")
		before := counts(t, db)
		_, err := s.CreateBackup(t.Context(), models.CreateBackupParams{Accept: accept(ten, "", ""), SiteID: siteID, BackupType: "full"})
		if got := conflictOp(t, err); got != prov.ID {
			t.Fatalf("conflict names %q, want the provision %s", got, prov.ID)
		}
		if after := counts(t, db); after != before || count(t, db, "site_backups", "") != 0 {
			t.Fatalf("a refused backup wrote rows: %+v → %+v", before, after)
		}
		// An html site has no database to back up.
		acc, err := s.CreateSite(t.Context(), models.CreateSiteParams{Accept: accept(ten, "", ""), Domain: "plain.example", SiteType: "html"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.StartOperation(t.Context(), acc.Operation.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CompleteProvision(t.Context(), acc.Operation.ID, acc.Operation.TargetID, models.ProvisionedSite{}, nil, nil); err != nil {
			t.Fatal(err)
		}
		_, err = s.CreateBackup(t.Context(), models.CreateBackupParams{Accept: accept(ten, "", ""), SiteID: acc.Operation.TargetID, BackupType: "database"})
		if !errors.Is(err, models.ErrConflict) {
			t.Fatalf("database backup of an html site: %v, want a conflict", err)
		}
		if active, _ := s.ActiveMutation(t.Context(), ten, acc.Operation.TargetID); active != nil {
			t.Fatalf("a refused backup left the site locked by %s", active.ID)
		}
	})
}

func TestFailAndCancelBackupReleaseTheSite(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		ten := tenant(t, s, "acme")
		siteID := activeSite(t, s, ten, "fail.example")

		op := backupOf(t, s, ten, siteID, 0)
		b, _ := s.BackupByID(ctx, op.TargetID)
		if _, err := s.StartOperation(ctx, op.ID); err != nil {
			t.Fatal(err)
		}
		ok, err := s.FailBackup(ctx, op.ID, b, models.Outcome{Status: models.OpFailed, ErrorCode: "backup_failed", ErrorMessage: "boom"}, nil)
		if err != nil || !ok {
			t.Fatalf("FailBackup = %v, %v", ok, err)
		}
		if b, _ = s.BackupByID(ctx, b.ID); b.Status != models.BackupStatusFailed || b.Error != "boom" || b.OperationID != nil {
			t.Fatalf("failed backup %+v", b)
		}
		// A second finish is a no-op.
		if ok, _ := s.FailBackup(ctx, op.ID, b, models.Outcome{Status: models.OpFailed}, nil); ok {
			t.Fatal("second FailBackup took effect")
		}

		op2 := backupOf(t, s, ten, siteID, 0)
		res, err := s.CancelOperation(ctx, ten, op2.ID)
		if err != nil || !res.Immediate || res.Operation.Status != models.OpCancelled {
			t.Fatalf("CancelOperation = %+v, %v", res, err)
		}
		if b, _ = s.BackupByID(ctx, op2.TargetID); b.Status != models.BackupStatusFailed {
			t.Fatalf("cancelled backup status %s", b.Status)
		}
		if active, err := s.ActiveMutation(ctx, ten, siteID); err != nil || active != nil {
			t.Fatalf("after cancel ActiveMutation = %+v, %v", active, err)
		}
	})
}

func TestBackupSchedulesBookOncePerDueTime(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, clk := setupClock(t, db)
		ten := tenant(t, s, "acme")
		siteID := activeSite(t, s, ten, "sched.example")

		sc, created, err := s.PutBackupSchedule(ctx, models.PutBackupScheduleParams{TenantID: ten, SiteID: siteID,
			Frequency: models.FrequencyDaily, Keep: 2, BackupType: "full"})
		if err != nil || !created || !sc.NextRunAt.Equal(epoch) {
			t.Fatalf("PutBackupSchedule = %+v, %v, %v", sc, created, err)
		}
		if _, err := s.GetBackupSchedule(ctx, tenant(t, s, "other"), siteID); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("other tenant's schedule: %v", err)
		}
		var ops []*models.Operation
		for day := 0; day < 4; day++ {
			due, err := s.DueSchedules(ctx, clk.Now(), 10)
			if err != nil || len(due) != 1 {
				t.Fatalf("day %d: DueSchedules = %v, %v", day, due, err)
			}
			// Two sweeps read the same due schedule: one books.
			op1, err1 := s.BookScheduledBackup(ctx, due[0])
			op2, err2 := s.BookScheduledBackup(ctx, due[0])
			if err1 != nil || err2 != nil || op1 == nil || op2 != nil {
				t.Fatalf("day %d: bookings = %v %v, %v %v; want one", day, op1, err1, op2, err2)
			}
			if due, _ := s.DueSchedules(ctx, clk.Now(), 10); len(due) != 0 {
				t.Fatalf("day %d: still due after booking", day)
			}
			completeBackup(t, s, op1)
			ops = append(ops, op1)
			clk.Advance(24 * time.Hour)
		}
		beyond, err := s.BackupsBeyondKeep(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, b := range beyond {
			ids = append(ids, b.ID)
		}
		want := []string{ops[1].TargetID, ops[0].TargetID} // keep 2: the two oldest go
		if strings.Join(ids, ",") != strings.Join(want, ",") {
			t.Fatalf("beyond keep = %v, want %v", ids, want)
		}
		// A changed frequency is due one new period later.
		sc, created, err = s.PutBackupSchedule(ctx, models.PutBackupScheduleParams{TenantID: ten, SiteID: siteID,
			Frequency: models.FrequencyWeekly, Keep: 3, BackupType: "files"})
		if err != nil || created || !sc.NextRunAt.Equal(clk.Now().Add(7*24*time.Hour)) || sc.Keep != 3 {
			t.Fatalf("updated schedule %+v, %v, %v", sc, created, err)
		}
		if err := s.DeleteBackupSchedule(ctx, ten, siteID); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteBackupSchedule(ctx, ten, siteID); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}
	})
}

func TestExpiredBackups(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, clk := setupClock(t, db)
		ten := tenant(t, s, "acme")
		siteID := activeSite(t, s, ten, "expire.example")
		short := completeBackup(t, s, backupOf(t, s, ten, siteID, 1))
		forever := completeBackup(t, s, backupOf(t, s, ten, siteID, 0))
		if got, _ := s.ExpiredBackups(ctx, clk.Now(), 10); len(got) != 0 {
			t.Fatalf("expired at once: %v", got)
		}
		clk.Advance(25 * time.Hour)
		got, err := s.ExpiredBackups(ctx, clk.Now(), 10)
		if err != nil || len(got) != 1 || got[0].ID != short.ID {
			t.Fatalf("ExpiredBackups = %v, %v; want only %s (not %s)", got, err, short.ID, forever.ID)
		}
	})
}
