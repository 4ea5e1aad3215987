package drivers_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/chomhq/chom/drivers"
)

func goodSpec() drivers.SiteSpec {
	return drivers.SiteSpec{
		ID:         "site_0193ab45cd67ef0123456789abcdef01",
		TenantID:   "ten_0193ab45cd67ef0123456789abcdef01",
		Domain:     "example.com",
		SiteType:   drivers.SiteTypeWordPress,
		PHPVersion: "8.3",
		Server:     drivers.Server{ID: "vps_0193ab45cd67ef0123456789abcdef01", Hostname: "web-1", IPAddress: "192.0.2.10", SSHPort: 22},
	}
}

func TestValidateSiteSpec(t *testing.T) {
	t.Parallel()

	good := []struct {
		name string
		edit func(*drivers.SiteSpec)
	}{
		{"wordpress", func(*drivers.SiteSpec) {}},
		{"laravel", func(s *drivers.SiteSpec) { s.SiteType, s.PHPVersion = "laravel", "8.4" }},
		{"php", func(s *drivers.SiteSpec) { s.SiteType, s.PHPVersion = "php", "8.1" }},
		{"html", func(s *drivers.SiteSpec) { s.SiteType, s.PHPVersion = "html", "" }},
		{"punycode", func(s *drivers.SiteSpec) { s.Domain = "xn--mnchen-3ya.de" }},
		{"subdomain with hyphen and digits", func(s *drivers.SiteSpec) { s.Domain = "shop-2.eu-west.example.co.uk" }},
		{"63 char label", func(s *drivers.SiteSpec) { s.Domain = strings.Repeat("a", 63) + ".com" }},
		{"253 char name", func(s *drivers.SiteSpec) { s.Domain = longName(253) }},
		{"digits in non-final label", func(s *drivers.SiteSpec) { s.Domain = "1.2.3.example" }},
		{"64 char ids", func(s *drivers.SiteSpec) { s.ID, s.TenantID = strings.Repeat("a", 64), strings.Repeat("_", 64) }},
		{"server fields other than id are not rendered", func(s *drivers.SiteSpec) { s.Server.Hostname = "anything; really" }},
		{"aliases", func(s *drivers.SiteSpec) { s.Aliases = []string{"www.example.com", "example.org"} }},
		{"20 aliases", func(s *drivers.SiteSpec) { s.Aliases = manyAliases(drivers.MaxAliases) }},
	}
	for _, tt := range good {
		t.Run("good/"+tt.name, func(t *testing.T) {
			t.Parallel()
			s := goodSpec()
			tt.edit(&s)
			if err := drivers.ValidateSiteSpec(s); err != nil {
				t.Fatalf("ValidateSiteSpec(%+v) = %v, want nil", s, err)
			}
		})
	}

	bad := []struct {
		name  string
		edit  func(*drivers.SiteSpec)
		field string // must appear in the error message
	}{
		{"shell injection", domain("a.com;touch /tmp/x"), "domain"},
		{"command substitution", domain("$(id).com"), "domain"},
		{"backticks", domain("`id`.com"), "domain"},
		{"parent dir slash", domain("../"), "domain"},
		{"parent dir", domain(".."), "domain"},
		{"path", domain("../etc"), "domain"},
		{"empty label", domain("a..com"), "domain"},
		{"leading dot", domain(".a.com"), "domain"},
		{"trailing dot", domain("a.com."), "domain"},
		{"leading hyphen", domain("-a.com"), "domain"},
		{"trailing hyphen", domain("a-.com"), "domain"},
		{"uppercase", domain("A.COM"), "domain"},
		{"mixed case", domain("Example.com"), "domain"},
		{"loopback ip", domain("127.0.0.1"), "domain"},
		{"ipv4", domain("1.2.3.4"), "domain"},
		{"ipv6", domain("[::1]"), "domain"},
		{"space", domain("exa mple.com"), "domain"},
		{"newline directive", domain("a.com\nserver_name x"), "domain"},
		{"crlf", domain("a.com\r\n"), "domain"},
		{"nul", domain("a.com\x00"), "domain"},
		{"braces", domain("a.com{}"), "domain"},
		{"quote", domain(`a.com"`), "domain"},
		{"underscore", domain("a_b.com"), "domain"},
		{"64 char label", domain(strings.Repeat("a", 64) + ".com"), "domain"},
		{"254 char name", domain(longName(254)), "domain"},
		{"unicode", domain("münchen.de"), "domain"},
		{"fullwidth dot", domain("a\uff0ecom"), "domain"},
		{"single label", domain("localhost"), "domain"},
		{"empty domain", domain(""), "domain"},
		{"empty id", func(s *drivers.SiteSpec) { s.ID = "" }, "id"},
		{"id with dots", func(s *drivers.SiteSpec) { s.ID = "../site" }, "id"},
		{"id uppercase", func(s *drivers.SiteSpec) { s.ID = "SITE_1" }, "id"},
		{"id too long", func(s *drivers.SiteSpec) { s.ID = strings.Repeat("a", 65) }, "id"},
		{"tenant with slash", func(s *drivers.SiteSpec) { s.TenantID = "ten/1" }, "tenant_id"},
		{"tenant empty", func(s *drivers.SiteSpec) { s.TenantID = "" }, "tenant_id"},
		{"server id traversal", func(s *drivers.SiteSpec) { s.Server.ID = ".." }, "server.id"},
		{"server id empty", func(s *drivers.SiteSpec) { s.Server.ID = "" }, "server.id"},
		{"server id hyphen", func(s *drivers.SiteSpec) { s.Server.ID = "vps-1" }, "server.id"},
		{"unknown site type", func(s *drivers.SiteSpec) { s.SiteType = "drupal" }, "site_type"},
		{"site type case", func(s *drivers.SiteSpec) { s.SiteType = "WordPress" }, "site_type"},
		{"missing php version", func(s *drivers.SiteSpec) { s.PHPVersion = "" }, "php_version"},
		{"unknown php version", func(s *drivers.SiteSpec) { s.PHPVersion = "7.4" }, "php_version"},
		{"php version injection", func(s *drivers.SiteSpec) { s.PHPVersion = "8.3;" }, "php_version"},
		{"php version on html", func(s *drivers.SiteSpec) { s.SiteType, s.PHPVersion = "html", "8.3" }, "php_version"},
		{"alias injection", func(s *drivers.SiteSpec) { s.Aliases = []string{"www.example.com", "a.com;\n}\nserver {"} }, "aliases[1]"},
		{"alias wildcard", func(s *drivers.SiteSpec) { s.Aliases = []string{"*.example.com"} }, "aliases[0]"},
		{"alias is the domain", func(s *drivers.SiteSpec) { s.Aliases = []string{"example.com"} }, "aliases[0]"},
		{"alias twice", func(s *drivers.SiteSpec) { s.Aliases = []string{"www.example.com", "www.example.com"} }, "aliases[1]"},
		{"alias empty", func(s *drivers.SiteSpec) { s.Aliases = []string{""} }, "aliases[0]"},
		{"alias ip", func(s *drivers.SiteSpec) { s.Aliases = []string{"10.0.0.1"} }, "aliases[0]"},
		{"21 aliases", func(s *drivers.SiteSpec) { s.Aliases = manyAliases(drivers.MaxAliases + 1) }, "aliases:"},
	}
	for _, tt := range bad {
		t.Run("bad/"+tt.name, func(t *testing.T) {
			t.Parallel()
			s := goodSpec()
			tt.edit(&s)
			err := drivers.ValidateSiteSpec(s)
			if !errors.Is(err, drivers.ErrInvalidSpec) {
				t.Fatalf("ValidateSiteSpec(%+v) = %v, want ErrInvalidSpec", s, err)
			}
			if !strings.Contains(err.Error(), tt.field+" ") {
				t.Errorf("error %q does not name field %q", err, tt.field)
			}
			// The message is for logs: hostile values must come out escaped.
			if strings.ContainsAny(err.Error(), "\n\r\x00") {
				t.Errorf("error %q contains a raw control character", err)
			}
			if tt.field == "domain" {
				if err := drivers.ValidateDomain(s.Domain); !errors.Is(err, drivers.ErrInvalidSpec) {
					t.Errorf("ValidateDomain(%q) = %v, want ErrInvalidSpec", s.Domain, err)
				}
			}
		})
	}
}

