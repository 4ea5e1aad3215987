package models

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// Backup statuses. A backup moves pending → running → completed, or to failed;
// a delete moves a completed or failed one to deleting → deleted. A failed
// delete puts it back as it was.
const (
	BackupStatusPending   = "pending"
	BackupStatusRunning   = "running"
	BackupStatusCompleted = "completed"
	BackupStatusFailed    = "failed"
	BackupStatusDeleting  = "deleting"
	BackupStatusDeleted   = "deleted"
)

// Backup operation types and the backup target.
const (
	OpTypeBackupCreate  = "backup.create"
	OpTypeBackupRestore = "backup.restore"
	OpTypeBackupDelete  = "backup.delete"

	TargetBackup = "backup"
)

// Backup schedule frequencies.
const (
	FrequencyDaily  = "daily"
	FrequencyWeekly = "weekly"
)

// SchedulePeriod returns the interval of a schedule frequency (0 for an unknown one).
func SchedulePeriod(frequency string) time.Duration {
	switch frequency {
	case FrequencyDaily:
		return 24 * time.Hour
	case FrequencyWeekly:
		return 7 * 24 * time.Hour
	}
	return 0
}

// BackupSchedule makes a backup of a site every period and keeps the newest
// Keep of the backups it made.
type BackupSchedule struct {
	bun.BaseModel `bun:"table:backup_schedules"`

	ID         string    `bun:"id,pk" json:"id"`
	TenantID   string    `bun:"tenant_id" json:"-"`
	SiteID     string    `bun:"site_id" json:"site_id"`
	Frequency  string    `bun:"frequency" json:"frequency"`
	Keep       int       `bun:"keep_n" json:"keep"`
	BackupType string    `bun:"backup_type" json:"type"`
	NextRunAt  time.Time `bun:"next_run_at" json:"next_run_at"`
	CreatedAt  time.Time `bun:"created_at" json:"created_at"`
	UpdatedAt  time.Time `bun:"updated_at" json:"updated_at"`
}

// PrefixSchedule starts the IDs of backup schedules.
const PrefixSchedule = "bks_"

// BackupPayload is the payload recorded on a backup operation.
type BackupPayload struct {
	BackupID       string `json:"backup_id"`
	SiteID         string `json:"site_id"`
	BackupType     string `json:"backup_type"`
	RetentionDays  int    `json:"retention_days,omitempty"`
	PreviousStatus string `json:"previous_status,omitempty"`
}

// SiteHasDatabase reports whether sites of siteType get a database (wordpress
// and laravel), as drivers.SiteSpec.HasDatabase does.
func SiteHasDatabase(siteType string) bool {
	return siteType == "wordpress" || siteType == "laravel"
}

// CreateBackupParams describes a backup to make. Values are already validated.
type CreateBackupParams struct {
	Accept
	SiteID        string
	BackupType    string
	RetentionDays int
	// ScheduleID is set for a scheduled backup.
	ScheduleID string
}

// StorageKey is where the archive of a backup lives in the BackupStore:
// "tenants/<tenant>/sites/<site>/<backup>.tar.gz".
func StorageKey(b *SiteBackup) string {
	return "tenants/" + b.TenantID + "/sites/" + b.SiteID + "/" + b.ID + ".tar.gz"
}

// ActiveMutation returns the operation mutating the tenant's site right now
// (a provision, deprovision, backup or restore), or nil when there is none. An
// unknown or deleted site, or another tenant's, is ErrNotFound.
//
// The rule "one mutation at a time per site" lives in sites.operation_id: every
// accepted site mutation sets it in its accepting transaction with a
// conditional UPDATE (… WHERE operation_id IS NULL) and its finishing
// transaction clears it, so two concurrent requests cannot both take the site
// and the loser answers 409 with this operation's ID.
func (s *Store) ActiveMutation(ctx context.Context, tenantID, siteID string) (*Operation, error) {
	site := new(Site)
	err := s.db.NewSelect().Model(site).
		Where("id = ? AND tenant_id = ? AND deleted_at IS NULL", siteID, tenantID).Scan(ctx)
	if err != nil {
		return nil, notFound(err, "site", siteID)
	}
	if site.OperationID == nil {
		return nil, nil
	}
	op, err := s.GetOperation(ctx, tenantID, *site.OperationID)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	return op, err
}

