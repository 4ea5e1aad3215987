package input

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func intp(n int) *int { return &n }

func TestRegisterVPSRequestNormalize(t *testing.T) {
	t.Parallel()

	valid := func(mod func(*RegisterVPSRequest)) RegisterVPSRequest {
		r := RegisterVPSRequest{Hostname: "vps1.example.net", IPAddress: "203.0.113.10", Provider: "hetzner", Region: "fsn1"}
		if mod != nil {
			mod(&r)
		}
		return r
	}
	tests := []struct {
		name    string
		in      RegisterVPSRequest
		want    RegisterVPSRequest
		wantErr []FieldError
	}{
		{
			name: "defaults",
			in:   valid(nil),
			want: RegisterVPSRequest{Hostname: "vps1.example.net", IPAddress: "203.0.113.10", SSHPort: intp(22), Provider: "hetzner", Region: "fsn1", Allocation: "shared", SiteCapacity: intp(50)},
		},
		{
			name: "dedicated with everything set",
			in: RegisterVPSRequest{Hostname: "VPS2.Example.NET.", IPAddress: "2001:DB8:0:0::1", SSHPort: intp(2222), Provider: "do", Region: "ams-3",
				Allocation: "dedicated", TenantID: "acme_corp", SiteCapacity: intp(10000)},
			want: RegisterVPSRequest{Hostname: "vps2.example.net", IPAddress: "2001:db8::1", SSHPort: intp(2222), Provider: "do", Region: "ams-3",
				Allocation: "dedicated", TenantID: "acme_corp", SiteCapacity: intp(10000)},
		},
		{
			name: "ipv4-mapped becomes ipv4",
			in:   valid(func(r *RegisterVPSRequest) { r.IPAddress = "::ffff:198.51.100.7" }),
			want: RegisterVPSRequest{Hostname: "vps1.example.net", IPAddress: "198.51.100.7", SSHPort: intp(22), Provider: "hetzner", Region: "fsn1", Allocation: "shared", SiteCapacity: intp(50)},
		},
		{
			name: "bounds accepted",
			in:   valid(func(r *RegisterVPSRequest) { r.SSHPort = intp(65535); r.SiteCapacity = intp(1) }),
			want: RegisterVPSRequest{Hostname: "vps1.example.net", IPAddress: "203.0.113.10", SSHPort: intp(65535), Provider: "hetzner", Region: "fsn1", Allocation: "shared", SiteCapacity: intp(1)},
		},
		{
			name: "empty",
			in:   RegisterVPSRequest{},
			wantErr: []FieldError{
				{"hostname", "is required"},
				{"ip_address", "is required"},
				{"provider", "is required"},
				{"region", "is required"},
			},
		},
		{
			name: "zero ints are not absent",
			in:   valid(func(r *RegisterVPSRequest) { r.SSHPort = intp(0); r.SiteCapacity = intp(0) }),
			wantErr: []FieldError{
				{"ssh_port", "must be between 1 and 65535"},
				{"site_capacity", "must be between 1 and 10000"},
			},
		},
		{
			name: "ints too large",
			in:   valid(func(r *RegisterVPSRequest) { r.SSHPort = intp(65536); r.SiteCapacity = intp(10001) }),
			wantErr: []FieldError{
				{"ssh_port", "must be between 1 and 65535"},
				{"site_capacity", "must be between 1 and 10000"},
			},
		},
		{
			name:    "negative port",
			in:      valid(func(r *RegisterVPSRequest) { r.SSHPort = intp(-22) }),
			wantErr: []FieldError{{"ssh_port", "must be between 1 and 65535"}},
		},
		{
			name:    "single-label hostname",
			in:      valid(func(r *RegisterVPSRequest) { r.Hostname = "vps1" }),
			wantErr: []FieldError{{"hostname", "must be a fully qualified domain name such as example.com"}},
		},
		{
			name:    "hostname is an IP",
			in:      valid(func(r *RegisterVPSRequest) { r.Hostname = "203.0.113.10" }),
			wantErr: []FieldError{{"hostname", "must be a domain name, not an IP address"}},
		},
		{
			name: "slugs",
			in:   valid(func(r *RegisterVPSRequest) { r.Provider = "Hetzner"; r.Region = "-fsn1" }),
			wantErr: []FieldError{
				{"provider", "must be 1 to 32 lower-case letters, digits or hyphens, starting with a letter or digit"},
				{"region", "must be 1 to 32 lower-case letters, digits or hyphens, starting with a letter or digit"},
			},
		},
		{
			name:    "region too long",
			in:      valid(func(r *RegisterVPSRequest) { r.Region = strings.Repeat("r", 33) }),
			wantErr: []FieldError{{"region", "must be 1 to 32 lower-case letters, digits or hyphens, starting with a letter or digit"}},
		},
		{
			name:    "unknown allocation",
			in:      valid(func(r *RegisterVPSRequest) { r.Allocation = "Shared" }),
			wantErr: []FieldError{{"allocation", "must be one of shared, dedicated"}},
		},
		{
			name:    "dedicated needs tenant",
			in:      valid(func(r *RegisterVPSRequest) { r.Allocation = "dedicated" }),
			wantErr: []FieldError{{"tenant_id", "is required for dedicated allocation"}},
		},
		{
			name:    "shared forbids tenant",
			in:      valid(func(r *RegisterVPSRequest) { r.TenantID = "acme" }),
			wantErr: []FieldError{{"tenant_id", "must be omitted for shared allocation"}},
		},
		{
			name:    "bad tenant id",
			in:      valid(func(r *RegisterVPSRequest) { r.Allocation = "dedicated"; r.TenantID = "Acme-Corp" }),
			wantErr: []FieldError{{"tenant_id", "must be 1 to 64 lower-case letters, digits or underscores"}},
		},
		{
			name:    "tenant id too long",
			in:      valid(func(r *RegisterVPSRequest) { r.Allocation = "dedicated"; r.TenantID = strings.Repeat("t", 65) }),
			wantErr: []FieldError{{"tenant_id", "must be 1 to 64 lower-case letters, digits or underscores"}},
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
				if diff := cmp.Diff(RegisterVPSRequest{}, got); diff != "" {
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
			if err != nil {
				t.Fatalf("second Normalize() error: %v", err)
			}
			if diff := cmp.Diff(got, again); diff != "" {
				t.Errorf("Normalize is not idempotent (-first +second):\n%s", diff)
			}
		})
	}
}

