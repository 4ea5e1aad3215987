package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/ingress"
)

// A tenant's site quota holds under concurrent creates through the
// group-committing acceptor: of 40 creates racing for 5 places exactly 5 are
// accepted, the others get 403 quota-exceeded naming the quota and write
// nothing; another tenant is not affected; the quota and usage read back.
func TestSiteQuotaUnderConcurrentCreates(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true})
		r := s.do("PUT", "/api/v1/tenants/tenant-a/quota", s.admin, map[string]any{"max_sites": 5})
		var q ingress.QuotaView
		r.json(t, &q)
		if r.status != http.StatusOK || q.MaxSites != 5 || q.Overrides.MaxSites == nil || q.Overrides.MaxBackups != nil || q.TenantID != s.tenantA {
			t.Fatalf("PUT quota: %d %s", r.status, r.body)
		}
		if r := s.do("PUT", "/api/v1/tenants/tenant-a/quota", s.tokenA, map[string]any{"max_sites": 500}); r.status != http.StatusForbidden {
			t.Errorf("a tenant's write token set its own quota: %d", r.status)
		}
		if r := s.do("PUT", "/api/v1/tenants/tenant-a/quota", s.admin, map[string]any{"max_sites": -1, "max_backups": -2}); r.status != http.StatusUnprocessableEntity ||
			!bytes.Contains(r.body, []byte(`"max_sites"`)) || !bytes.Contains(r.body, []byte(`"max_backups"`)) {
			t.Errorf("negative limits: %d %s", r.status, r.body)
		}
		before := s.snapshot()

		const n = 40
		type result struct {
			status int
			header http.Header
			body   []byte
		}
		results := make([]result, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := fmt.Sprintf(`{"domain":"q%d.quota.example","site_type":"html"}`, i)
				req, _ := http.NewRequest("POST", s.url+"/api/v1/sites", bytes.NewReader([]byte(body)))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+s.tokenA)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				defer res.Body.Close()
				raw, _ := io.ReadAll(res.Body)
				results[i] = result{res.StatusCode, res.Header, raw}
			}()
		}
		wg.Wait()
		accepted := 0
		for _, res := range results {
			checkOpenAPI(t, "POST", "/api/v1/sites", response{status: res.status, header: res.header, body: res.body})
			switch res.status {
			case http.StatusAccepted:
				accepted++
			case http.StatusForbidden:
				var p ingress.Problem
				if err := json.Unmarshal(res.body, &p); err != nil || p.Type != "urn:chom:problem:quota-exceeded" || p.Quota != "sites" || p.Limit != 5 || p.Used != 5 {
					t.Errorf("refusal %s, want quota-exceeded naming sites, limit 5, used 5", res.body)
				}
			default:
				t.Errorf("create: %d %s", res.status, res.body)
			}
		}
		if accepted != 5 {
			t.Errorf("%d of %d concurrent creates accepted, want exactly the quota, 5", accepted, n)
		}
		if got := s.count("sites", "tenant_id = ? AND deleted_at IS NULL", s.tenantA); got != 5 {
			t.Errorf("tenant-a has %d live sites, quota 5", got)
		}
		after := s.snapshot()
		if ops := after[1] - before[1]; ops != 5 {
			t.Errorf("%d operations written, want 5 (refusals write nothing)", ops)
		}

		// Tenant B, without a quota, is not held back by A's.
		for i := range 7 {
			s.createSite(s.tokenB, fmt.Sprintf("b%d.quota.example", i), "html")
		}
		r = s.do("GET", "/api/v1/tenants/tenant-a/quota", s.admin, nil)
		r.json(t, &q)
		if r.status != http.StatusOK || q.Usage.Sites != 5 || q.MaxSites != 5 || q.MaxBackups != 0 {
			t.Errorf("GET quota of tenant-a: %d %s", r.status, r.body)
		}
		r = s.do("GET", "/api/v1/tenants/"+s.tenantB+"/quota", s.admin, nil)
		r.json(t, &q)
		if r.status != http.StatusOK || q.Usage.Sites != 7 || q.MaxSites != 0 || q.Overrides.MaxSites != nil {
			t.Errorf("GET quota of tenant-b: %d %s", r.status, r.body)
		}

		// Raising the limit lets the tenant create again; null restores the
		// default (unlimited here).
		s.do("PUT", "/api/v1/tenants/tenant-a/quota", s.admin, map[string]any{"max_sites": 6})
		s.createSite(s.tokenA, "q-more.quota.example", "html")
		if r := s.do("POST", "/api/v1/sites", s.tokenA, map[string]string{"domain": "q-over.quota.example", "site_type": "html"}); r.status != http.StatusForbidden {
			t.Errorf("over the raised quota: %d %s", r.status, r.body)
		}
		s.do("PUT", "/api/v1/tenants/tenant-a/quota", s.admin, map[string]any{"max_sites": nil})
		s.createSite(s.tokenA, "q-default.quota.example", "html")
	})
}

// CHOM_QUOTA_MAX_SITES is the default of every tenant without its own.
func TestSiteQuotaDefaultFromSettings(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true, env: map[string]string{"CHOM_QUOTA_MAX_SITES": "2"}})
		for _, tok := range []string{s.tokenA, s.tokenB} {
			for i := range 2 {
				s.createSite(tok, fmt.Sprintf("d%d-%s.quota.example", i, tok[5:11]), "html")
			}
			r := s.do("POST", "/api/v1/sites", tok, map[string]string{"domain": "over-" + tok[5:11] + ".quota.example", "site_type": "html"})
			var p ingress.Problem
			r.json(t, &p)
			if r.status != http.StatusForbidden || p.Quota != "sites" || p.Limit != 2 {
				t.Errorf("third site under a default of 2: %d %s", r.status, r.body)
			}
		}
	})
}
