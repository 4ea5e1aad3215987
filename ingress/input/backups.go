package input

import (
	"fmt"
	"slices"
)

// BackupTypes lists the accepted backup type values.
var BackupTypes = []string{"full", "files", "database"}

// DefaultBackupType is used when a request omits type.
const DefaultBackupType = "full"

// Limits of the backup fields.
const (
	MinRetentionDays = 1
	MaxRetentionDays = 3650
	MinScheduleKeep  = 1
	MaxScheduleKeep  = 90
)

// BackupFrequencies lists the accepted schedule frequency values.
var BackupFrequencies = []string{"daily", "weekly"}

// CreateBackupRequest is the body of POST /api/v1/sites/{id}/backups. Both
// fields are optional: type defaults to DefaultBackupType, retention_days to
// the server's default.
type CreateBackupRequest struct {
	Type          string `json:"type,omitempty"`
	RetentionDays *int   `json:"retention_days,omitempty"`
}

// Normalize validates the request and fills in the defaults; every problem is
// one *ValidationError naming "type" or "retention_days".
func (r CreateBackupRequest) Normalize(defaultRetention int) (CreateBackupRequest, error) {
	var v ValidationError
	out := CreateBackupRequest{Type: r.Type}
	if out.Type == "" {
		out.Type = DefaultBackupType
	} else if !slices.Contains(BackupTypes, r.Type) {
		v.Add("type", oneOf(BackupTypes))
	}
	days := defaultRetention
	if r.RetentionDays != nil {
		days = *r.RetentionDays
		if days < MinRetentionDays || days > MaxRetentionDays {
			v.Add("retention_days", fmt.Sprintf("must be an integer between %d and %d", MinRetentionDays, MaxRetentionDays))
		}
	}
	out.RetentionDays = &days
	if err := v.Err(); err != nil {
		return CreateBackupRequest{}, err
	}
	return out, nil
}

// BackupScheduleRequest is the body of PUT /api/v1/sites/{id}/backup-schedule:
// frequency (required, daily|weekly), keep (required, 1–90: how many of the
// schedule's backups are kept) and type (optional, default full).
type BackupScheduleRequest struct {
	Frequency string `json:"frequency"`
	Keep      int    `json:"keep"`
	Type      string `json:"type,omitempty"`
}

// Normalize validates the request and fills in the default type.
func (r BackupScheduleRequest) Normalize() (BackupScheduleRequest, error) {
	var v ValidationError
	out := r
	switch {
	case r.Frequency == "":
		v.Add("frequency", "is required")
	case !slices.Contains(BackupFrequencies, r.Frequency):
		v.Add("frequency", oneOf(BackupFrequencies))
	}
	if r.Keep < MinScheduleKeep || r.Keep > MaxScheduleKeep {
		v.Add("keep", fmt.Sprintf("is required: an integer between %d and %d", MinScheduleKeep, MaxScheduleKeep))
	}
	if out.Type == "" {
		out.Type = DefaultBackupType
	} else if !slices.Contains(BackupTypes, r.Type) {
		v.Add("type", oneOf(BackupTypes))
	}
	if err := v.Err(); err != nil {
		return BackupScheduleRequest{}, err
	}
	return out, nil
}
