package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// BackupConfig holds what the backup handlers need.
type BackupConfig struct {
	Store *models.Store
	// Source makes and restores archives on the site's server.
	Source drivers.BackupSource
	// Backups keeps the archives.
	Backups drivers.BackupStore
	// Enqueuer enqueues the operations prune and the schedule sweep record.
	Enqueuer OperationEnqueuer
	Notifier Notifier
	Logger   *slog.Logger
	// Batch is the most backups (or schedules) one prune (or sweep) handles;
	// the next period takes the rest. Default 500.
	Batch int
	// Now is the clock of prune; default time.Now.
	Now func() time.Time
}

// Validate reports every missing dependency.
func (c BackupConfig) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("jobs: backup Store is required"))
	}
	if c.Source == nil {
		errs = append(errs, errors.New("jobs: backup Source is required"))
	}
	if c.Backups == nil {
		errs = append(errs, errors.New("jobs: backup Backups (the store of archives) is required"))
	}
	if c.Enqueuer == nil {
		errs = append(errs, errors.New("jobs: backup Enqueuer is required"))
	}
	if c.Notifier == nil {
		errs = append(errs, errors.New("jobs: backup Notifier is required"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("jobs: backup Logger is required"))
	}
	return errors.Join(errs...)
}

// Backups holds the handlers of every backup task type.
type Backups struct {
	Create    *CreateBackup
	Restore   *RestoreBackup
	Delete    *DeleteBackup
	Prune     *PruneBackups
	Schedules *BookSchedules
}

// NewBackups validates cfg and returns the backup handlers.
func NewBackups(cfg BackupConfig) (*Backups, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &backupCore{cfg: cfg}
	return &Backups{Create: &CreateBackup{c}, Restore: &RestoreBackup{c}, Delete: &DeleteBackup{c},
		Prune: &PruneBackups{c}, Schedules: &BookSchedules{c}}, nil
}

type backupCore struct{ cfg BackupConfig }

// start begins one delivery of a backup operation's task: it returns the
// running operation and its backup, or a nil operation when there is nothing
// to do (already finished).
func (c *backupCore) start(ctx context.Context, t *asynq.Task) (*models.Operation, *models.SiteBackup, *slog.Logger, error) {
	p, err := queue.DecodeOperationPayload(t.Payload())
	if err != nil {
		return nil, nil, nil, err
	}
	log := c.cfg.Logger.With("operation_id", p.OperationID, "tenant_id", p.TenantID)
	op, err := beginOperation(ctx, c.cfg.Store, c.cfg.Notifier, log, p.OperationID)
	if op == nil || err != nil {
		return nil, nil, nil, err
	}
	b, err := c.cfg.Store.BackupByID(ctx, op.TargetID)
	if err != nil {
		if errors.Is(err, models.ErrNotFound) {
			_, ferr := c.cfg.Store.FinishOperation(ctx, op.ID, models.Outcome{Status: models.OpFailed,
				ErrorCode: "target_missing", ErrorMessage: "the backup no longer exists"}, nil)
			c.cfg.Notifier.OperationChanged(ctx, op.ID)
			return nil, nil, nil, errors.Join(skipRetry(err), ferr)
		}
		return nil, nil, nil, err
	}
	return op, b, log.With("backup_id", b.ID, "site_id", b.SiteID), nil
}

// spec is the driver's view of the backup's site.
func (c *backupCore) spec(ctx context.Context, b *models.SiteBackup) (drivers.SiteSpec, error) {
	site, err := c.cfg.Store.SiteByID(ctx, b.SiteID)
	if err != nil {
		return drivers.SiteSpec{}, err
	}
	if site.VPSID == nil {
		return drivers.SiteSpec{}, fmt.Errorf("site %s has no server: %w", site.ID, models.ErrNotFound)
	}
	vps, err := c.cfg.Store.GetVPS(ctx, *site.VPSID)
	if err != nil {
		return drivers.SiteSpec{}, err
	}
	return siteSpec(site, vps), nil
}

func backupEvent(b *models.SiteBackup, op *models.Operation, status string) events.BackupEvent {
	return events.BackupEvent{BackupID: b.ID, TenantID: b.TenantID, SiteID: b.SiteID, BackupType: b.BackupType,
		OperationID: op.ID, Status: status, OccurredAt: time.Now().UTC()}
}

