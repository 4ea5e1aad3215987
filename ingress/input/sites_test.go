package input

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCreateSiteRequestNormalize(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		in      CreateSiteRequest
		want    CreateSiteRequest
		wantErr []FieldError
	}{
		{
			name: "wordpress defaults php",
			in:   CreateSiteRequest{Domain: "Blog.Example.com.", SiteType: "wordpress"},
			want: CreateSiteRequest{Domain: "blog.example.com", SiteType: "wordpress", PHPVersion: DefaultPHPVersion},
		},
		{
			name: "laravel keeps php",
			in:   CreateSiteRequest{Domain: "app.example.com", SiteType: "laravel", PHPVersion: "8.4"},
			want: CreateSiteRequest{Domain: "app.example.com", SiteType: "laravel", PHPVersion: "8.4"},
		},
		{
			name: "php 8.1",
			in:   CreateSiteRequest{Domain: "münchen.de", SiteType: "php", PHPVersion: "8.1"},
			want: CreateSiteRequest{Domain: "xn--mnchen-3ya.de", SiteType: "php", PHPVersion: "8.1"},
		},
		{
			name: "html has no php",
			in:   CreateSiteRequest{Domain: "static.example.org", SiteType: "html"},
			want: CreateSiteRequest{Domain: "static.example.org", SiteType: "html"},
		},
		{
			name: "https auto is the default and canonically omitted",
			in:   CreateSiteRequest{Domain: "a.example", SiteType: "html", HTTPS: "auto", HSTS: true},
			want: CreateSiteRequest{Domain: "a.example", SiteType: "html", HSTS: true},
		},
		{
			name: "https off",
			in:   CreateSiteRequest{Domain: "a.example", SiteType: "html", HTTPS: "off"},
			want: CreateSiteRequest{Domain: "a.example", SiteType: "html", HTTPS: "off"},
		},
		{
			name:    "https is case-sensitive",
			in:      CreateSiteRequest{Domain: "a.example", SiteType: "html", HTTPS: "Auto"},
			wantErr: []FieldError{{"https", "must be one of auto, off"}},
		},
		{
			name:    "https unknown, with another bad field",
			in:      CreateSiteRequest{Domain: "a.example", SiteType: "drupal", HTTPS: "on"},
			wantErr: []FieldError{{"site_type", "must be one of wordpress, laravel, php, html"}, {"https", "must be one of auto, off"}},
		},
		{
			name:    "empty",
			in:      CreateSiteRequest{},
			wantErr: []FieldError{{"domain", "is required"}, {"site_type", "is required"}},
		},
		{
			name:    "html with php",
			in:      CreateSiteRequest{Domain: "a.com", SiteType: "html", PHPVersion: "8.3"},
			wantErr: []FieldError{{"php_version", "must be omitted for html sites"}},
		},
		{
			name:    "unknown type",
			in:      CreateSiteRequest{Domain: "a.com", SiteType: "drupal"},
			wantErr: []FieldError{{"site_type", "must be one of wordpress, laravel, php, html"}},
		},
		{
			name:    "type is case-sensitive",
			in:      CreateSiteRequest{Domain: "a.com", SiteType: "WordPress"},
			wantErr: []FieldError{{"site_type", "must be one of wordpress, laravel, php, html"}},
		},
		{
			name:    "unsupported php",
			in:      CreateSiteRequest{Domain: "a.com", SiteType: "php", PHPVersion: "7.4"},
			wantErr: []FieldError{{"php_version", "must be one of 8.1, 8.2, 8.3, 8.4"}},
		},
		{
			name: "every field wrong",
			in:   CreateSiteRequest{Domain: "-a.com", SiteType: "cms", PHPVersion: "8"},
			wantErr: []FieldError{
				{"domain", `must be a valid hostname: label "-a" starts with a hyphen`},
				{"site_type", "must be one of wordpress, laravel, php, html"},
				{"php_version", "must be one of 8.1, 8.2, 8.3, 8.4"},
			},
		},
		{
			name: "aliases normalised",
			in:   CreateSiteRequest{Domain: "a.com", Aliases: []string{"WWW.a.com.", "münchen.de"}, SiteType: "html"},
			want: CreateSiteRequest{Domain: "a.com", Aliases: []string{"www.a.com", "xn--mnchen-3ya.de"}, SiteType: "html"},
		},
		{
			name: "every bad alias named",
			in:   CreateSiteRequest{Domain: "a.com", Aliases: []string{"www.a.com", "", "A.com", "x;rm.com", "WWW.a.com", "127.0.0.1"}, SiteType: "html"},
			wantErr: []FieldError{
				{"aliases[1]", "is required"},
				{"aliases[2]", "duplicates domain"},
				{"aliases[3]", `must be a valid hostname: character ';' is not allowed`},
				{"aliases[4]", "duplicates aliases[0]"},
				{"aliases[5]", "must be a domain name, not an IP address"},
			},
		},
		{
			name:    "too many aliases",
			in:      CreateSiteRequest{Domain: "a.com", Aliases: make([]string, MaxAliases+1), SiteType: "html"},
			wantErr: []FieldError{{"aliases", "must have at most 20 entries"}},
		},
		{
			name:    "hostile domain",
			in:      CreateSiteRequest{Domain: "a.com\nserver_name x", SiteType: "html"},
			wantErr: []FieldError{{"domain", "must not contain whitespace or control characters"}},
		},
		{
			name:    "missing type with php",
			in:      CreateSiteRequest{Domain: "a.com", PHPVersion: "8.3"},
			wantErr: []FieldError{{"site_type", "is required"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.in.Normalize()
			if tt.wantErr != nil {
				ve, ok := errors.AsType[*ValidationError](err)
				if !ok {
					t.Fatalf("Normalize() error = %v (%T), want *ValidationError", err, err)
				}
				if diff := cmp.Diff(tt.wantErr, ve.Fields); diff != "" {
					t.Errorf("fields (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(CreateSiteRequest{}, got); diff != "" {
					t.Errorf("request on error is not zero (-want +got):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatalf("Normalize() error: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Normalize() (-want +got):\n%s", diff)
			}
			again, err := got.Normalize()
			if err != nil || !cmp.Equal(again, got) {
				t.Errorf("Normalize is not idempotent: %+v, %v", again, err)
			}
		})
	}
}
