package ingress

import (
	"net/http"
	"strings"
	"testing"
)

// The cross-site rule, header by header: Sec-Fetch-Site first, then Origin
// against the request's Host or PublicURL, then the credential's kind.
func TestCrossSiteReason(t *testing.T) {
	t.Parallel()
	const basic, bearer = "Basic b3A6Y2hvbV94", "Bearer chom_x"
	tests := []struct {
		name, publicURL, host, auth string
		header                      map[string]string
		refused                     string // substring of the reason; "" passes
	}{
		{"same-origin", "", "chom.internal:8080", basic, map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "https://evil.example"}, ""},
		{"typed by the user", "", "chom.internal:8080", basic, map[string]string{"Sec-Fetch-Site": "none"}, ""},
		{"cross-site", "", "chom.internal:8080", bearer, map[string]string{"Sec-Fetch-Site": "cross-site"}, "cross-site"},
		{"same-site", "", "chom.internal:8080", basic, map[string]string{"Sec-Fetch-Site": "same-site"}, "same-site"},
		{"own host", "", "chom.internal:8080", basic, map[string]string{"Origin": "http://chom.internal:8080"}, ""},
		{"own host, case", "", "Chom.Internal:8080", basic, map[string]string{"Origin": "http://chom.internal:8080"}, ""},
		{"other port", "", "chom.internal:8080", basic, map[string]string{"Origin": "http://chom.internal:9090"}, "not this API's"},
		{"public URL behind a proxy", "https://api.example.com/chom", "10.0.0.5:8080", basic, map[string]string{"Origin": "https://api.example.com"}, ""},
		{"public URL, other scheme", "https://api.example.com", "10.0.0.5:8080", basic, map[string]string{"Origin": "http://api.example.com"}, "not this API's"},
		{"public URL, sibling host", "https://api.example.com", "10.0.0.5:8080", basic, map[string]string{"Origin": "https://tenant.example.com"}, "not this API's"},
		{"opaque origin", "", "chom.internal:8080", bearer, map[string]string{"Origin": "null"}, "not this API's"},
		{"basic, no header", "", "chom.internal:8080", basic, nil, "Basic credentials"},
		{"basic in lower case, no header", "", "chom.internal:8080", strings.ToLower(basic), nil, "Basic credentials"},
		{"bearer, no header", "", "chom.internal:8080", bearer, nil, ""},
	}
	for _, tc := range tests {
		a := &API{publicURL: tc.publicURL}
		r, _ := http.NewRequest(http.MethodPost, "http://"+tc.host+"/ops/queues/api/queues/default:pause", nil)
		r.Header.Set("Authorization", tc.auth)
		for k, v := range tc.header {
			r.Header.Set(k, v)
		}
		got := a.crossSiteReason(r)
		if (tc.refused == "") != (got == "") || !strings.Contains(got, tc.refused) {
			t.Errorf("%s: reason %q, want %q", tc.name, got, tc.refused)
		}
	}
}