// manyAliases returns n distinct aliases of example.com.
func manyAliases(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("a%d.example.com", i))
	}
	return out
}

func TestValidateSiteSpecNamesEveryField(t *testing.T) {
	t.Parallel()

	err := drivers.ValidateSiteSpec(drivers.SiteSpec{Domain: "a.com;touch /tmp/x", SiteType: "x"})
	if !errors.Is(err, drivers.ErrInvalidSpec) {
		t.Fatalf("err = %v, want ErrInvalidSpec", err)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, `drivers: invalid site spec: `) {
		t.Errorf("message %q lacks the sentinel prefix", msg)
	}
	for _, field := range []string{"id ", "tenant_id ", "server.id ", `domain "a.com;touch /tmp/x": `, "site_type "} {
		if !strings.Contains(msg, field) {
			t.Errorf("message %q does not name %q", msg, field)
		}
	}
}

func TestSystemUser(t *testing.T) {
	t.Parallel()

	valid := regexp.MustCompile(`^[a-z_][a-z0-9_-]*$`)
	tests := []struct {
		id   string
		want string // "" means: only check the invariants
	}{
		{id: "site_1", want: "s_site_1"},
		{id: strings.Repeat("a", 29), want: "s_" + strings.Repeat("a", 29)},
		{id: strings.Repeat("a", 30)},
		{id: "site_0193ab45cd67ef0123456789abcdef01"},
		{id: "site_0193ab45cd67ef0123456789abcdef02"},
		{id: strings.Repeat("z", 64)},
		{id: "SITE-1"},
		{id: "../../etc/passwd"},
		{id: ""},
		{id: "münchen"},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		got := drivers.SystemUser(tt.id)
		if tt.want != "" {
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("SystemUser(%q) mismatch (-want +got):\n%s", tt.id, diff)
			}
		}
		if len(got) > 32 || !valid.MatchString(got) {
			t.Errorf("SystemUser(%q) = %q: not a valid POSIX user name of at most 32 characters", tt.id, got)
		}
		if again := drivers.SystemUser(tt.id); again != got {
			t.Errorf("SystemUser(%q) not deterministic: %q then %q", tt.id, got, again)
		}
		if other, ok := seen[got]; ok {
			t.Errorf("SystemUser(%q) = SystemUser(%q) = %q", tt.id, other, got)
		}
		seen[got] = tt.id
	}

	if got := drivers.SystemUser("site_0193ab45cd67ef0123456789abcdef01"); !strings.HasPrefix(got, "s_0193ab45cd67ef012_") || len(got) != 32 {
		t.Errorf("long site ID user = %q, want s_ + 17 readable characters + _ + hash (32 characters)", got)
	}
}

