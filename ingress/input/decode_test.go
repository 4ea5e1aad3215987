package input

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

// decodeOutcome is what a test compares: the status, field and a fragment of
// the detail of a *DecodeError, or Status 0 for success.
type decodeOutcome struct {
	Status int
	Field  string
	Detail string // substring of DecodeError.Detail
}

func outcome(t *testing.T, err error) decodeOutcome {
	t.Helper()
	if err == nil {
		return decodeOutcome{}
	}
	de, ok := errors.AsType[*DecodeError](err)
	if !ok {
		t.Fatalf("error is %T (%v), want *DecodeError", err, err)
	}
	return decodeOutcome{Status: de.Status, Field: de.Field, Detail: de.Detail}
}

func jsonRequest(body, contentType string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/api/v1/sites", strings.NewReader(body))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	return r
}

// objectOfSize returns a valid CreateSiteRequest body of exactly n bytes,
// padded with whitespace inside the object.
func objectOfSize(t *testing.T, n int) string {
	t.Helper()
	const base = `{"domain":"example.com","site_type":"html"}`
	if n < len(base) {
		t.Fatalf("size %d too small", n)
	}
	s := base[:len(base)-1] + strings.Repeat(" ", n-len(base)) + "}"
	if len(s) != n {
		t.Fatalf("built %d bytes, want %d", len(s), n)
	}
	return s
}