// lockSite takes the site's mutation lock for opID inside tx. It fails with
// ErrNotFound for a missing or deleted site, and with a ConflictError naming the
// operation in the way, or saying the site is not active.
func lockSite(ctx context.Context, tx bun.Tx, tenantID, siteID, opID string, now time.Time) (*Site, error) {
	site := new(Site)
	err := tx.NewSelect().Model(site).
		Where("id = ? AND tenant_id = ? AND deleted_at IS NULL", siteID, tenantID).Scan(ctx)
	if err != nil {
		return nil, notFound(err, "site", siteID)
	}
	if site.OperationID != nil {
		return nil, fmt.Errorf("site %s: %w", siteID, &ConflictError{
			Reason: "the site has an operation in progress", OperationID: *site.OperationID})
	}
	if site.Status != SiteStatusActive {
		return nil, fmt.Errorf("site %s: %w", siteID, &ConflictError{Reason: "the site is " + site.Status + ", not active"})
	}
	res, err := tx.NewUpdate().Model((*Site)(nil)).Set("operation_id = ?", opID).Set("updated_at = ?", now).
		Where("id = ? AND operation_id IS NULL", siteID).Exec(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock site %s: %w", siteID, err)
	}
	if affected(res) == 0 {
		return nil, fmt.Errorf("site %s: %w", siteID, &ConflictError{Reason: "the site has an operation in progress"})
	}
	return site, nil
}

// unlockSite releases the site's lock if opID holds it.
func unlockSite(ctx context.Context, tx bun.IDB, siteID, opID string, now time.Time) error {
	_, err := tx.NewUpdate().Model((*Site)(nil)).Set("operation_id = NULL").Set("updated_at = ?", now).
		Where("id = ? AND operation_id = ?", siteID, opID).Exec(ctx)
	if err != nil {
		return fmt.Errorf("unlock site %s: %w", siteID, err)
	}
	return nil
}

// CreateBackup records a pending backup of a tenant's active site and its
// backup.create operation in one transaction, taking the site's mutation lock.
// A site with a mutation in flight is a ConflictError naming it; an unknown
// site is ErrNotFound; a tenant at its backup or backup-storage quota is a
// QuotaError (checked under the tenant's lock). The caller enqueues the
// operation's task. Scheduled backups (BookScheduledBackup) are not held to
// the quotas: their schedule's keep bounds them.
func (s *Store) CreateBackup(ctx context.Context, p CreateBackupParams) (*Accepted, error) {
	return s.recordMutation(ctx, p.Accept, "backup.create", func(ctx context.Context, tx bun.Tx, opID string, now time.Time) (*Operation, error) {
		if err := s.admitBackup(ctx, tx, p.TenantID); err != nil {
			return nil, fmt.Errorf("back up site %s: %w", p.SiteID, err)
		}
		return createBackup(ctx, tx, p, opID, now)
	})
}

// createBackup locks p's site for opID and inserts the pending backup inside
// tx, and returns its backup.create operation (not yet inserted).
func createBackup(ctx context.Context, tx bun.Tx, p CreateBackupParams, opID string, now time.Time) (*Operation, error) {
	b := &SiteBackup{
		ID: NewID(PrefixBackup), TenantID: p.TenantID, SiteID: p.SiteID, BackupType: p.BackupType,
		Status: BackupStatusPending, Format: "tar+gzip", RetentionDays: p.RetentionDays, CreatedAt: now,
	}
	if p.ScheduleID != "" {
		b.ScheduleID = &p.ScheduleID
	}
	b.StorageKey = StorageKey(b)
	op, err := newOperation(p.Accept, OpTypeBackupCreate, TargetBackup, b.ID,
		BackupPayload{BackupID: b.ID, SiteID: p.SiteID, BackupType: p.BackupType, RetentionDays: p.RetentionDays}, now)
	if err != nil {
		return nil, err
	}
	op.ID = opID
	b.OperationID = &op.ID
	site, err := lockSite(ctx, tx, p.TenantID, p.SiteID, op.ID, now)
	if err != nil {
		return nil, fmt.Errorf("back up: %w", err)
	}
	if p.BackupType == "database" && !SiteHasDatabase(site.SiteType) {
		return nil, fmt.Errorf("back up site %s: %w", p.SiteID, &ConflictError{Reason: "a " + site.SiteType + " site has no database to back up"})
	}
	if _, err := tx.NewInsert().Model(b).Exec(ctx); err != nil {
		return nil, fmt.Errorf("insert backup of site %s: %w", p.SiteID, err)
	}
	return op, nil
}

