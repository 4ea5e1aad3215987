package local

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/chomhq/chom/drivers"
)

// TestChallengeHandler: the handler answers what the site's nginx would on
// port 80: a token put for a site, on every name of that site; nothing for a
// token not put, another site's name, a site deprovisioned, a server down.
func TestChallengeHandler(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t)
	h := b.prov.ChallengeHandler()

	get := func(method, host, path string) (int, string) {
		t.Helper()
		r := httptest.NewRequestWithContext(ctx, method, "http://"+host+path, nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		body, _ := io.ReadAll(w.Result().Body)
		return w.Code, string(body)
	}
	path := ChallengePathPrefix + testToken

	// Nothing provisioned yet: the root does not even exist.
	if code, _ := get(http.MethodGet, "a.example.com", path); code != http.StatusNotFound {
		t.Errorf("before any site: %d, want 404", code)
	}

	a := spec(drivers.SiteTypeHTML, "a.example.com")
	a.Aliases = []string{"www.a.example.com"}
	other := spec(drivers.SiteTypeHTML, "b.example.com")
	other.Server.ID = "vps_2"
	for _, s := range []drivers.SiteSpec{a, other} {
		if _, err := b.prov.Provision(ctx, s, nil); err != nil {
			t.Fatal(err)
		}
	}
	if code, _ := get(http.MethodGet, "a.example.com", path); code != http.StatusNotFound {
		t.Errorf("token not put: %d, want 404", code)
	}
	if err := b.prov.PutChallenge(ctx, a, testToken, testKeyAuth); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, method, host, path string
		code                     int
		body                     string
	}{
		{"the domain", http.MethodGet, "a.example.com", path, 200, testKeyAuth},
		{"an alias, with a port, upper case", http.MethodGet, "WWW.A.example.com:5002", path, 200, testKeyAuth},
		{"HEAD", http.MethodHead, "a.example.com", path, 200, ""},
		{"another site's name", http.MethodGet, "b.example.com", path, 404, ""},
		{"a name no site has", http.MethodGet, "c.example.com", path, 404, ""},
		{"an IP address", http.MethodGet, "127.0.0.1:5002", path, 404, ""},
		{"another token", http.MethodGet, "a.example.com", ChallengePathPrefix + "AAAAAAAAAAAAAAAAAAAAAAAA", 404, ""},
		{"a malformed token", http.MethodGet, "a.example.com", ChallengePathPrefix + "..", 404, ""},
		{"a path below the token", http.MethodGet, "a.example.com", path + "/x", 404, ""},
		{"another path", http.MethodGet, "a.example.com", "/index.html", 404, ""},
		{"POST", http.MethodPost, "a.example.com", path, 405, ""},
	}
	for _, c := range cases {
		code, body := get(c.method, c.host, c.path)
		if code != c.code || (c.code == 200 && body != c.body) {
			t.Errorf("%s: %d %q, want %d %q", c.name, code, body, c.code, c.body)
		}
	}

	// A server down answers nothing; back up, it answers again.
	down := filepath.Join(b.root, a.Server.ID, DownMarker)
	if err := os.WriteFile(down, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(http.MethodGet, "a.example.com", path); code != http.StatusServiceUnavailable {
		t.Errorf("server down: %d, want 503", code)
	}
	if err := os.Remove(down); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(http.MethodGet, "a.example.com", path); code != http.StatusOK {
		t.Errorf("server back up: %d, want 200", code)
	}

	// Removed token, then deprovisioned site: nothing.
	if err := b.prov.RemoveChallenge(ctx, a, testToken); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(http.MethodGet, "a.example.com", path); code != http.StatusNotFound {
		t.Errorf("token removed: %d, want 404", code)
	}
	if err := b.prov.PutChallenge(ctx, a, testToken, testKeyAuth); err != nil {
		t.Fatal(err)
	}
	if err := b.prov.Deprovision(ctx, a); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(http.MethodGet, "www.a.example.com", path); code != http.StatusNotFound {
		t.Errorf("site deprovisioned: %d, want 404", code)
	}
}
