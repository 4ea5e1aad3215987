package input_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/chomhq/chom/ingress/input"
)

// A handler decodes the body, then normalises it; each step has its own error
// type, which the ingress maps to an HTTP status and problem+json.
func ExampleDecodeJSON() {
	r := httptest.NewRequest(http.MethodPost, "/api/v1/sites",
		strings.NewReader(`{"domain":"München.de.","site_type":"wordpress"}`))
	r.Header.Set("Content-Type", "application/json")

	var req input.CreateSiteRequest
	if err := input.DecodeJSON(r, &req); err != nil {
		var de *input.DecodeError
		if errors.As(err, &de) {
			fmt.Println(de.Status, de.Field, de.Detail)
		}
		return
	}
	req, err := req.Normalize()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%+v\n", req)
	// Output:
	// {Domain:xn--mnchen-3ya.de Aliases:[] SiteType:wordpress PHPVersion:8.3 HTTPS: HSTS:false}
}

func ExampleDecodeJSON_unknownField() {
	r := httptest.NewRequest(http.MethodPost, "/api/v1/sites",
		strings.NewReader(`{"domain":"example.com","site_type":"html","tenant_id":"other"}`))
	r.Header.Set("Content-Type", "application/json")

	var req input.CreateSiteRequest
	err := input.DecodeJSON(r, &req)
	var de *input.DecodeError
	if errors.As(err, &de) {
		fmt.Println(de.Status, de.Field, de.Detail)
	}
	// Output:
	// 422 tenant_id is not a known field
}

// A body with an unknown member, a repeated one and an invalid value gets one
// answer naming all three: decode, normalise what decoded, then join.
func ExampleJoin() {
	r := httptest.NewRequest(http.MethodPost, "/api/v1/sites",
		strings.NewReader(`{"domain":"a.example","domain":"b.example","site_type":"cobol","owner":"me"}`))
	r.Header.Set("Content-Type", "application/json")

	var raw input.CreateSiteRequest
	decodeErr := input.DecodeJSON(r, &raw)
	_, err := raw.Normalize()
	var ve *input.ValidationError
	if errors.As(input.Join(decodeErr, err), &ve) {
		for _, f := range ve.Fields {
			fmt.Printf("%s: %s\n", f.Field, f.Detail)
		}
	}
	// Output:
	// domain: is given more than once
	// owner: is not a known field
	// site_type: must be one of wordpress, laravel, php, html
}

func ExampleCreateSiteRequest_Normalize() {
	req := input.CreateSiteRequest{Domain: "-shop.example.com", SiteType: "html", PHPVersion: "8.3"}
	_, err := req.Normalize()

	var ve *input.ValidationError
	if errors.As(err, &ve) {
		for _, f := range ve.Fields {
			fmt.Printf("%s: %s\n", f.Field, f.Detail)
		}
	}
	// Output:
	// domain: must be a valid hostname: label "-shop" starts with a hyphen
	// php_version: must be omitted for html sites
}

func ExampleNormalizeDomain() {
	for _, raw := range []string{"Example.COM.", "bücher.example", "a.com;rm -rf /", "localhost"} {
		d, err := input.NormalizeDomain(raw)
		fmt.Printf("%q -> %q %v\n", raw, d, err)
	}
	// Output:
	// "Example.COM." -> "example.com" <nil>
	// "bücher.example" -> "xn--bcher-kva.example" <nil>
	// "a.com;rm -rf /" -> "" must be a valid hostname: character ';' is not allowed
	// "localhost" -> "" must not be a reserved name: localhost is reserved for loopback (RFC 6761)
}

func ExampleRegisterVPSRequest_Normalize() {
	req := input.RegisterVPSRequest{
		Hostname:  "vps1.example.net",
		IPAddress: "2001:DB8::0:1",
		Provider:  "hetzner",
		Region:    "fsn1",
	}
	req, err := req.Normalize()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(req.Hostname, req.IPAddress, *req.SSHPort, req.Allocation, *req.SiteCapacity)
	// Output:
	// vps1.example.net 2001:db8::1 22 shared 50
}

func ExampleParseWait() {
	for _, s := range []string{"10", "2500ms", "45s"} {
		d, err := input.ParseWait(s)
		fmt.Println(d, err)
	}
	// Output:
	// 10s <nil>
	// 2.5s <nil>
	// 0s invalid request: wait must be at most 30s
}