func TestDecodeJSON(t *testing.T) {
	t.Parallel()

	const ok = `{"domain":"example.com","site_type":"php","php_version":"8.2"}`
	tests := []struct {
		name string
		body string
		ct   string
		want decodeOutcome
		req  CreateSiteRequest
	}{
		{name: "valid", body: ok, ct: "application/json", req: CreateSiteRequest{Domain: "example.com", SiteType: "php", PHPVersion: "8.2"}},
		{name: "charset param", body: ok, ct: "application/json; charset=utf-8", req: CreateSiteRequest{Domain: "example.com", SiteType: "php", PHPVersion: "8.2"}},
		{name: "charset upper case", body: ok, ct: "Application/JSON; charset=UTF-8", req: CreateSiteRequest{Domain: "example.com", SiteType: "php", PHPVersion: "8.2"}},
		{name: "suffix json", body: ok, ct: "application/vnd.chom+json", req: CreateSiteRequest{Domain: "example.com", SiteType: "php", PHPVersion: "8.2"}},
		{name: "surrounding whitespace", body: "\r\n\t " + ok + " \n", ct: "application/json", req: CreateSiteRequest{Domain: "example.com", SiteType: "php", PHPVersion: "8.2"}},
		{name: "escaped key matches", body: `{"dom\u0061in":"a.com"}`, ct: "application/json", req: CreateSiteRequest{Domain: "a.com"}},
		{name: "null member leaves zero value", body: `{"domain":null}`, ct: "application/json"},

		{name: "no content type", body: ok, want: decodeOutcome{Status: 415, Detail: "application/json"}},
		{name: "text plain", body: ok, ct: "text/plain", want: decodeOutcome{Status: 415}},
		{name: "form", body: ok, ct: "application/x-www-form-urlencoded", want: decodeOutcome{Status: 415}},
		{name: "bare +json", body: ok, ct: "application/+json", want: decodeOutcome{Status: 415}},
		{name: "text +json", body: ok, ct: "text/foo+json", want: decodeOutcome{Status: 415}},
		{name: "latin1", body: ok, ct: "application/json; charset=iso-8859-1", want: decodeOutcome{Status: 415, Detail: "utf-8"}},
		{name: "unparsable content type", body: ok, ct: "application/json; =", want: decodeOutcome{Status: 415}},

		{name: "empty body", body: "", ct: "application/json", want: decodeOutcome{Status: 400, Detail: "must not be empty"}},
		{name: "whitespace body", body: " \n\t", ct: "application/json", want: decodeOutcome{Status: 400, Detail: "must not be empty"}},
		{name: "array", body: `[{"domain":"a.com"}]`, ct: "application/json", want: decodeOutcome{Status: 400, Detail: "JSON object"}},
		{name: "string", body: `"a.com"`, ct: "application/json", want: decodeOutcome{Status: 400, Detail: "JSON object"}},
		{name: "null", body: `null`, ct: "application/json", want: decodeOutcome{Status: 400, Detail: "JSON object"}},
		{name: "bom", body: "\ufeff" + ok, ct: "application/json", want: decodeOutcome{Status: 400, Detail: "JSON object"}},
		{name: "syntax error", body: `{"domain" "a.com"}`, ct: "application/json", want: decodeOutcome{Status: 400, Detail: "byte offset 10"}},
		{name: "trailing comma", body: `{"domain":"a.com",}`, ct: "application/json", want: decodeOutcome{Status: 400, Detail: "malformed JSON at byte offset"}},
		{name: "truncated", body: `{"domain":"a.com"`, ct: "application/json", want: decodeOutcome{Status: 400, Detail: "unexpected end"}},
		{name: "truncated string", body: `{"domain":"a.c`, ct: "application/json", want: decodeOutcome{Status: 400, Detail: "unexpected end"}},
		{name: "trailing object", body: ok + `{}`, ct: "application/json", want: decodeOutcome{Status: 400, Detail: "single JSON object"}},
		{name: "trailing garbage", body: ok + `x`, ct: "application/json", want: decodeOutcome{Status: 400, Detail: "single JSON object"}},
		{name: "trailing brace", body: ok + `}`, ct: "application/json", want: decodeOutcome{Status: 400, Detail: "single JSON object"}},
		{name: "syntax error beats unknown field", body: `{"x":1,"domain":}`, ct: "application/json", want: decodeOutcome{Status: 400, Detail: "malformed JSON"}},

		{name: "unknown field", body: `{"domain":"a.com","tenant_id":"t1"}`, ct: "application/json", want: decodeOutcome{Status: 422, Field: "tenant_id", Detail: "not a known field"}},
		{name: "field case must match", body: `{"Domain":"a.com"}`, ct: "application/json", want: decodeOutcome{Status: 422, Field: "Domain", Detail: "not a known field"}},
		{name: "duplicate field", body: `{"domain":"a.com","domain":"evil.com"}`, ct: "application/json", want: decodeOutcome{Status: 422, Field: "domain", Detail: "more than once"}},
		{name: "number for string", body: `{"domain":1}`, ct: "application/json", want: decodeOutcome{Status: 422, Field: "domain", Detail: "must be a string"}},
		{name: "object for string", body: `{"site_type":{}}`, ct: "application/json", want: decodeOutcome{Status: 422, Field: "site_type", Detail: "must be a string"}},
		{name: "bool for string", body: `{"php_version":true}`, ct: "application/json", want: decodeOutcome{Status: 422, Field: "php_version", Detail: "must be a string"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got CreateSiteRequest
			err := DecodeJSON(jsonRequest(tt.body, tt.ct), &got)
			o := outcome(t, err)
			if tt.want.Detail != "" && !strings.Contains(o.Detail, tt.want.Detail) {
				t.Errorf("detail %q does not contain %q", o.Detail, tt.want.Detail)
			}
			o.Detail = tt.want.Detail
			if diff := cmp.Diff(tt.want, o); diff != "" {
				t.Errorf("DecodeJSON outcome (-want +got):\n%s\nerr: %v", diff, err)
			}
			if err == nil {
				if diff := cmp.Diff(tt.req, got); diff != "" {
					t.Errorf("decoded (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestDecodeJSONTypeErrors(t *testing.T) {
	t.Parallel()

	tests := []struct {
		body string
		want decodeOutcome
	}{
		{`{"ssh_port":"22"}`, decodeOutcome{Status: 422, Field: "ssh_port", Detail: "must be an integer"}},
		{`{"ssh_port":22.5}`, decodeOutcome{Status: 422, Field: "ssh_port", Detail: "must be an integer"}},
		{`{"ssh_port":1e40}`, decodeOutcome{Status: 422, Field: "ssh_port", Detail: "must be an integer"}},
		{`{"site_capacity":[1]}`, decodeOutcome{Status: 422, Field: "site_capacity", Detail: "must be an integer"}},
		{`{"hostname":["a"]}`, decodeOutcome{Status: 422, Field: "hostname", Detail: "must be a string"}},
		{`{"ssh_port":2222}`, decodeOutcome{}},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			t.Parallel()
			var got RegisterVPSRequest
			o := outcome(t, DecodeJSONReader(strings.NewReader(tt.body), "application/json", &got))
			if diff := cmp.Diff(tt.want, o); diff != "" {
				t.Errorf("outcome (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDecodeJSONSizeLimit checks the exact boundary, with a truthful, absent
// and lying Content-Length.
func TestDecodeJSONSizeLimit(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name          string
		size          int
		contentLength int64 // -1: unknown; 0: set from the body
		want          int
	}{
		{name: "exactly max", size: MaxBodyBytes, want: 0},
		{name: "exactly max, unknown length", size: MaxBodyBytes, contentLength: -1, want: 0},
		{name: "max+1", size: MaxBodyBytes + 1, want: 413},
		{name: "max+1, unknown length", size: MaxBodyBytes + 1, contentLength: -1, want: 413},
		{name: "max+1, lying length", size: MaxBodyBytes + 1, contentLength: 100, want: 413},
		{name: "1 MiB, lying length", size: 1 << 20, contentLength: 100, want: 413},
		{name: "announced too large", size: 100, contentLength: MaxBodyBytes + 1, want: 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := jsonRequest(objectOfSize(t, tt.size), "application/json")
			if tt.contentLength != 0 {
				r.ContentLength = tt.contentLength
			}
			var got CreateSiteRequest
			o := outcome(t, DecodeJSON(r, &got))
			if o.Status != tt.want {
				t.Fatalf("status = %d (%s), want %d", o.Status, o.Detail, tt.want)
			}
			if tt.want == 0 && got.Domain != "example.com" {
				t.Errorf("domain = %q", got.Domain)
			}
		})
	}
}

func TestDecodeJSONReaderErrors(t *testing.T) {
	t.Parallel()

	t.Run("read error", func(t *testing.T) {
		t.Parallel()
		cause := errors.New("connection reset")
		err := DecodeJSONReader(iotest.ErrReader(cause), "application/json", &CreateSiteRequest{})
		if diff := cmp.Diff(decodeOutcome{Status: 400, Detail: "request body could not be read"}, outcome(t, err)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		if !errors.Is(err, cause) {
			t.Errorf("error %v does not wrap the read error", err)
		}
	})
	t.Run("max bytes reader", func(t *testing.T) {
		t.Parallel()
		body := http.MaxBytesReader(httptest.NewRecorder(), io.NopCloser(strings.NewReader(objectOfSize(t, 200))), 100)
		o := outcome(t, DecodeJSONReader(body, "application/json", &CreateSiteRequest{}))
		if o.Status != 413 {
			t.Errorf("status = %d, want 413", o.Status)
		}
	})
	t.Run("nil body", func(t *testing.T) {
		t.Parallel()
		r := jsonRequest("", "application/json")
		r.Body = nil
		o := outcome(t, DecodeJSON(r, &CreateSiteRequest{}))
		if o.Status != 400 {
			t.Errorf("status = %d, want 400", o.Status)
		}
	})
	t.Run("non-pointer destination is a programming error", func(t *testing.T) {
		t.Parallel()
		err := DecodeJSONReader(strings.NewReader(`{}`), "application/json", CreateSiteRequest{})
		if _, ok := errors.AsType[*DecodeError](err); ok || err == nil {
			t.Errorf("err = %#v, want a non-DecodeError", err)
		}
	})
	t.Run("map destination", func(t *testing.T) {
		t.Parallel()
		var m map[string]any
		if err := DecodeJSONReader(strings.NewReader(`{"a":1}`), "application/json", &m); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(map[string]any{"a": 1.0}, m); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
}

func TestDecodeErrorMessage(t *testing.T) {
	t.Parallel()

	tests := []struct {
		err  *DecodeError
		want string
	}{
		{&DecodeError{Status: 422, Field: "domain", Detail: "must be a string"}, "decode request (422 Unprocessable Entity): domain must be a string"},
		{&DecodeError{Status: 413, Detail: "request body must be at most 65536 bytes"}, "decode request (413 Request Entity Too Large): request body must be at most 65536 bytes"},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, tt.err.Error()); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	}
}

func TestValidationError(t *testing.T) {
	t.Parallel()

	var v ValidationError
	if err := v.Err(); err != nil {
		t.Fatalf("empty Err() = %v, want nil", err)
	}
	var nilV *ValidationError
	if err := nilV.Err(); err != nil {
		t.Fatalf("nil Err() = %v, want nil", err)
	}
	v.Add("domain", "is required")
	v.Add("site_type", "must be one of a, b")
	err := v.Err()
	if err == nil {
		t.Fatal("Err() = nil with two fields")
	}
	if diff := cmp.Diff("invalid request: domain is required; site_type must be one of a, b", err.Error()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func BenchmarkDecodeCreateSite(b *testing.B) {
	body := []byte(`{"domain":"example.com","site_type":"wordpress","php_version":"8.3"}`)
	b.ReportAllocs()
	for b.Loop() {
		var req CreateSiteRequest
		if err := DecodeJSONReader(bytes.NewReader(body), "application/json", &req); err != nil {
			b.Fatal(err)
		}
		if _, err := req.Normalize(); err != nil {
			b.Fatal(err)
		}
	}
}