func TestSupportedPHPVersionsIsACopy(t *testing.T) {
	t.Parallel()

	v := drivers.SupportedPHPVersions()
	if diff := cmp.Diff([]string{"8.1", "8.2", "8.3", "8.4"}, v); diff != "" {
		t.Fatalf("SupportedPHPVersions() mismatch (-want +got):\n%s", diff)
	}
	v[0] = "5.6"
	if drivers.SupportedPHPVersions()[0] != "8.1" {
		t.Fatal("changing the returned slice changed the supported versions")
	}
}

func domain(d string) func(*drivers.SiteSpec) {
	return func(s *drivers.SiteSpec) { s.Domain = d }
}

// longName returns a valid-looking hostname of exactly n characters.
func longName(n int) string {
	var labels []string
	for n > 0 {
		l := min(63, n)
		if n-l == 1 { // a trailing 1-character remainder cannot hold a dot and a label
			l--
		}
		labels = append(labels, strings.Repeat("a", l))
		n -= l + 1
	}
	name := strings.Join(labels, ".")
	return name
}

// VerifyReader passes a stream that matches its recorded size and checksum and
// fails one that does not, at EOF, so a Restore that stages first changes nothing.
func TestVerifyReader(t *testing.T) {
	t.Parallel()
	data := []byte("an archive's bytes")
	sum := sha256.Sum256(data)
	good := hex.EncodeToString(sum[:])
	for _, tc := range []struct {
		name    string
		data    []byte
		size    int64
		sum     string
		corrupt bool
	}{
		{"matches", data, int64(len(data)), good, false},
		{"flipped byte", append([]byte("An"), data[2:]...), int64(len(data)), good, true},
		{"truncated", data[:5], int64(len(data)), good, true},
		{"longer than recorded", append(slices.Clone(data), 'x'), int64(len(data)), good, true},
		{"wrong checksum", data, int64(len(data)), strings.Repeat("0", 64), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := io.ReadAll(drivers.VerifyReader(bytes.NewReader(tc.data), tc.size, tc.sum))
			if got := errors.Is(err, drivers.ErrCorruptArchive); got != tc.corrupt {
				t.Errorf("err = %v, want corrupt %v", err, tc.corrupt)
			}
		})
	}
}
