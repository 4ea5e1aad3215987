package input

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestValidIdempotencyKey(t *testing.T) {
	t.Parallel()

	tests := []struct {
		key string
		ok  bool
	}{
		{"8e03978e-40d5-43e8-bc93-6894a57f9324", true},
		{`"8e03978e-40d5-43e8-bc93-6894a57f9324"`, true}, // structured-field form, kept verbatim
		{"a", true},
		{"!~", true},
		{strings.Repeat("k", 255), true},
		{"", false},
		{strings.Repeat("k", 256), false},
		{"has space", false},
		{"tab\there", false},
		{"nul\x00", false},
		{"del\x7f", false},
		{"clé", false},
		{"line\nbreak", false},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			t.Parallel()
			err := ValidIdempotencyKey(tt.key)
			if tt.ok {
				if err != nil {
					t.Fatalf("ValidIdempotencyKey(%q) = %v, want nil", tt.key, err)
				}
				return
			}
			ve, ok := errors.AsType[*ValidationError](err)
			if !ok {
				t.Fatalf("ValidIdempotencyKey(%q) = %v, want *ValidationError", tt.key, err)
			}
			want := []FieldError{{"Idempotency-Key", "must be 1 to 255 printable ASCII characters without spaces"}}
			if diff := cmp.Diff(want, ve.Fields); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseWait(t *testing.T) {
	t.Parallel()

	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{in: "", want: 0},
		{in: "0", want: 0},
		{in: "0s", want: 0},
		{in: "10", want: 10 * time.Second},
		{in: "10s", want: 10 * time.Second},
		{in: "1500ms", want: 1500 * time.Millisecond},
		{in: "30", want: 30 * time.Second},
		{in: "30s", want: 30 * time.Second},
		{in: "0.5m", want: 30 * time.Second},
		{in: "31", wantErr: "must be at most 30s"},
		{in: "30.001s", wantErr: "must be at most 30s"},
		{in: "1h", wantErr: "must be at most 30s"},
		{in: "99999999999999999999", wantErr: "must be at most 30s"},
		{in: "9223372036854775807", wantErr: "must be at most 30s"},
		{in: "-1", wantErr: "must not be negative"},
		{in: "-1s", wantErr: "must not be negative"},
		{in: "-9223372036854775808", wantErr: "must not be negative"},
		{in: "-99999999999999999999", wantErr: "must not be negative"},
		{in: "ten", wantErr: "must be a duration such as 10s or a number of seconds"},
		{in: "10 s", wantErr: "must be a duration such as 10s or a number of seconds"},
		{in: " 10", wantErr: "must be a duration such as 10s or a number of seconds"},
		{in: "1.5", wantErr: "must be a duration such as 10s or a number of seconds"},
		{in: "9999999999999h", wantErr: "must be a duration such as 10s or a number of seconds"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseWait(tt.in)
			if tt.wantErr != "" {
				ve, ok := errors.AsType[*ValidationError](err)
				if !ok {
					t.Fatalf("ParseWait(%q) = %v, %v; want *ValidationError", tt.in, got, err)
				}
				if diff := cmp.Diff([]FieldError{{"wait", tt.wantErr}}, ve.Fields); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseWait(%q) error: %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseWait(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}