// CreateBackup handles backup:create: it streams the site's archive from its
// server into the backup store through a pipe (no temporary file, no buffer of
// the archive: memory stays flat whatever the site's size) and records size,
// SHA-256 and key with backup.completed.v1 in one transaction. A failure after
// the last retry removes the partial object and marks the backup failed.
type CreateBackup struct{ c *backupCore }

// ProcessTask runs one delivery of a backup:create task. A second delivery of a
// finished operation does nothing; a retry after a crash stores the archive
// again under the same key, replacing the first: one object either way.
func (h *CreateBackup) ProcessTask(ctx context.Context, t *asynq.Task) error {
	c := h.c
	op, b, log, err := c.start(ctx, t)
	if op == nil || err != nil {
		return err
	}
	if b.Status == models.BackupStatusCompleted {
		return nil
	}
	if op.CancelRequestedAt != nil {
		return h.abandon(ctx, log, op, b, errCancelled)
	}
	if err := c.cfg.Store.BeginBackup(ctx, b.ID); err != nil {
		return err
	}
	spec, err := c.spec(ctx, b)
	if err != nil {
		return h.fail(ctx, log, op, b, err)
	}
	key := b.StorageKey
	if key == "" {
		key = models.StorageKey(b)
	}
	size, sum, err := streamArchive(ctx, c.cfg.Source, c.cfg.Backups, spec, b.BackupType, key)
	if err != nil {
		return h.fail(ctx, log, op, b, err)
	}
	a := models.BackupArchive{StorageKey: key, Format: drivers.ArchiveFormat, SizeBytes: size, SHA256: sum}
	ev := backupEvent(b, op, models.BackupStatusCompleted)
	ev.Format, ev.SizeBytes, ev.SHA256 = a.Format, size, sum
	if b.RetentionDays > 0 {
		ev.ExpiresAt = ev.OccurredAt.Add(time.Duration(b.RetentionDays) * 24 * time.Hour)
	}
	row, err := events.BackupOutbox(events.TypeBackupCompleted, ev)
	if err != nil {
		return skipRetry(err)
	}
	result := map[string]any{"backup_id": b.ID, "site_id": b.SiteID, "size_bytes": size, "sha256": sum}
	done, err := c.cfg.Store.CompleteBackup(ctx, op.ID, b, a, result, []models.OutboxEvent{row})
	if err != nil {
		return err
	}
	c.cfg.Notifier.OperationChanged(ctx, op.ID)
	if done {
		log.InfoContext(ctx, "backup completed", "size_bytes", size)
	}
	return nil
}

// streamArchive pipes src's archive of spec into dst under key. Archive writes
// into one end while Put reads the other; whichever fails first closes the pipe
// with its error, so the other stops at once and Put leaves no object.
func streamArchive(ctx context.Context, src drivers.BackupSource, dst drivers.BackupStore, spec drivers.SiteSpec, kind, key string) (int64, string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	archived := make(chan error, 1)
	go func() {
		err := src.Archive(ctx, spec, kind, pw)
		if err != nil {
			err = fmt.Errorf("archive site %s: %w", spec.ID, err)
		}
		pw.CloseWithError(err) // nil: EOF for Put
		archived <- err
	}()
	size, sum, putErr := dst.Put(ctx, key, pr)
	if putErr != nil {
		putErr = fmt.Errorf("store archive %s: %w", key, putErr)
		pr.CloseWithError(putErr)
		cancel()
	}
	archErr := <-archived
	switch {
	case archErr != nil:
		return 0, "", archErr
	case putErr != nil:
		return 0, "", putErr
	}
	return size, sum, nil
}

// fail retries a transient failure and compensates a final one.
func (h *CreateBackup) fail(ctx context.Context, log *slog.Logger, op *models.Operation, b *models.SiteBackup, cause error) error {
	if ctx.Err() != nil {
		return cause // shutting down: asynq runs it again
	}
	if errors.Is(cause, drivers.ErrDeferred) {
		// A breaker or limit deferred it: not a failure. A cancel asked
		// meanwhile ends it now; removing the (absent) archive needs no server.
		if cancelled, err := h.c.cfg.Store.CancelRequested(ctx, op.ID); err != nil || !cancelled {
			return errors.Join(cause, err)
		}
		return h.abandon(ctx, log, op, b, errCancelled)
	}
	if !permanent(cause) && !errors.Is(cause, drivers.ErrInvalidKey) && !finalAttempt(ctx) {
		log.WarnContext(ctx, "backup attempt failed; will retry", "error", cause)
		return cause
	}
	if err := h.abandon(ctx, log, op, b, cause); err != nil {
		return err
	}
	return skipRetry(cause)
}

