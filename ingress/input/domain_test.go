package input

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNormalizeDomainValid(t *testing.T) {
	t.Parallel()

	tests := []struct {
		in, want string
	}{
		{"example.com", "example.com"},
		{"Example.COM", "example.com"},
		{"example.com.", "example.com"},
		{"www.shop.example.co.uk", "www.shop.example.co.uk"},
		{"a-b.c-d.io", "a-b.c-d.io"},
		{"1.example.com", "1.example.com"},
		{"123.com", "123.com"},
		{"site.test", "site.test"},
		{"blog.internal", "blog.internal"},
		{"münchen.de", "xn--mnchen-3ya.de"},
		{"München.de", "xn--mnchen-3ya.de"},
		{"MüNCHEN.DE", "xn--mnchen-3ya.de"},
		{"xn--mnchen-3ya.de", "xn--mnchen-3ya.de"},
		{"XN--MNCHEN-3YA.DE", "xn--mnchen-3ya.de"},
		{"bücher.example", "xn--bcher-kva.example"},
		{"例え.テスト", "xn--r8jz45g.xn--zckzah"},
		{"пример.рф", "xn--e1afmkfd.xn--p1ai"},
		{"faß.de", "xn--fa-hia.de"}, // IDNA2008: ß is kept, not mapped to "ss"
		{strings.Repeat("a", 63) + ".com", strings.Repeat("a", 63) + ".com"},
		{maxLengthName(), maxLengthName()},
		{maxLengthName() + ".", maxLengthName()},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := NormalizeDomain(tt.in)
			if err != nil {
				t.Fatalf("NormalizeDomain(%q) error: %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("NormalizeDomain(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

// maxLengthName returns a valid name of exactly 253 characters.
func maxLengthName() string {
	l := strings.Repeat("a", 63)
	return l + "." + l + "." + l + "." + strings.Repeat("b", 57) + ".com" // 63*3+57+4+4 = 253
}

func TestNormalizeDomainInvalid(t *testing.T) {
	t.Parallel()

	tests := []struct {
		in   string
		want string // substring of the error text
	}{
		// Shape.
		{"", "must not be empty"},
		{"com", "fully qualified"},
		{"example", "fully qualified"},
		{"a..com", "empty label"},
		{".a.com", "empty label"},
		{"a.com..", "empty label"},
		{".", "empty label"},
		{"-a.com", `must be a valid hostname: label "-a" starts with a hyphen`},
		{"a-.com", `label "a-" ends with a hyphen`},
		{"a.-com", `label "-com" starts with a hyphen`},
		{"ab--cd.com", `"--" in the third and fourth positions`},
		{strings.Repeat("a", 64) + ".com", "longer than 63"},
		{maxLengthName()[:252] + "m.x", "at most 253"},
		{"a." + maxLengthName(), "at most 253"},
		{strings.Repeat("a.", 600) + "com", "at most 253"},
		{"example.c", `top-level label "c" must be at least 2 characters`},
		{"example.123", "all-numeric"},
		{"a.b.0x7f", "not an IP address"},
		{"a.b.0x", "not an IP address"}, // "0x" alone is zero to URL parsers
		// IP literals.
		{"127.0.0.1", "not an IP address"},
		{"127.0.0.1.", "not an IP address"},
		{"10.1", "all-numeric"},
		{"a.b", "at least 2 characters"},
		{"::1", "not an IP address"},
		{"2001:db8::1", "not an IP address"},
		{"[2001:db8::1]", "not an IP address"},
		{"[example.com]", "not an IP address"},
		{"fe80::1%eth0", "not an IP address"},
		{"::ffff:1.2.3.4", "not an IP address"},
		// Characters.
		{"a_b.com", "underscore"},
		{"_dmarc.example.com", "underscore"},
		{"*.example.com", "wildcard"},
		{"a.com;touch /tmp/x", `character ';' is not allowed`},
		{"a.com touch", "whitespace or control"},
		{"a.com;touch", `character ';' is not allowed`},
		{"$(id).com", `character '$' is not allowed`},
		{"`id`.com", "character '`' is not allowed"},
		{"../", "scheme or path"},
		{"..", "empty label"},
		{"a.com\nserver_name x", "whitespace or control"},
		{"a.com\r\n", "whitespace or control"},
		{"a.com/", "scheme or path"},
		{"https://a.com", "port"},
		{"a.com:80", "port"},
		{"user@a.com", "user information"},
		{"%2e%2e", `character '%' is not allowed`},
		{"a.com\x00", "whitespace or control"},
		{"a\x00.com", "whitespace or control"},
		{"a.com ", "whitespace or control"},
		{" a.com", "whitespace or control"},
		{"\ta.com", "whitespace or control"},
		{"a .com", "whitespace or control"},
		{"a.com\u00a0", "whitespace or control"},
		{"a.com\u2028", "whitespace or control"},
		{"a.com\u0085", "whitespace or control"},
		{"a\"b.com", "character '\"' is not allowed"},
		{"a'b.com", `character '\'' is not allowed`},
		{"a{b}.com", "character '{' is not allowed"},
		{"a.com\x7f", "whitespace or control"},
		{"\xff.com", "valid UTF-8"},
		// Reserved names.
		{"localhost", "reserved"},
		{"LOCALHOST.", "reserved"},
		{"app.localhost", "reserved"},
		{"printer.local", "reserved"},
		{"x.invalid", "reserved"},
		// IDNA.
		{"xn--a.com", "not a valid punycode label"},
		{"xn--abc-.com", "ends with a hyphen"},
		{"xn--zz.com", "punycode"},
		{"xn--example-.com", "hyphen"},
		{"xn--ls8h.la", "IDNA2008 does not allow"}, // emoji: IDNA2003 allowed them, IDNA2008 does not
		{"💩.la", `label "\U0001f4a9" contains U+1F4A9`},
		{"a♥.com", "IDNA2008 does not allow"},
		{"ｅｘａｍｐｌｅ.com", "internationalised"},       // full-width letters need mapping
		{"ex\u00adample.com", "internationalised"}, // soft hyphen is "ignored", i.e. mapped
		{"e\u0301xample.com", "internationalised"}, // not NFC
		{"a\u200db.com", "internationalised"},      // ZWJ out of context
		{"a\u3002com", "internationalised"},        // ideographic full stop
		{"ex\u2024ample.com", "internationalised"}, // one dot leader
		{"a.com\ufe52", "internationalised"},
		{"\u05d0\u05d1.1a", "right-to-left"}, // Bidi rule spans labels
		{"a\u0300.com", "internationalised"}, // not NFC
		{"\u0300a.com", "internationalised"}, // leading combining mark
		{"MÜNCHEN.DE", `label "m\u00dcnchen" must be in lower case`},
		{"\u0130stanbul.com", "lower case"},                      // would lower-case to "istanbul", IDNA maps it to "i̇stanbul"
		{"\u212Aa.com", `label "\u212aa" must be in lower case`}, // KELVIN SIGN, not K
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := NormalizeDomain(tt.in)
			if err == nil {
				t.Fatalf("NormalizeDomain(%q) = %q, want error containing %q", tt.in, got, tt.want)
			}
			if got != "" {
				t.Errorf("NormalizeDomain(%q) returned %q with an error", tt.in, got)
			}
			if !errors.Is(err, ErrInvalidDomain) {
				t.Errorf("error %v is not ErrInvalidDomain", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NormalizeDomain(%q) error = %q, want it to contain %q", tt.in, err, tt.want)
			}
			if strings.ContainsAny(err.Error(), "\x00\n\r") {
				t.Errorf("error text %q contains raw control characters", err)
			}
		})
	}
}

func TestNormalizeDomainHugeLabelIsQuotedShort(t *testing.T) {
	t.Parallel()

	_, err := NormalizeDomain("-" + strings.Repeat("a", 500) + ".com")
	if err == nil {
		t.Fatal("want error")
	}
	if len(err.Error()) > 200 {
		t.Errorf("error text is %d bytes long: %q", len(err.Error()), err)
	}
}
