package integration

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"

	"github.com/chomhq/chom/ingress/input"
	assembly "github.com/chomhq/chom/internal/stack"
	"github.com/chomhq/chom/internal/stack/stacktest"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// hostKey returns a fresh ed25519 public key in authorized_keys form and its
// SHA-256 fingerprint.
func hostKey(t *testing.T) (string, string) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := gossh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(gossh.MarshalAuthorizedKey(k))), gossh.FingerprintSHA256(k)
}

// A server's SSH host key is pinned at registration (the key as ssh-keyscan
// prints it, or only its fingerprint), its fingerprint is shown by GET
// /vps/{id} and logged, an admin re-pins it after a planned change, and bad
// pins are refused naming the field, changing nothing.
func TestHostKeyPinning(t *testing.T) {
	t.Parallel()
	var buf testenv.SyncBuffer
	log := assembly.NewLogger(&buf, assembly.Config{LogFormat: "json"})
	kit := stacktest.Start(t, stacktest.Options{DB: testenv.Postgres(t), NoWorker: true, Logger: log})
	s := &stack{t: t, kit: kit, db: kit.DB, store: kit.Store, url: kit.URL}
	admin, _ := s.issue("platform", models.ScopeAdmin)
	key, fp := hostKey(t)
	vps := func(host string, extra map[string]any) map[string]any {
		body := map[string]any{"hostname": host, "ip_address": "192.0.2.10", "provider": "hetzner", "region": "fsn1"}
		for k, v := range extra {
			body[k] = v
		}
		return body
	}

	// Pinned at registration, in ssh-keyscan's form (host name first, comment last).
	r := s.do("POST", "/api/v1/vps", admin, vps("pinned.example.com", map[string]any{"host_key": "pinned.example.com " + key + " root@pinned"}))
	if r.status != http.StatusCreated {
		t.Fatalf("register with host_key: %d %s", r.status, r.body)
	}
	var v models.VPSServer
	r.json(t, &v)
	if v.HostKeySHA256 != fp {
		t.Fatalf("host_key_sha256 = %q, want %q", v.HostKeySHA256, fp)
	}
	got, err := s.store.GetVPS(t.Context(), v.ID)
	if err != nil || got.HostKey != key {
		t.Fatalf("stored pin %q (%v), want the key itself %q", got.HostKey, err, key)
	}
	var shown models.VPSServer
	s.do("GET", "/api/v1/vps/"+v.ID, admin, nil).json(t, &shown)
	if shown.HostKeySHA256 != fp || strings.Contains(string(s.do("GET", "/api/v1/vps/"+v.ID, admin, nil).body), "AAAA") {
		t.Errorf("GET /vps/{id}: fingerprint %q, want %q and no key material", shown.HostKeySHA256, fp)
	}
	if !strings.Contains(buf.String(), `"msg":"ssh host key pinned"`) || !strings.Contains(buf.String(), fp) {
		t.Errorf("no log line naming the pinned fingerprint:\n%s", buf.String())
	}

	// Pinned by fingerprint only.
	_, fp2 := hostKey(t)
	r = s.do("POST", "/api/v1/vps", admin, vps("fp.example.com", map[string]any{"host_key_sha256": fp2}))
	if r.status != http.StatusCreated {
		t.Fatalf("register with host_key_sha256: %d %s", r.status, r.body)
	}
	var v2 models.VPSServer
	r.json(t, &v2)
	if v2.HostKeySHA256 != fp2 {
		t.Errorf("fingerprint pin shown as %q, want %q", v2.HostKeySHA256, fp2)
	}

	// A planned key change: the admin re-pins.
	newKey, newFP := hostKey(t)
	r = s.do("PUT", "/api/v1/vps/"+v.ID+"/host-key", admin, map[string]string{"host_key": newKey})
	if r.status != http.StatusOK {
		t.Fatalf("re-pin: %d %s", r.status, r.body)
	}
	r.json(t, &shown)
	if got, _ := s.store.GetVPS(t.Context(), v.ID); shown.HostKeySHA256 != newFP || got.HostKey != newKey {
		t.Errorf("after re-pin: shown %q, stored %q; want %q", shown.HostKeySHA256, got.HostKey, newFP)
	}

	// Bad pins: refused, named, nothing changed.
	before := s.count("vps_servers", "")
	for name, tc := range map[string]struct {
		method, path string
		body         map[string]any
		field        string
	}{
		"not a key":      {"POST", "/api/v1/vps", vps("bad1.example.com", map[string]any{"host_key": "ssh-ed25519 not-base64!"}), "host_key"},
		"short print":    {"POST", "/api/v1/vps", vps("bad2.example.com", map[string]any{"host_key_sha256": "SHA256:abc"}), "host_key_sha256"},
		"both":           {"POST", "/api/v1/vps", vps("bad3.example.com", map[string]any{"host_key": key, "host_key_sha256": fp}), "host_key_sha256"},
		"two lines":      {"POST", "/api/v1/vps", vps("bad4.example.com", map[string]any{"host_key": key + "\n" + newKey}), "host_key"},
		"re-pin nothing": {"PUT", "/api/v1/vps/" + v.ID + "/host-key", map[string]any{}, "host_key"},
		"re-pin bad":     {"PUT", "/api/v1/vps/" + v.ID + "/host-key", map[string]any{"host_key_sha256": "MD5:aa"}, "host_key_sha256"},
		"re-pin extra":   {"PUT", "/api/v1/vps/" + v.ID + "/host-key", map[string]any{"host_key": newKey, "comment": "x"}, "comment"},
	} {
		r := s.do(tc.method, tc.path, admin, tc.body)
		var p struct {
			Errors []input.FieldError `json:"errors"`
		}
		_ = json.Unmarshal(r.body, &p)
		named := false
		for _, e := range p.Errors {
			named = named || e.Field == tc.field
		}
		if r.status != http.StatusUnprocessableEntity || !named {
			t.Errorf("%s: %d %s, want 422 naming %s", name, r.status, r.body, tc.field)
		}
	}
	if after := s.count("vps_servers", ""); after != before {
		t.Errorf("bad pins registered servers: %d → %d", before, after)
	}
	if got, _ := s.store.GetVPS(t.Context(), v.ID); got.HostKey != newKey {
		t.Errorf("a refused re-pin changed the pin to %q", got.HostKey)
	}
	if r := s.do("PUT", "/api/v1/vps/vps_00000000000000000000000000/host-key", admin, map[string]string{"host_key": newKey}); r.status != http.StatusNotFound {
		t.Errorf("re-pin of an unknown server: %d, want 404", r.status)
	}
}
