package integration

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/models"
)

// The admin API issues, lists and revokes a tenant's tokens: the secret is
// shown once, at creation; a listing shows no secret and no hash; a new token
// expires after CHOM_TOKEN_DEFAULT_TTL unless ttl_seconds says otherwise; its
// use is recorded in last_used_at, at most once a minute; a revoked token is
// refused at once by the ingress that revoked it; only admin tokens reach
// these routes; bad input names every field and creates nothing.
func TestTokenLifecycleAPI(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true, env: map[string]string{"CHOM_TOKEN_DEFAULT_TTL": "1h"}})

		// Created with the default lifetime; the secret is in the answer.
		before := time.Now()
		r := s.do("POST", "/api/v1/tenants/tenant-a/tokens", s.admin, map[string]any{"name": "ci", "scopes": []string{"write", "read"}})
		if r.status != http.StatusCreated || r.header.Get("Cache-Control") != "no-store" {
			t.Fatalf("create: %d %v %s", r.status, r.header, r.body)
		}
		var created ingress.CreatedToken
		r.json(t, &created)
		if !models.WellFormedToken(created.Token) || created.TenantID != s.tenantA || !slices.Equal(created.Scopes, []string{"read", "write"}) ||
			created.RevokedAt != nil || created.LastUsedAt != nil || !strings.HasPrefix(created.Token, created.Prefix) {
			t.Fatalf("created %+v", created)
		}
		if created.ExpiresAt == nil || created.ExpiresAt.Before(before.Add(time.Hour-2*time.Second)) || created.ExpiresAt.After(time.Now().Add(time.Hour)) {
			t.Errorf("expires_at %v, want an hour after %v (CHOM_TOKEN_DEFAULT_TTL)", created.ExpiresAt, before)
		}
		// ttl_seconds 0: never expires; by tenant ID as well as by name.
		r = s.do("POST", "/api/v1/tenants/"+s.tenantA+"/tokens", s.admin, map[string]any{"name": "forever", "scopes": []string{"read"}, "ttl_seconds": 0})
		var forever ingress.CreatedToken
		r.json(t, &forever)
		if r.status != http.StatusCreated || forever.ExpiresAt != nil {
			t.Errorf("ttl_seconds 0: %d %s", r.status, r.body)
		}

		// The token works, and its use is recorded once within a minute.
		if r := s.do("GET", "/api/v1/sites", created.Token, nil); r.status != http.StatusOK {
			t.Fatalf("new token: %d %s", r.status, r.body)
		}
		first := s.lastUsed(created.ID)
		if first == nil || first.Before(before.Add(-time.Second)) {
			t.Fatalf("last_used_at = %v after a request", first)
		}
		time.Sleep(10 * time.Millisecond)
		if r := s.do("GET", "/api/v1/sites", created.Token, nil); r.status != http.StatusOK {
			t.Fatalf("new token again: %d %s", r.status, r.body)
		}
		if again := s.lastUsed(created.ID); again == nil || !again.Equal(*first) {
			t.Errorf("last_used_at rewritten within a minute: %v then %v", first, again)
		}

		// The listing: the tenant's tokens, no secret, no hash.
		r = s.do("GET", "/api/v1/tenants/tenant-a/tokens", s.admin, nil)
		if r.status != http.StatusOK {
			t.Fatalf("list: %d %s", r.status, r.body)
		}
		for _, secret := range []string{created.Token, forever.Token, s.tokenA} {
			for _, leak := range []string{secret[len(created.Prefix):], models.HashToken(secret)} {
				if strings.Contains(string(r.body), leak) {
					t.Errorf("the listing shows a secret or a hash: %s", r.body)
				}
			}
		}
		var page ingress.Page[ingress.TokenView]
		r.json(t, &page)
		var ids []string
		for _, v := range page.Data {
			ids = append(ids, v.ID)
			if v.TenantID != s.tenantA {
				t.Errorf("tenant-a's listing holds %+v", v)
			}
		}
		if len(ids) != 3 || ids[0] != forever.ID || ids[1] != created.ID {
			t.Errorf("listing %v, want the two new tokens (newest first) and the test's", ids)
		}
		if page.Data[1].LastUsedAt == nil {
			t.Errorf("listing lacks last_used_at: %+v", page.Data[1])
		}
		r = s.do("GET", "/api/v1/tenants/tenant-a/tokens?limit=1", s.admin, nil)
		r.json(t, &page)
		if len(page.Data) != 1 || page.NextCursor != forever.ID {
			t.Errorf("page of 1: %s", r.body)
		}

		// Only admin tokens; an unknown tenant is a 404.
		for _, tok := range []string{s.tokenA, created.Token} {
			for _, req := range [][2]string{{"POST", "/api/v1/tenants/tenant-a/tokens"}, {"GET", "/api/v1/tenants/tenant-a/tokens"}, {"DELETE", "/api/v1/tokens/" + created.ID}} {
				if r := s.do(req[0], req[1], tok, map[string]any{"name": "x", "scopes": []string{"admin"}}); r.status != http.StatusForbidden {
					t.Errorf("%s %s with a write token: %d", req[0], req[1], r.status)
				}
			}
		}
		if r := s.do("GET", "/api/v1/tenants/nobody/tokens", s.admin, nil); r.status != http.StatusNotFound {
			t.Errorf("unknown tenant: %d", r.status)
		}

		// Bad input: every field named, nothing created.
		n := s.count("api_tokens", "")
		r = s.do("POST", "/api/v1/tenants/tenant-a/tokens", s.admin, map[string]any{"name": "", "scopes": []string{"root"}, "ttl_seconds": -1})
		var p ingress.Problem
		r.json(t, &p)
		var fields []string
		for _, f := range p.Errors {
			fields = append(fields, f.Field)
		}
		if r.status != http.StatusUnprocessableEntity || !slices.Equal(fields, []string{"name", "scopes", "ttl_seconds"}) {
			t.Errorf("bad input: %d %s", r.status, r.body)
		}
		if got := s.count("api_tokens", ""); got != n {
			t.Errorf("bad input changed api_tokens: %d rows, then %d", n, got)
		}

		// Revoked: refused at once here, shown as revoked, repeatable.
		for range 2 {
			r = s.do("DELETE", "/api/v1/tokens/"+created.ID, s.admin, nil)
			var v ingress.TokenView
			r.json(t, &v)
			if r.status != http.StatusOK || v.RevokedAt == nil {
				t.Fatalf("revoke: %d %s", r.status, r.body)
			}
		}
		if r := s.do("GET", "/api/v1/sites", created.Token, nil); r.status != http.StatusUnauthorized {
			t.Errorf("revoked token: %d, want 401", r.status)
		}
		if r := s.do("GET", "/api/v1/sites", forever.Token, nil); r.status != http.StatusOK {
			t.Errorf("another token of the tenant after the revocation: %d", r.status)
		}
		if r := s.do("DELETE", "/api/v1/tokens/"+models.NewID(models.PrefixToken), s.admin, nil); r.status != http.StatusNotFound {
			t.Errorf("revoke of an unknown token: %d", r.status)
		}
	})
}

