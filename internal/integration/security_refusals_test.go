package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// unpinnedProbe is a health probe whose every server is refused as a strict
// SSH worker refuses a server with no pinned host key.
type unpinnedProbe struct{}

func (unpinnedProbe) Probe(_ context.Context, t drivers.HealthTarget) (drivers.HealthReport, error) {
	return drivers.HealthReport{}, fmt.Errorf("ssh: probe %s: %w", t.Server.ID, drivers.ErrHostKeyUnpinned)
}

// The security monitoring counts what the host-key and quota policies refuse:
// a health check refused for its host key and a site refused by a quota each
// move chom_security_refusals_total, and the check says why the server is
// unhealthy.
func TestSecurityRefusalsAreCounted(t *testing.T) {
	t.Parallel()
	s := newStack(t, testenv.Postgres(t), stackOpts{healthProbe: unpinnedProbe{}})
	refusals := func(reason string) string {
		res, err := http.Get(s.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		prefix := `chom_security_refusals_total{reason="` + reason + `"} `
		for _, l := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(l, prefix); ok {
				return v
			}
		}
		return "absent"
	}
	if got := refusals("host_key_mismatch"); got != "0" {
		t.Fatalf("before any check: %s, want 0", got)
	}
	op := accepted(t, s.do("POST", "/api/v1/vps/"+s.vpsID+"/health-check", s.admin, nil))
	if done := s.waitOp(s.admin, op.ID); done.Status != models.OpSucceeded {
		t.Fatalf("health check operation %s: %+v", done.Status, done.Error)
	}
	v, err := s.store.GetVPS(t.Context(), s.vpsID)
	if err != nil || v.HealthReason != "host key not pinned" {
		t.Errorf("health reason %q (%v), want host key not pinned", v.HealthReason, err)
	}
	if got := refusals("host_key_mismatch"); got != "1" {
		t.Errorf("after a refused check: %s, want 1", got)
	}

	if r := s.do("PUT", "/api/v1/tenants/tenant-a/quota", s.admin, map[string]any{"max_sites": 1}); r.status != http.StatusOK {
		t.Fatalf("PUT quota: %d %s", r.status, r.body)
	}
	s.createSite(s.tokenA, "first.quota.example", "html")
	if r := s.do("POST", "/api/v1/sites", s.tokenA, map[string]string{"domain": "second.quota.example", "site_type": "html"}); r.status != http.StatusForbidden {
		t.Fatalf("over quota: %d %s", r.status, r.body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for refusals("quota") != "1" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := refusals("quota"); got != "1" {
		t.Errorf("after a quota refusal: %s, want 1", got)
	}
}
