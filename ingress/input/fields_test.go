package input

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestDecodeJSONNamesEveryField checks that one 422 names every unknown,
// repeated and mistyped member, in body order, and that the request struct
// still holds the members that were fine.
func TestDecodeJSONNamesEveryField(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		body string
		dst  func() any
		want []FieldError
		got  any // dst after decoding, nil: not checked
	}{
		{
			name: "two unknown fields",
			body: `{"domain":"a.com","tenant_id":"t1","owner":"x","site_type":"php"}`,
			dst:  func() any { return &CreateSiteRequest{} },
			want: []FieldError{{"tenant_id", "is not a known field"}, {"owner", "is not a known field"}},
			got:  &CreateSiteRequest{Domain: "a.com", SiteType: "php"},
		},
		{
			name: "unknown, duplicate and mistyped",
			body: `{"x":1,"domain":"a.com","domain":"b.com","site_type":7,"php_version":"8.2"}`,
			dst:  func() any { return &CreateSiteRequest{} },
			want: []FieldError{{"x", "is not a known field"}, {"domain", "is given more than once"}, {"site_type", "must be a string"}},
			got:  &CreateSiteRequest{PHPVersion: "8.2"},
		},
		{
			name: "unknown field given twice is named once",
			body: `{"x":1,"x":2,"domain":"a.com"}`,
			dst:  func() any { return &CreateSiteRequest{} },
			want: []FieldError{{"x", "is not a known field"}},
			got:  &CreateSiteRequest{Domain: "a.com"},
		},
		{
			name: "duplicate given three times is named once",
			body: `{"site_type":"php","site_type":"html","site_type":"php"}`,
			dst:  func() any { return &CreateSiteRequest{} },
			want: []FieldError{{"site_type", "is given more than once"}},
			got:  &CreateSiteRequest{},
		},
		{
			name: "every mistyped member, not only the first",
			body: `{"hostname":["a"],"ip_address":"10.0.0.1","ssh_port":"22","site_capacity":1.5,"provider":true}`,
			dst:  func() any { return &RegisterVPSRequest{} },
			want: []FieldError{{"hostname", "must be a string"}, {"ssh_port", "must be an integer"}, {"site_capacity", "must be an integer"}, {"provider", "must be a string"}},
			got:  &RegisterVPSRequest{IPAddress: "10.0.0.1"},
		},
		{
			name: "mistyped member before an unknown one keeps body order",
			body: `{"keep":"7","frequency":"daily","colour":"red"}`,
			dst:  func() any { return &BackupScheduleRequest{} },
			want: []FieldError{{"keep", "must be an integer"}, {"colour", "is not a known field"}},
			got:  &BackupScheduleRequest{Frequency: "daily"},
		},
		{
			name: "backup request",
			body: `{"type":"full","retention_days":"30","retention_days":"31","at":"now"}`,
			dst:  func() any { return &CreateBackupRequest{} },
			want: []FieldError{{"retention_days", "is given more than once"}, {"at", "is not a known field"}},
			got:  &CreateBackupRequest{Type: "full"},
		},
		{
			name: "duplicate keys in a map destination",
			body: `{"a":1,"a":2}`,
			dst:  func() any { return &map[string]any{} },
			want: []FieldError{{"a", "is given more than once"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dst := tt.dst()
			err := DecodeJSONReader(strings.NewReader(tt.body), "application/json", dst)
			de, ok := errors.AsType[*DecodeError](err)
			if !ok {
				t.Fatalf("err = %v (%T), want a *DecodeError", err, err)
			}
			if de.Status != http.StatusUnprocessableEntity {
				t.Fatalf("status = %d, want 422: %v", de.Status, err)
			}
			if diff := cmp.Diff(tt.want, de.Fields); diff != "" {
				t.Errorf("Fields (-want +got):\n%s", diff)
			}
			if de.Field != tt.want[0].Field || de.Detail != tt.want[0].Detail {
				t.Errorf("Field, Detail = %q, %q; want the first problem %+v", de.Field, de.Detail, tt.want[0])
			}
			if tt.got != nil {
				if diff := cmp.Diff(tt.got, dst); diff != "" {
					t.Errorf("decoded members (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestJoin checks the merge of decode, Normalize and handler outcomes.
func TestJoin(t *testing.T) {
	t.Parallel()

	fatal := &DecodeError{Status: http.StatusBadRequest, Detail: "malformed JSON at byte offset 3"}
	internal := errors.New("database is down")
	decode422 := &DecodeError{Status: http.StatusUnprocessableEntity, Field: "x", Detail: "is not a known field",
		Fields: []FieldError{{"x", "is not a known field"}, {"domain", "must be a string"}}}
	legacy422 := &DecodeError{Status: http.StatusUnprocessableEntity, Field: "y", Detail: "is not a known field"}
	norm := &ValidationError{Fields: []FieldError{
		{"domain", "is required"}, {"site_type", "must be one of a, b"}, {"site_type", "second problem"},
	}}
	handler := &ValidationError{Fields: []FieldError{{"site_type", "is taken"}, {"type", "has no database"}}}

	tests := []struct {
		name string
		errs []error
		want []FieldError // nil with wantErr: the error itself
		same error        // the error Join must return unchanged
	}{
		{name: "all nil", errs: []error{nil, nil}},
		{name: "none"},
		{name: "fatal decode error wins over fields", errs: []error{fatal, norm}, same: fatal},
		{name: "internal error wins over fields", errs: []error{norm, internal}, same: internal},
		{
			name: "decode fields first, a field named by decode is not repeated",
			errs: []error{decode422, norm},
			want: []FieldError{{"x", "is not a known field"}, {"domain", "must be a string"}, {"site_type", "must be one of a, b"}, {"site_type", "second problem"}},
		},
		{
			name: "a later error does not repeat an earlier field",
			errs: []error{nil, norm, handler},
			want: []FieldError{{"domain", "is required"}, {"site_type", "must be one of a, b"}, {"site_type", "second problem"}, {"type", "has no database"}},
		},
		{
			name: "a 422 decode error without Fields",
			errs: []error{legacy422, nil},
			want: []FieldError{{"y", "is not a known field"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := Join(tt.errs...)
			switch {
			case tt.same != nil:
				if err != tt.same {
					t.Fatalf("Join = %v, want %v unchanged", err, tt.same)
				}
			case tt.want == nil:
				if err != nil {
					t.Fatalf("Join = %#v, want nil", err)
				}
			default:
				ve, ok := err.(*ValidationError)
				if !ok {
					t.Fatalf("Join = %v (%T), want a *ValidationError", err, err)
				}
				if diff := cmp.Diff(tt.want, ve.Fields); diff != "" {
					t.Errorf("fields (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestDecodeThenNormalize is the handler's sequence on one body with an
// unknown field, a duplicate key, a mistyped field and an invalid value: all
// four are named, and no field is named twice.
func TestDecodeThenNormalize(t *testing.T) {
	t.Parallel()

	body := `{"hostname":"vps1.example.net","hostname":"vps2.example.net","ip_address":"999.1.1.1",` +
		`"ssh_port":"22","provider":"hetzner","region":"fsn1","colour":"blue"}`
	var raw RegisterVPSRequest
	decodeErr := DecodeJSONReader(strings.NewReader(body), "application/json", &raw)
	_, err := raw.Normalize()
	ve, ok := Join(decodeErr, err).(*ValidationError)
	if !ok {
		t.Fatalf("Join = %v, want a *ValidationError", Join(decodeErr, err))
	}
	want := []FieldError{
		{"hostname", "is given more than once"},
		{"ssh_port", "must be an integer"},
		{"colour", "is not a known field"},
		{"ip_address", "must be an IPv4 or IPv6 address"},
	}
	if diff := cmp.Diff(want, ve.Fields); diff != "" {
		t.Errorf("fields (-want +got):\n%s", diff)
	}
}