// RestoreBackup records the restore of a tenant's completed backup onto its
// site, taking the site's lock and the backup's. Another tenant's or a deleted
// backup is ErrNotFound; a backup that is not completed, or is busy, or a site
// with a mutation in flight, is a ConflictError.
func (s *Store) RestoreBackup(ctx context.Context, a Accept, backupID string) (*Accepted, error) {
	return s.recordMutation(ctx, a, "backup.restore", func(ctx context.Context, tx bun.Tx, opID string, now time.Time) (*Operation, error) {
		b, err := lockBackup(ctx, tx, a.TenantID, backupID, opID, []string{BackupStatusCompleted})
		if err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		if _, err := lockSite(ctx, tx, a.TenantID, b.SiteID, opID, now); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		op, err := newOperation(a, OpTypeBackupRestore, TargetBackup, b.ID,
			BackupPayload{BackupID: b.ID, SiteID: b.SiteID, BackupType: b.BackupType}, now)
		if err != nil {
			return nil, err
		}
		op.ID = opID
		return op, nil
	})
}

// lockBackup takes the backup's lock for opID inside tx, when its status is
// one of statuses. A missing, deleted or foreign backup is ErrNotFound.
func lockBackup(ctx context.Context, tx bun.Tx, tenantID, backupID, opID string, statuses []string) (*SiteBackup, error) {
	b := new(SiteBackup)
	err := tx.NewSelect().Model(b).
		Where("id = ? AND tenant_id = ? AND status <> ?", backupID, tenantID, BackupStatusDeleted).Scan(ctx)
	if err != nil {
		return nil, notFound(err, "backup", backupID)
	}
	if b.OperationID != nil {
		return nil, fmt.Errorf("backup %s: %w", backupID, &ConflictError{
			Reason: "the backup has an operation in progress", OperationID: *b.OperationID})
	}
	allowed := false
	for _, st := range statuses {
		allowed = allowed || b.Status == st
	}
	if !allowed {
		return nil, fmt.Errorf("backup %s: %w", backupID, &ConflictError{Reason: "the backup is " + b.Status})
	}
	res, err := tx.NewUpdate().Model((*SiteBackup)(nil)).Set("operation_id = ?", opID).
		Where("id = ? AND operation_id IS NULL AND status = ?", backupID, b.Status).Exec(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock backup %s: %w", backupID, err)
	}
	if affected(res) == 0 {
		return nil, fmt.Errorf("backup %s: %w", backupID, &ConflictError{Reason: "the backup has an operation in progress"})
	}
	return b, nil
}

// DeleteBackup records the deletion of a tenant's completed or failed backup:
// it becomes deleting and a backup.delete operation removes its archive. A
// backup with an operation in flight is a ConflictError naming it; a deleted or
// foreign one is ErrNotFound.
func (s *Store) DeleteBackup(ctx context.Context, a Accept, backupID string) (*Accepted, error) {
	return s.recordMutation(ctx, a, "backup.delete", func(ctx context.Context, tx bun.Tx, opID string, now time.Time) (*Operation, error) {
		b, err := lockBackup(ctx, tx, a.TenantID, backupID, opID, []string{BackupStatusCompleted, BackupStatusFailed})
		if err != nil {
			return nil, fmt.Errorf("delete: %w", err)
		}
		if _, err := tx.NewUpdate().Model((*SiteBackup)(nil)).Set("status = ?", BackupStatusDeleting).
			Where("id = ?", b.ID).Exec(ctx); err != nil {
			return nil, fmt.Errorf("mark backup %s deleting: %w", b.ID, err)
		}
		op, err := newOperation(a, OpTypeBackupDelete, TargetBackup, b.ID,
			BackupPayload{BackupID: b.ID, SiteID: b.SiteID, BackupType: b.BackupType, PreviousStatus: b.Status}, now)
		if err != nil {
			return nil, err
		}
		op.ID = opID
		return op, nil
	})
}