// lastUsed reads a token's last_used_at.
func (s *stack) lastUsed(id string) *time.Time {
	s.t.Helper()
	tok, err := s.store.GetToken(context.Background(), id)
	if err != nil {
		s.t.Fatal(err)
	}
	return tok.LastUsedAt
}

// A token revoked elsewhere (the CLI, another ingress) keeps working here for
// at most CHOM_TOKEN_CACHE_TTL after this ingress last looked it up, then is
// refused.
func TestRevokedTokenFailsWithinCacheTTL(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		const ttl = 2 * time.Second
		s := newStack(t, db, stackOpts{noWorker: true, tokenTTL: ttl})
		tok, _ := s.issue("tenant-c", models.ScopeRead)
		rec, err := s.store.LookupToken(context.Background(), models.HashToken(tok))
		if err != nil {
			t.Fatal(err)
		}
		if r := s.do("GET", "/api/v1/sites", tok, nil); r.status != http.StatusOK {
			t.Fatalf("before the revocation: %d", r.status)
		}
		cachedBy := time.Now() // the lookup was cached before this
		if _, err := s.store.RevokeTokenByID(context.Background(), rec.ID); err != nil {
			t.Fatal(err)
		}
		// Still cached: the documented window, not an immediate refusal.
		if r := s.do("GET", "/api/v1/sites", tok, nil); r.status != http.StatusOK && time.Since(cachedBy) < ttl {
			t.Errorf("within the cache TTL: %d, want the cached 200", r.status)
		}
		time.Sleep(time.Until(cachedBy.Add(ttl)))
		for i := range 3 {
			if r := s.do("GET", "/api/v1/sites", tok, nil); r.status != http.StatusUnauthorized {
				t.Errorf("request %d after the cache TTL: %d, want 401", i, r.status)
			}
		}
	})
}