// abandon removes any object the job stored (compensation) and marks the
// backup failed with backup.failed.v1 (cancelled: without the event).
func (h *CreateBackup) abandon(ctx context.Context, log *slog.Logger, op *models.Operation, b *models.SiteBackup, cause error) error {
	c := h.c
	key := b.StorageKey
	if key == "" {
		key = models.StorageKey(b)
	}
	if err := c.cfg.Backups.Delete(ctx, key); err != nil {
		return fmt.Errorf("remove partial archive %s: %w", key, err)
	}
	out := models.Outcome{Status: models.OpFailed, ErrorCode: "backup_failed", ErrorMessage: backupMessage(cause)}
	var evs []models.OutboxEvent
	if errors.Is(cause, errCancelled) {
		out = models.Outcome{Status: models.OpCancelled, ErrorCode: "cancelled", ErrorMessage: "cancelled at the caller's request"}
	} else {
		ev := backupEvent(b, op, models.BackupStatusFailed)
		ev.ErrorCode, ev.Error = out.ErrorCode, out.ErrorMessage
		row, err := events.BackupOutbox(events.TypeBackupFailed, ev)
		if err != nil {
			return skipRetry(err)
		}
		evs = append(evs, row)
	}
	done, err := c.cfg.Store.FailBackup(ctx, op.ID, b, out, evs)
	if err != nil {
		return err
	}
	c.cfg.Notifier.OperationChanged(ctx, op.ID)
	if done {
		log.WarnContext(ctx, "backup abandoned", "status", out.Status, "error", cause)
	}
	return nil
}

func backupMessage(err error) string {
	switch {
	case errors.Is(err, drivers.ErrInvalidSpec):
		return "the site's settings were rejected by the server driver"
	case errors.Is(err, models.ErrNotFound):
		return "the site or its server no longer exists"
	default:
		return "the backup failed after all retries"
	}
}

// RestoreBackup handles backup:restore: it opens the archive, checks it against
// the recorded size and SHA-256 while the driver reads it (drivers.VerifyReader)
// and lets the driver swap the site only after a clean EOF. A mismatch is
// permanent (the archive is damaged) and leaves the site unchanged.
type RestoreBackup struct{ c *backupCore }

// ProcessTask runs one delivery of a backup:restore task.
func (h *RestoreBackup) ProcessTask(ctx context.Context, t *asynq.Task) error {
	c := h.c
	op, b, log, err := c.start(ctx, t)
	if op == nil || err != nil {
		return err
	}
	if op.CancelRequestedAt != nil {
		return h.finish(ctx, log, op, b, models.Outcome{Status: models.OpCancelled, ErrorCode: "cancelled",
			ErrorMessage: "cancelled at the caller's request"}, errCancelled)
	}
	err = h.restore(ctx, b)
	if err == nil {
		ev := backupEvent(b, op, models.BackupStatusCompleted)
		ev.Format, ev.SizeBytes, ev.SHA256 = b.Format, b.SizeBytes, b.SHA256
		if b.ExpiresAt != nil {
			ev.ExpiresAt = *b.ExpiresAt
		}
		row, err := events.BackupOutbox(events.TypeBackupRestored, ev)
		if err != nil {
			return skipRetry(err)
		}
		done, err := c.cfg.Store.FinishRestore(ctx, op.ID, b, models.Outcome{Status: models.OpSucceeded,
			Result: map[string]string{"backup_id": b.ID, "site_id": b.SiteID}}, []models.OutboxEvent{row})
		if err != nil {
			return err
		}
		c.cfg.Notifier.OperationChanged(ctx, op.ID)
		if done {
			log.InfoContext(ctx, "backup restored")
		}
		return nil
	}
	if ctx.Err() != nil {
		return err
	}
	if errors.Is(err, drivers.ErrDeferred) {
		// Not a failure; but a cancel asked meanwhile ends it now (the
		// restore did not run, so the site is unchanged).
		if cancelled, cerr := c.cfg.Store.CancelRequested(ctx, op.ID); cerr != nil || !cancelled {
			return errors.Join(err, cerr)
		}
		return h.finish(ctx, log, op, b, models.Outcome{Status: models.OpCancelled, ErrorCode: "cancelled",
			ErrorMessage: "cancelled at the caller's request"}, errCancelled)
	}
	corrupt := errors.Is(err, drivers.ErrCorruptArchive)
	if !corrupt && !permanent(err) && !finalAttempt(ctx) {
		log.WarnContext(ctx, "restore attempt failed; will retry", "error", err)
		return err
	}
	out := models.Outcome{Status: models.OpFailed, ErrorCode: "restore_failed", ErrorMessage: "the restore failed after all retries; the site is unchanged"}
	switch {
	case corrupt:
		out.ErrorCode, out.ErrorMessage = "corrupt_archive", "the archive is damaged (it does not match its recorded size and checksum, or does not hold what a restore of its type needs); the site is unchanged"
	case errors.Is(err, drivers.ErrNotFound):
		out.ErrorCode, out.ErrorMessage = "archive_missing", "the archive is missing from the backup store; the site is unchanged"
	}
	if ferr := h.finish(ctx, log, op, b, out, err); ferr != nil {
		return ferr
	}
	return skipRetry(err)
}