// GetBackup returns the tenant's backup with id (deleted ones too, as a
// record). Another tenant's is ErrNotFound.
func (s *Store) GetBackup(ctx context.Context, tenantID, id string) (*SiteBackup, error) {
	b := new(SiteBackup)
	if err := s.db.NewSelect().Model(b).Where("id = ? AND tenant_id = ?", id, tenantID).Scan(ctx); err != nil {
		return nil, notFound(err, "backup", id)
	}
	return b, nil
}

// BackupByID returns a backup whatever its tenant: for workers.
func (s *Store) BackupByID(ctx context.Context, id string) (*SiteBackup, error) {
	b := new(SiteBackup)
	if err := s.db.NewSelect().Model(b).Where("id = ?", id).Scan(ctx); err != nil {
		return nil, notFound(err, "backup", id)
	}
	return b, nil
}

// BackupFilter narrows a backup listing. The zero value lists every backup
// but the deleted ones.
type BackupFilter struct {
	Status string
	Cursor string
	Limit  int
}

// ListBackups returns a page of the backups of the tenant's site, newest first.
// An unknown or foreign site is ErrNotFound.
func (s *Store) ListBackups(ctx context.Context, tenantID, siteID string, f BackupFilter) ([]SiteBackup, error) {
	if _, err := s.GetSite(ctx, tenantID, siteID); err != nil {
		return nil, err
	}
	if f.Limit <= 0 {
		f.Limit = 20
	}
	var out []SiteBackup
	q := s.db.NewSelect().Model(&out).Where("tenant_id = ? AND site_id = ?", tenantID, siteID).
		OrderExpr("id DESC").Limit(int64(f.Limit))
	if f.Status != "" {
		q = q.Where("status = ?", f.Status)
	} else {
		q = q.Where("status <> ?", BackupStatusDeleted)
	}
	if f.Cursor != "" {
		q = q.Where("id < ?", f.Cursor)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("list backups of site %s: %w", siteID, err)
	}
	return out, nil
}

// BeginBackup moves a pending backup to running; a no-op in any other status.
func (s *Store) BeginBackup(ctx context.Context, backupID string) error {
	_, err := s.db.NewUpdate().Model((*SiteBackup)(nil)).Set("status = ?", BackupStatusRunning).
		Where("id = ? AND status = ?", backupID, BackupStatusPending).Exec(ctx)
	if err != nil {
		return fmt.Errorf("begin backup %s: %w", backupID, err)
	}
	return nil
}

// BackupArchive is what a backup job records about the stored archive.
type BackupArchive struct {
	StorageKey string
	Format     string
	SizeBytes  int64
	SHA256     string
}

// CompleteBackup ends a backup.create successfully: the backup is completed with
// its archive's size, checksum and key, expires retention_days after now (never
// with retention 0), the site's and backup's locks are released, the operation
// succeeds and events are written, atomically. Returns false, writing nothing,
// when the operation had already finished.
func (s *Store) CompleteBackup(ctx context.Context, opID string, b *SiteBackup, a BackupArchive, result any, events []OutboxEvent) (bool, error) {
	return s.finish(ctx, opID, Outcome{Status: OpSucceeded, Result: result}, events,
		func(ctx context.Context, tx bun.Tx, now time.Time) error {
			q := tx.NewUpdate().Model((*SiteBackup)(nil)).
				Set("status = ?", BackupStatusCompleted).Set("storage_key = ?", a.StorageKey).
				Set("format = ?", a.Format).Set("size_bytes = ?", a.SizeBytes).Set("sha256 = ?", a.SHA256).
				Set("completed_at = ?", now).Set("operation_id = NULL").
				Where("id = ?", b.ID)
			if b.RetentionDays > 0 {
				q = q.Set("expires_at = ?", now.Add(time.Duration(b.RetentionDays)*24*time.Hour))
			}
			if _, err := q.Exec(ctx); err != nil {
				return fmt.Errorf("complete backup %s: %w", b.ID, err)
			}
			return unlockSite(ctx, tx, b.SiteID, opID, now)
		})
}

// FailBackup ends a backup.create that failed for good (or was cancelled) after
// the job removed any partial archive: the backup is failed with a public
// message, locks are released. Returns false when already finished.
func (s *Store) FailBackup(ctx context.Context, opID string, b *SiteBackup, out Outcome, events []OutboxEvent) (bool, error) {
	return s.finish(ctx, opID, out, events, func(ctx context.Context, tx bun.Tx, now time.Time) error {
		return failBackupTx(ctx, tx, b, opID, out, now)
	})
}

