package events

import (
	"errors"
	"fmt"
	"time"

	"github.com/chomhq/chom/models"
)

// Backup event types, on TopicBackups, keyed by tenant.
const (
	// TypeBackupCompleted: an archive of a site was stored (size and checksum recorded).
	TypeBackupCompleted = "backup.completed.v1"
	// TypeBackupFailed: a backup failed for good; no archive was kept.
	TypeBackupFailed = "backup.failed.v1"
	// TypeBackupRestored: a site was put back as a backup holds it.
	TypeBackupRestored = "backup.restored.v1"
	// TypeBackupDeleted: a backup's archive was removed (by request or by prune).
	TypeBackupDeleted = "backup.deleted.v1"
)

// SourceBackups is the CloudEvents source of backup events.
const SourceBackups = "/chom/backups"

// BackupEvent is the data of every backup event.
type BackupEvent struct {
	BackupID    string    `json:"backup_id"`
	TenantID    string    `json:"tenant_id"`
	SiteID      string    `json:"site_id"`
	BackupType  string    `json:"backup_type"`
	OperationID string    `json:"operation_id"`
	Status      string    `json:"status"`
	Format      string    `json:"format,omitempty"`
	SizeBytes   int64     `json:"size_bytes"`
	SHA256      string    `json:"sha256,omitempty"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
	ErrorCode   string    `json:"error_code,omitempty"`
	Error       string    `json:"error,omitempty"`
	OccurredAt  time.Time `json:"occurred_at"`
}

// Validate reports every missing field at once.
func (e BackupEvent) Validate() error {
	var errs []error
	for name, v := range map[string]string{"backup_id": e.BackupID, "tenant_id": e.TenantID, "site_id": e.SiteID,
		"backup_type": e.BackupType, "operation_id": e.OperationID, "status": e.Status} {
		if v == "" {
			errs = append(errs, fmt.Errorf("backup event: %s is required", name))
		}
	}
	if e.SizeBytes < 0 {
		errs = append(errs, errors.New("backup event: size_bytes must not be negative"))
	}
	if e.OccurredAt.IsZero() {
		errs = append(errs, errors.New("backup event: occurred_at is required"))
	}
	return errors.Join(errs...)
}

// BackupOutbox builds the outbox row of a backup event of eventType: topic
// backups.v1, key the tenant, subject the backup. Its ID derives from the event
// type and the operation, so a retried job writes the same event.
func BackupOutbox(eventType string, e BackupEvent) (models.OutboxEvent, error) {
	if err := e.Validate(); err != nil {
		return models.OutboxEvent{}, fmt.Errorf("%s: %w", eventType, err)
	}
	e.OccurredAt = e.OccurredAt.UTC().Truncate(time.Microsecond)
	if !e.ExpiresAt.IsZero() {
		e.ExpiresAt = e.ExpiresAt.UTC().Truncate(time.Microsecond)
	}
	return outboxRow(outboxHeader{
		ID: StableID(eventType, e.OperationID), TenantID: e.TenantID,
		Topic: TopicBackups, Type: eventType, Source: SourceBackups,
		Subject: e.BackupID, OccurredAt: e.OccurredAt,
	}, e)
}