func (h *RestoreBackup) restore(ctx context.Context, b *models.SiteBackup) error {
	c := h.c
	spec, err := c.spec(ctx, b)
	if err != nil {
		return err
	}
	rc, err := c.cfg.Backups.Open(ctx, b.StorageKey)
	if err != nil {
		if errors.Is(err, drivers.ErrNotFound) {
			return fmt.Errorf("open archive %s: %w: %w", b.StorageKey, err, asynq.SkipRetry)
		}
		return fmt.Errorf("open archive %s: %w", b.StorageKey, err)
	}
	defer rc.Close()
	if err := c.cfg.Source.Restore(ctx, spec, b.BackupType, drivers.VerifyReader(rc, b.SizeBytes, b.SHA256)); err != nil {
		return fmt.Errorf("restore site %s from %s: %w", spec.ID, b.ID, err)
	}
	return nil
}

func (h *RestoreBackup) finish(ctx context.Context, log *slog.Logger, op *models.Operation, b *models.SiteBackup, out models.Outcome, cause error) error {
	done, err := h.c.cfg.Store.FinishRestore(ctx, op.ID, b, out, nil)
	if err != nil {
		return err
	}
	h.c.cfg.Notifier.OperationChanged(ctx, op.ID)
	if done {
		log.WarnContext(ctx, "restore abandoned", "status", out.Status, "error_code", out.ErrorCode, "error", cause)
	}
	return nil
}

// DeleteBackup handles backup:delete: it removes the archive, then marks the
// backup deleted with backup.deleted.v1. The store's Delete ignores a missing
// object, so a retry after a crash finishes the job.
type DeleteBackup struct{ c *backupCore }

// ProcessTask runs one delivery of a backup:delete task.
func (h *DeleteBackup) ProcessTask(ctx context.Context, t *asynq.Task) error {
	c := h.c
	op, b, log, err := c.start(ctx, t)
	if op == nil || err != nil {
		return err
	}
	var payload models.BackupPayload
	_ = json.Unmarshal([]byte(op.Payload), &payload)
	if op.CancelRequestedAt != nil {
		_, err := c.cfg.Store.AbandonBackupDelete(ctx, op.ID, b, payload.PreviousStatus,
			models.Outcome{Status: models.OpCancelled, ErrorCode: "cancelled", ErrorMessage: "cancelled at the caller's request"})
		c.cfg.Notifier.OperationChanged(ctx, op.ID)
		return err
	}
	if b.StorageKey != "" {
		if err := c.cfg.Backups.Delete(ctx, b.StorageKey); err != nil {
			if ctx.Err() == nil && !errors.Is(err, drivers.ErrDeferred) && (permanent(err) || finalAttempt(ctx)) {
				_, ferr := c.cfg.Store.AbandonBackupDelete(ctx, op.ID, b, payload.PreviousStatus,
					models.Outcome{Status: models.OpFailed, ErrorCode: "delete_failed", ErrorMessage: "the archive could not be removed; try again later"})
				c.cfg.Notifier.OperationChanged(ctx, op.ID)
				return errors.Join(skipRetry(err), ferr)
			}
			return fmt.Errorf("delete archive %s: %w", b.StorageKey, err)
		}
	}
	ev := backupEvent(b, op, models.BackupStatusDeleted)
	ev.SizeBytes = b.SizeBytes
	row, err := events.BackupOutbox(events.TypeBackupDeleted, ev)
	if err != nil {
		return skipRetry(err)
	}
	done, err := c.cfg.Store.CompleteBackupDelete(ctx, op.ID, b, []models.OutboxEvent{row})
	if err != nil {
		return err
	}
	c.cfg.Notifier.OperationChanged(ctx, op.ID)
	if done {
		log.InfoContext(ctx, "backup deleted")
	}
	return nil
}