func failBackupTx(ctx context.Context, tx bun.Tx, b *SiteBackup, opID string, out Outcome, now time.Time) error {
	_, err := tx.NewUpdate().Model((*SiteBackup)(nil)).
		Set("status = ?", BackupStatusFailed).Set("error = ?", out.ErrorMessage).Set("operation_id = NULL").
		Set("size_bytes = 0").Set("sha256 = ''").
		Where("id = ?", b.ID).Exec(ctx)
	if err != nil {
		return fmt.Errorf("fail backup %s: %w", b.ID, err)
	}
	return unlockSite(ctx, tx, b.SiteID, opID, now)
}

// FinishRestore ends a backup.restore with out: on success the backup records
// restored_at; either way both locks are released and events written. Returns
// false when already finished.
func (s *Store) FinishRestore(ctx context.Context, opID string, b *SiteBackup, out Outcome, events []OutboxEvent) (bool, error) {
	return s.finish(ctx, opID, out, events, func(ctx context.Context, tx bun.Tx, now time.Time) error {
		q := tx.NewUpdate().Model((*SiteBackup)(nil)).Set("operation_id = NULL").
			Where("id = ? AND operation_id = ?", b.ID, opID)
		if out.Status == OpSucceeded {
			q = q.Set("restored_at = ?", now)
		}
		if _, err := q.Exec(ctx); err != nil {
			return fmt.Errorf("finish restore of backup %s: %w", b.ID, err)
		}
		return unlockSite(ctx, tx, b.SiteID, opID, now)
	})
}

// CompleteBackupDelete ends a backup.delete whose archive is gone: the backup is
// deleted. Returns false when already finished.
func (s *Store) CompleteBackupDelete(ctx context.Context, opID string, b *SiteBackup, events []OutboxEvent) (bool, error) {
	return s.finish(ctx, opID, Outcome{Status: OpSucceeded, Result: map[string]string{"backup_id": b.ID}}, events,
		func(ctx context.Context, tx bun.Tx, now time.Time) error {
			_, err := tx.NewUpdate().Model((*SiteBackup)(nil)).
				Set("status = ?", BackupStatusDeleted).Set("deleted_at = ?", now).Set("operation_id = NULL").
				Where("id = ?", b.ID).Exec(ctx)
			if err != nil {
				return fmt.Errorf("mark backup %s deleted: %w", b.ID, err)
			}
			return nil
		})
}

// AbandonBackupDelete ends a backup.delete that failed for good or was
// cancelled: the backup gets back its previous status. Returns false when
// already finished.
func (s *Store) AbandonBackupDelete(ctx context.Context, opID string, b *SiteBackup, previous string, out Outcome) (bool, error) {
	return s.finish(ctx, opID, out, nil, func(ctx context.Context, tx bun.Tx, now time.Time) error {
		return abandonDeleteTx(ctx, tx, b.ID, previous)
	})
}

func abandonDeleteTx(ctx context.Context, tx bun.Tx, backupID, previous string) error {
	if previous == "" {
		previous = BackupStatusCompleted
	}
	_, err := tx.NewUpdate().Model((*SiteBackup)(nil)).Set("status = ?", previous).Set("operation_id = NULL").
		Where("id = ? AND status = ?", backupID, BackupStatusDeleting).Exec(ctx)
	if err != nil {
		return fmt.Errorf("restore status of backup %s: %w", backupID, err)
	}
	return nil
}

// abandonPendingBackupOp cancels a backup operation that has not started,
// putting its backup and site back as they were.
func (s *Store) abandonPendingBackupOp(ctx context.Context, op *Operation, payload BackupPayload, out Outcome) (bool, error) {
	return s.finishPendingWith(ctx, op.ID, out, func(ctx context.Context, tx bun.Tx, now time.Time) error {
		switch op.Type {
		case OpTypeBackupCreate:
			return failBackupTx(ctx, tx, &SiteBackup{ID: payload.BackupID, SiteID: payload.SiteID}, op.ID, out, now)
		case OpTypeBackupDelete:
			return abandonDeleteTx(ctx, tx, payload.BackupID, payload.PreviousStatus)
		default: // restore
			if _, err := tx.NewUpdate().Model((*SiteBackup)(nil)).Set("operation_id = NULL").
				Where("id = ? AND operation_id = ?", payload.BackupID, op.ID).Exec(ctx); err != nil {
				return err
			}
			return unlockSite(ctx, tx, payload.SiteID, op.ID, now)
		}
	})
}

