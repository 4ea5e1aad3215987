package input

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCreateBackupRequestNormalize(t *testing.T) {
	t.Parallel()
	n := func(v int) *int { return &v }
	tests := []struct {
		name    string
		in      CreateBackupRequest
		want    CreateBackupRequest
		wantErr []FieldError
	}{
		{"empty body takes the defaults", CreateBackupRequest{}, CreateBackupRequest{Type: "full", RetentionDays: n(30)}, nil},
		{"files for a week", CreateBackupRequest{Type: "files", RetentionDays: n(7)}, CreateBackupRequest{Type: "files", RetentionDays: n(7)}, nil},
		{"longest retention", CreateBackupRequest{Type: "database", RetentionDays: n(3650)}, CreateBackupRequest{Type: "database", RetentionDays: n(3650)}, nil},
		{"unknown type and zero retention", CreateBackupRequest{Type: "Full", RetentionDays: n(0)}, CreateBackupRequest{},
			[]FieldError{{Field: "type", Detail: "must be one of full, files, database"}, {Field: "retention_days", Detail: "must be an integer between 1 and 3650"}}},
		{"retention too long", CreateBackupRequest{RetentionDays: n(3651)}, CreateBackupRequest{},
			[]FieldError{{Field: "retention_days", Detail: "must be an integer between 1 and 3650"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := tc.in.Normalize(30)
			checkFields(t, err, tc.wantErr)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Normalize (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBackupScheduleRequestNormalize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      BackupScheduleRequest
		want    BackupScheduleRequest
		wantErr []FieldError
	}{
		{"daily keep 7", BackupScheduleRequest{Frequency: "daily", Keep: 7}, BackupScheduleRequest{Frequency: "daily", Keep: 7, Type: "full"}, nil},
		{"weekly files keep 90", BackupScheduleRequest{Frequency: "weekly", Keep: 90, Type: "files"},
			BackupScheduleRequest{Frequency: "weekly", Keep: 90, Type: "files"}, nil},
		{"empty", BackupScheduleRequest{}, BackupScheduleRequest{},
			[]FieldError{{Field: "frequency", Detail: "is required"}, {Field: "keep", Detail: "is required: an integer between 1 and 90"}}},
		{"hourly, keep 91, bad type", BackupScheduleRequest{Frequency: "hourly", Keep: 91, Type: "all"}, BackupScheduleRequest{},
			[]FieldError{{Field: "frequency", Detail: "must be one of daily, weekly"}, {Field: "keep", Detail: "is required: an integer between 1 and 90"},
				{Field: "type", Detail: "must be one of full, files, database"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := tc.in.Normalize()
			checkFields(t, err, tc.wantErr)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Normalize (-want +got):\n%s", diff)
			}
		})
	}
}

// checkFields compares the field errors of err with want (nil: no error).
func checkFields(t *testing.T, err error, want []FieldError) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("unexpected error %v", err)
		}
		return
	}
	var v *ValidationError
	if !errors.As(err, &v) {
		t.Fatalf("error %v, want a *ValidationError", err)
	}
	if diff := cmp.Diff(want, v.Fields); diff != "" {
		t.Errorf("field errors (-want +got):\n%s", diff)
	}
}
