package input

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func FuzzNormalizeDomain(f *testing.F) {
	for _, s := range []string{
		"example.com", "Example.COM.", "münchen.de", "xn--mnchen-3ya.de", "例え.テスト",
		"пример.рф", "faß.de", "\u05d0\u05d1.\u05d2\u05d3", "a\u200db.com",
		"-a.com", "a..com", "a.com.", "localhost", "a.local", "127.0.0.1", "[::1]",
		"a.com;touch /tmp/x", "$(id).com", "../", "a.com\nserver_name x", "a.com/",
		"a.com:80", "user@a.com", "%2e%2e", "a\x00.com", "a.com ", "*.a.com", "_a.com",
		"xn--a.com", "xn--ls8h.la", "ab--cd.com", "a.0x7f", "a.123", "\u212Aa.com",
		strings.Repeat("a", 63) + ".com", strings.Repeat("a.", 126) + "co",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := NormalizeDomain(raw)
		if err != nil {
			if got != "" {
				t.Fatalf("NormalizeDomain(%q) = %q with error %v", raw, got, err)
			}
			return
		}
		if len(got) > 253 {
			t.Fatalf("NormalizeDomain(%q) = %q, %d bytes", raw, got, len(got))
		}
		for i := 0; i < len(got); i++ {
			if c := got[i]; !isLDH(c) && c != '.' {
				t.Fatalf("NormalizeDomain(%q) = %q, contains %q", raw, got, c)
			}
		}
		again, err := NormalizeDomain(got)
		if err != nil {
			t.Fatalf("NormalizeDomain(%q) = %q, which does not re-normalise: %v", raw, got, err)
		}
		if again != got {
			t.Fatalf("NormalizeDomain(%q) = %q, re-normalises to %q", raw, got, again)
		}
	})
}

func FuzzDecodeCreateSite(f *testing.F) {
	for _, s := range []struct{ body, ct string }{
		{`{"domain":"example.com","site_type":"wordpress"}`, "application/json"},
		{`{"domain":"münchen.de","site_type":"php","php_version":"8.2"}`, "application/json; charset=utf-8"},
		{`{"domain":"a.com","site_type":"html","php_version":"8.3"}`, "application/json"},
		{`{"domain":"a.com","site_type":"html"} {}`, "application/json"},
		{`{"domain":"a.com","domain":"b.com","site_type":"html"}`, "application/json"},
		{`{"Domain":"a.com"}`, "application/json"},
		{`{"domain":1}`, "application/json"},
		{`{"domain":"a.com",}`, "application/json"},
		{`{"x":{"y":[1,2,{"z":null}]}}`, "application/json"},
		{`[]`, "application/json"},
		{``, "application/json"},
		{`{"domain":"a.com"}`, "text/plain"},
		{`{"domain":"a.com"}`, "application/problem+json"},
		{"{\"domain\":\"a.com\\nserver_name x\",\"site_type\":\"php\"}", "application/json"},
		{"{\"domain\":\"\xff\",\"site_type\":\"php\"}", "application/json"},
	} {
		f.Add([]byte(s.body), s.ct)
	}
	f.Fuzz(func(t *testing.T, body []byte, ct string) {
		var req CreateSiteRequest
		err := DecodeJSONReader(bytes.NewReader(body), ct, &req)
		if err != nil {
			de, ok := err.(*DecodeError)
			if !ok {
				t.Fatalf("DecodeJSONReader error is %T: %v", err, err)
			}
			switch de.Status {
			case 400, 413, 415, 422:
			default:
				t.Fatalf("DecodeJSONReader status %d: %v", de.Status, err)
			}
			return
		}
		got, err := req.Normalize()
		if err != nil {
			ve, ok := err.(*ValidationError)
			if !ok {
				t.Fatalf("Normalize error is %T: %v", err, err)
			}
			if len(ve.Fields) == 0 {
				t.Fatal("ValidationError without fields")
			}
			return
		}
		if d, err := NormalizeDomain(got.Domain); err != nil || d != got.Domain {
			t.Fatalf("domain %q is not canonical: %q, %v", got.Domain, d, err)
		}
		if !slices.Contains(SiteTypes, got.SiteType) {
			t.Fatalf("site_type %q accepted", got.SiteType)
		}
		if got.SiteType == SiteTypeHTML {
			if got.PHPVersion != "" {
				t.Fatalf("html site with php_version %q", got.PHPVersion)
			}
		} else if !slices.Contains(PHPVersions, got.PHPVersion) {
			t.Fatalf("php_version %q accepted for %s", got.PHPVersion, got.SiteType)
		}
	})
}