// ExpiredBackups returns up to limit idle completed or failed backups whose
// expiry is at or before now, oldest first: backup:prune's work list.
func (s *Store) ExpiredBackups(ctx context.Context, now time.Time, limit int) ([]SiteBackup, error) {
	var out []SiteBackup
	err := s.db.NewSelect().Model(&out).
		Where("status IN (?, ?)", BackupStatusCompleted, BackupStatusFailed).
		Where("expires_at IS NOT NULL AND expires_at <= ?", now.UTC()).
		Where("operation_id IS NULL").
		OrderExpr("expires_at ASC").Limit(int64(limit)).Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("list expired backups: %w", err)
	}
	return out, nil
}

// BackupsBeyondKeep returns, for every schedule, the idle completed or failed
// backups it made beyond its newest Keep (up to limit in all): backup:prune's
// other work list.
func (s *Store) BackupsBeyondKeep(ctx context.Context, limit int) ([]SiteBackup, error) {
	var scheds []BackupSchedule
	if err := s.db.NewSelect().Model(&scheds).OrderExpr("id ASC").Scan(ctx); err != nil {
		return nil, fmt.Errorf("list backup schedules: %w", err)
	}
	var out []SiteBackup
	for _, sc := range scheds {
		if len(out) >= limit {
			break
		}
		var rows []SiteBackup
		// The newest Keep completed backups are kept; older ones, and failed ones
		// older than those, go. Pending or running ones are never counted or cut.
		err := s.db.NewSelect().Model(&rows).
			Where("schedule_id = ? AND status IN (?, ?) AND operation_id IS NULL", sc.ID, BackupStatusCompleted, BackupStatusFailed).
			OrderExpr("id DESC").Scan(ctx)
		if err != nil {
			return nil, fmt.Errorf("list backups of schedule %s: %w", sc.ID, err)
		}
		kept := 0
		for _, b := range rows {
			if b.Status == BackupStatusCompleted && kept < sc.Keep {
				kept++
				continue
			}
			if b.Status == BackupStatusFailed && kept < sc.Keep {
				continue // a failure newer than the kept ones stays visible
			}
			out = append(out, b)
			if len(out) >= limit {
				break
			}
		}
	}
	return out, nil
}

// PutBackupScheduleParams describes a site's backup schedule.
type PutBackupScheduleParams struct {
	TenantID   string
	SiteID     string
	Frequency  string // daily|weekly
	Keep       int    // 1..90
	BackupType string
}

// PutBackupSchedule creates or replaces the schedule of the tenant's site. A new
// schedule is due at once (the ingress books its first backup right after this
// commits, and the sweep does if that fails); a changed frequency is due one new period after the change; otherwise
// the due time stays. An unknown site is ErrNotFound.
func (s *Store) PutBackupSchedule(ctx context.Context, p PutBackupScheduleParams) (*BackupSchedule, bool, error) {
	now := s.nowUTC()
	var out *BackupSchedule
	created := false
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		site := new(Site)
		if err := tx.NewSelect().Model(site).
			Where("id = ? AND tenant_id = ? AND deleted_at IS NULL", p.SiteID, p.TenantID).Scan(ctx); err != nil {
			return notFound(err, "site", p.SiteID)
		}
		cur := new(BackupSchedule)
		err := tx.NewSelect().Model(cur).Where("site_id = ?", p.SiteID).Scan(ctx)
		if err != nil {
			if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("read schedule of site %s: %w", p.SiteID, err)
			}
			created = true
			out = &BackupSchedule{ID: NewID(PrefixSchedule), TenantID: p.TenantID, SiteID: p.SiteID,
				Frequency: p.Frequency, Keep: p.Keep, BackupType: p.BackupType, NextRunAt: now, CreatedAt: now, UpdatedAt: now}
			if _, err := tx.NewInsert().Model(out).Exec(ctx); err != nil {
				return fmt.Errorf("insert schedule of site %s: %w", p.SiteID, err)
			}
			return nil
		}
		if cur.Frequency != p.Frequency {
			cur.NextRunAt = now.Add(SchedulePeriod(p.Frequency))
		}
		cur.Frequency, cur.Keep, cur.BackupType, cur.UpdatedAt = p.Frequency, p.Keep, p.BackupType, now
		if _, err := tx.NewUpdate().Model(cur).WherePK().Exec(ctx); err != nil {
			return fmt.Errorf("update schedule of site %s: %w", p.SiteID, err)
		}
		out = cur
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return out, created, nil
}

