package ingress

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Config.PublicURL is checked at start-up, every problem at once with the
// other fields'.
func TestConfigValidatePublicURL(t *testing.T) {
	t.Parallel()

	tests := []struct {
		raw     string
		want    string // normalised, when valid
		problem string // substring of the error, when invalid
	}{
		{raw: "https://api.example.com", want: "https://api.example.com"},
		{raw: "https://api.example.com/", want: "https://api.example.com"},
		{raw: "http://127.0.0.1:8080", want: "http://127.0.0.1:8080"},
		{raw: "https://example.com/chom/", want: "https://example.com/chom"},
		{raw: "https://[2001:db8::1]:8443/a/b", want: "https://[2001:db8::1]:8443/a/b"},
		{raw: "api.example.com", problem: "absolute http or https URL"},
		{raw: "/chom", problem: "absolute http or https URL"},
		{raw: "ftp://api.example.com", problem: "absolute http or https URL"},
		{raw: "https://", problem: "must name a host"},
		{raw: "https:///chom", problem: "must name a host"},
		{raw: "https:api.example.com", problem: "must name a host"},
		{raw: "https://user:pw@api.example.com", problem: "user info"},
		{raw: "https://api.example.com/?a=1", problem: "query or fragment"},
		{raw: "https://api.example.com?", problem: "query or fragment"},
		{raw: "https://api.example.com/#top", problem: "query or fragment"},
		{raw: "https://api.example.com#", problem: "query or fragment"},
		{raw: "https://api.example.com/%zz", problem: "invalid URL escape"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			t.Parallel()
			got, err := ParsePublicURL(tt.raw)
			verr := Config{PublicURL: tt.raw}.Validate() // Store etc. missing too
			if tt.problem == "" {
				if err != nil {
					t.Fatalf("ParsePublicURL(%q) = %v", tt.raw, err)
				}
				if got != tt.want {
					t.Errorf("ParsePublicURL(%q) = %q, want %q", tt.raw, got, tt.want)
				}
				if strings.Contains(verr.Error(), "PublicURL") {
					t.Errorf("Validate names a valid PublicURL: %v", verr)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.problem) {
				t.Fatalf("ParsePublicURL(%q) = %q, %v; want an error containing %q", tt.raw, got, err, tt.problem)
			}
			if !strings.Contains(verr.Error(), "PublicURL") || !strings.Contains(verr.Error(), "Store is required") {
				t.Errorf("Validate = %v; want the PublicURL problem with the others", verr)
			}
		})
	}
}

// A download link starts with PublicURL (its path prefix included) when set,
// else with the request's own scheme and host; X-Forwarded-* never counts.
func TestDownloadLinkBase(t *testing.T) {
	t.Parallel()

	const id = "bak_0123456789abcdef0123456789abcdef"
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	routes, err := newBackupRoutes(BackupConfig{SigningKey: []byte("k"), LinkTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	query := "/api/v1/backups/" + id + "/archive?expires=" + "1796378460" + "&sig=" + routes.sign(id, now.Add(time.Minute).Unix())

	plain := httptest.NewRequest(http.MethodGet, "/api/v1/backups/"+id+"/download", nil)
	plain.Host = "chom.internal:8080"
	plain.Header.Set("X-Forwarded-Proto", "https")
	plain.Header.Set("X-Forwarded-Host", "evil.example")
	overTLS := plain.Clone(context.Background())
	overTLS.TLS = &tls.ConnectionState{}
	noHost := plain.Clone(context.WithValue(context.Background(), http.LocalAddrContextKey,
		&net.TCPAddr{IP: net.ParseIP("::1"), Port: 8443}))
	noHost.Host = ""

	tests := []struct {
		name      string
		publicURL string
		r         *http.Request
		want      string
	}{
		{"public URL with a path prefix", "https://example.com/chom/", plain, "https://example.com/chom" + query},
		{"public URL wins over TLS and Host", "http://api.example.com", overTLS, "http://api.example.com" + query},
		{"request over plain HTTP", "", plain, "http://chom.internal:8080" + query},
		{"request over TLS", "", overTLS, "https://chom.internal:8080" + query},
		{"request without Host", "", noHost, "http://[::1]:8443" + query},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := &API{backups: routes, now: func() time.Time { return now }}
			if tt.publicURL != "" {
				base, err := ParsePublicURL(tt.publicURL)
				if err != nil {
					t.Fatal(err)
				}
				a.publicURL = base
			}
			got := a.downloadLink(tt.r, id)
			want := DownloadLink{URL: tt.want, ExpiresAt: now.Add(time.Minute)}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("downloadLink (-want +got):\n%s", diff)
			}
		})
	}
}