func TestRegisterVPSRequestIPAddress(t *testing.T) {
	t.Parallel()

	tests := []struct {
		in, want, wantErr string
	}{
		{in: "192.0.2.1", want: "192.0.2.1"},
		{in: "127.0.0.1", want: "127.0.0.1"},
		{in: "10.0.0.5", want: "10.0.0.5"},
		{in: "2001:0db8:0000:0000:0000:0000:0000:0001", want: "2001:db8::1"},
		{in: "::ffff:192.0.2.1", want: "192.0.2.1"},
		{in: "0.0.0.0", wantErr: "must not be the unspecified address"},
		{in: "::", wantErr: "must not be the unspecified address"},
		{in: "224.0.0.1", wantErr: "must not be a multicast address"},
		{in: "ff02::1", wantErr: "must not be a multicast address"},
		{in: "255.255.255.255", wantErr: "must not be the broadcast address"},
		{in: "fe80::1%eth0", wantErr: "must not have an IPv6 zone"},
		{in: "192.0.2.1 ", wantErr: "must be an IPv4 or IPv6 address"},
		{in: "010.0.0.1", wantErr: "must be an IPv4 or IPv6 address"},
		{in: "192.0.2.1:22", wantErr: "must be an IPv4 or IPv6 address"},
		{in: "[2001:db8::1]", wantErr: "must be an IPv4 or IPv6 address"},
		{in: "example.com", wantErr: "must be an IPv4 or IPv6 address"},
		{in: "192.0.2.0/24", wantErr: "must be an IPv4 or IPv6 address"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			req := RegisterVPSRequest{Hostname: "vps.example.com", IPAddress: tt.in, Provider: "p", Region: "r"}
			got, err := req.Normalize()
			if tt.wantErr != "" {
				ve, ok := errors.AsType[*ValidationError](err)
				if !ok {
					t.Fatalf("error = %v, want *ValidationError", err)
				}
				if diff := cmp.Diff([]FieldError{{"ip_address", tt.wantErr}}, ve.Fields); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.IPAddress != tt.want {
				t.Errorf("ip_address = %q, want %q", got.IPAddress, tt.want)
			}
		})
	}
}