// GetBackupSchedule returns the schedule of the tenant's site, or ErrNotFound.
func (s *Store) GetBackupSchedule(ctx context.Context, tenantID, siteID string) (*BackupSchedule, error) {
	sc := new(BackupSchedule)
	err := s.db.NewSelect().Model(sc).Where("tenant_id = ? AND site_id = ?", tenantID, siteID).Scan(ctx)
	if err != nil {
		return nil, notFound(err, "backup schedule of site", siteID)
	}
	return sc, nil
}

// DeleteBackupSchedule removes the schedule of the tenant's site; the backups it
// made stay until they expire or are deleted. No schedule is ErrNotFound.
func (s *Store) DeleteBackupSchedule(ctx context.Context, tenantID, siteID string) error {
	res, err := s.db.NewDelete().Model((*BackupSchedule)(nil)).Where("tenant_id = ? AND site_id = ?", tenantID, siteID).Exec(ctx)
	if err != nil {
		return fmt.Errorf("delete schedule of site %s: %w", siteID, err)
	}
	if affected(res) == 0 {
		return fmt.Errorf("backup schedule of site %s: %w", siteID, ErrNotFound)
	}
	return nil
}

// DueSchedules returns up to limit schedules due at or before now, most overdue first.
func (s *Store) DueSchedules(ctx context.Context, now time.Time, limit int) ([]BackupSchedule, error) {
	var out []BackupSchedule
	err := s.db.NewSelect().Model(&out).Where("next_run_at <= ?", now.UTC()).
		OrderExpr("next_run_at ASC").Limit(int64(limit)).Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("list due backup schedules: %w", err)
	}
	return out, nil
}

// BookScheduledBackup books the backup of sc that was due at sc.NextRunAt: in
// one transaction it moves next_run_at to the first due time after now and
// records the backup and its operation. The move only happens if next_run_at
// still holds the due time read, so two schedulers (or a re-run) book each due
// time once: the loser gets (nil, nil). A site that is busy or not active keeps
// the schedule due (the next tick tries again) and returns the ConflictError; a
// deleted site drops the schedule and returns ErrNotFound.
func (s *Store) BookScheduledBackup(ctx context.Context, sc BackupSchedule) (*Operation, error) {
	now := s.nowUTC()
	period := SchedulePeriod(sc.Frequency)
	if period <= 0 {
		return nil, fmt.Errorf("schedule %s: unknown frequency %q", sc.ID, sc.Frequency)
	}
	next := sc.NextRunAt.UTC()
	for !next.After(now) {
		next = next.Add(period)
	}
	var op *Operation
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewUpdate().Model((*BackupSchedule)(nil)).Set("next_run_at = ?", next).Set("updated_at = ?", now).
			Where("id = ? AND next_run_at = ?", sc.ID, sc.NextRunAt.UTC()).Exec(ctx)
		if err != nil {
			return fmt.Errorf("advance schedule %s: %w", sc.ID, err)
		}
		if affected(res) == 0 {
			return errAlreadyFinished // another booking took this due time
		}
		p := CreateBackupParams{
			Accept: Accept{TenantID: sc.TenantID, Actor: "schedule:" + sc.ID},
			SiteID: sc.SiteID, BackupType: sc.BackupType, ScheduleID: sc.ID,
		}
		op, err = s.recordMutationTx(ctx, tx, p.Accept, "backup.create", now,
			func(ctx context.Context, tx bun.Tx, opID string, now time.Time) (*Operation, error) {
				return createBackup(ctx, tx, p, opID, now)
			})
		return err
	})
	switch {
	case errors.Is(err, errAlreadyFinished):
		return nil, nil
	case errors.Is(err, ErrNotFound):
		_, _ = s.db.NewDelete().Model((*BackupSchedule)(nil)).Where("id = ?", sc.ID).Exec(ctx)
		return nil, err
	case err != nil:
		return nil, err
	}
	return op, nil
}