// PruneBackups handles the periodic backup:prune: it records (and enqueues) a
// backup.delete for every expired backup and every scheduled backup beyond its
// schedule's keep-N. Each delete's Idempotency-Key is "prune:<backup id>", so
// two prunes of the same backup record one operation.
type PruneBackups struct{ c *backupCore }

// PruneActor is the actor recorded on the deletes prune makes.
const PruneActor = "system:prune"

// ProcessTask runs one prune.
func (h *PruneBackups) ProcessTask(ctx context.Context, _ *asynq.Task) error {
	c := h.c
	expired, err := c.cfg.Store.ExpiredBackups(ctx, c.cfg.Now(), c.cfg.Batch)
	if err != nil {
		return err
	}
	beyond, err := c.cfg.Store.BackupsBeyondKeep(ctx, c.cfg.Batch)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	n := 0
	for _, b := range append(expired, beyond...) {
		if seen[b.ID] {
			continue
		}
		seen[b.ID] = true
		res, err := c.cfg.Store.DeleteBackup(ctx, models.Accept{TenantID: b.TenantID, Actor: PruneActor,
			IdempotencyKey: "prune:" + b.ID, RequestHash: "prune"}, b.ID)
		var conflict *models.ConflictError
		switch {
		case errors.As(err, &conflict), errors.Is(err, models.ErrNotFound):
			continue // busy (next prune) or gone
		case err != nil:
			return err
		}
		if res.Operation.Status == models.OpPending {
			if err := c.cfg.Enqueuer.EnqueueOperation(ctx, res.Operation); err != nil {
				c.cfg.Logger.WarnContext(ctx, "enqueue prune delete failed; the reconciler will retry",
					"operation_id", res.Operation.ID, "error", err)
			}
		}
		n++
	}
	if n > 0 {
		c.cfg.Logger.InfoContext(ctx, "backups pruned", "deletes", n)
	}
	return nil
}

// BookSchedules handles the periodic backup:schedules: it books every due
// scheduled backup (models.Store.BookScheduledBackup moves the schedule's due
// time in the same transaction, so a second sweep or scheduler books nothing)
// and enqueues its operation.
type BookSchedules struct{ c *backupCore }

// ProcessTask runs one sweep of the schedules.
func (h *BookSchedules) ProcessTask(ctx context.Context, _ *asynq.Task) error {
	c := h.c
	due, err := c.cfg.Store.DueSchedules(ctx, c.cfg.Now(), c.cfg.Batch)
	if err != nil {
		return err
	}
	for _, sc := range due {
		op, err := c.cfg.Store.BookScheduledBackup(ctx, sc)
		var conflict *models.ConflictError
		switch {
		case errors.As(err, &conflict):
			c.cfg.Logger.InfoContext(ctx, "scheduled backup postponed", "site_id", sc.SiteID, "reason", conflict.Reason)
			continue
		case errors.Is(err, models.ErrNotFound):
			c.cfg.Logger.InfoContext(ctx, "schedule of a deleted site dropped", "site_id", sc.SiteID)
			continue
		case err != nil:
			return err
		case op == nil:
			continue // booked by another sweep
		}
		if err := c.cfg.Enqueuer.EnqueueOperation(ctx, op); err != nil {
			c.cfg.Logger.WarnContext(ctx, "enqueue scheduled backup failed; the reconciler will retry",
				"operation_id", op.ID, "error", err)
		}
	}
	return nil
}
