package testenv_test

import (
	"encoding/json"
	"testing"

	"github.com/chomhq/chom/internal/testenv"
)

// TestPebble checks the kit's Pebble serves its ACME directory over TLS the
// client trusts (with the ARI endpoint) and hands out its issuing root, and
// that it comes back after Stop/Start.
func TestPebble(t *testing.T) {
	dns := testenv.StartChallTestSrv(t)
	p := testenv.StartPebble(t, dns, testenv.PebbleOptions{DomainBlocklist: []string{"blocked.test"}})
	dir := func() map[string]any {
		resp, err := p.HTTPClient().Get(p.DirectoryURL)
		if err != nil {
			t.Fatalf("GET directory: %v", err)
		}
		defer resp.Body.Close()
		var d map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
			t.Fatalf("decode directory: %v", err)
		}
		return d
	}
	if d := dir(); d["newOrder"] == nil || d["renewalInfo"] == nil {
		t.Fatalf("directory = %v; want newOrder and renewalInfo", d)
	}
	if p.Roots(t) == nil {
		t.Fatal("no roots")
	}
	p.Stop(t)
	if _, err := p.HTTPClient().Get(p.DirectoryURL); err == nil {
		t.Fatal("directory answers after Stop")
	}
	p.Start(t)
	if d := dir(); d["newOrder"] == nil {
		t.Fatalf("directory after Start = %v", d)
	}
}
