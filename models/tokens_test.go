package models_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

func TestCreateToken(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		ten := tenant(t, s, "acme")

		token, rec, err := s.CreateToken(ctx, models.NewTokenParams{
			TenantID: ten, Name: "ci", Scopes: []string{models.ScopeWrite, models.ScopeRead, models.ScopeWrite},
		})
		if err != nil {
			t.Fatalf("CreateToken: %v", err)
		}
		if !strings.HasPrefix(token, models.TokenPrefix) || !models.WellFormedToken(token) {
			t.Fatalf("token %q is not a well-formed chom_ token", token)
		}
		if rec.TokenHash != models.HashToken(token) {
			t.Errorf("TokenHash = %q, want HashToken(token)", rec.TokenHash)
		}
		if rec.Prefix != token[:len(models.TokenPrefix)+6] {
			t.Errorf("Prefix = %q, want the first 6 characters of the secret after chom_", rec.Prefix)
		}
		if rec.Scopes != "read,write" {
			t.Errorf("Scopes = %q, want sorted and deduplicated %q", rec.Scopes, "read,write")
		}
		if !strings.HasPrefix(rec.ID, models.PrefixToken) || rec.TenantID != ten {
			t.Errorf("ID, TenantID = %q, %q", rec.ID, rec.TenantID)
		}

		// Only the hash is stored: neither the token nor its secret is in any column.
		var rows []map[string]any
		if err := db.NewSelect().Table("api_tokens").Scan(ctx, &rows); err != nil {
			t.Fatalf("read api_tokens: %v", err)
		}
		if len(rows) != 1 {
			t.Fatalf("api_tokens has %d rows, want 1", len(rows))
		}
		secret := strings.TrimPrefix(token, models.TokenPrefix)
		for col, v := range rows[0] {
			var text string
			if b, ok := v.([]byte); ok {
				text = string(b)
			} else {
				text = fmt.Sprint(v)
			}
			if strings.Contains(text, secret) {
				t.Errorf("column %s holds the token's secret", col)
			}
		}
		if got := fmt.Sprint(rows[0]["token_hash"]); got != models.HashToken(token) {
			if b, ok := rows[0]["token_hash"].([]byte); !ok || string(b) != models.HashToken(token) {
				t.Errorf("stored token_hash = %q, want the SHA-256 of the token", got)
			}
		}

		got, err := s.LookupToken(ctx, models.HashToken(token))
		if err != nil {
			t.Fatalf("LookupToken: %v", err)
		}
		if got.ID != rec.ID || got.TenantID != ten || got.Scopes != "read,write" {
			t.Errorf("LookupToken = %+v, want token %s of tenant %s", got, rec.ID, ten)
		}
		if diff := strings.Join(got.ScopeList(), " "); diff != "read write" {
			t.Errorf("ScopeList = %q", diff)
		}
	})
}

func TestCreateTokenRejectsBadScopes(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		s := setup(t, db)
		ten := tenant(t, s, "acme")
		for _, scopes := range [][]string{nil, {}, {"root"}, {models.ScopeRead, "Write"}, {"OPS"}, {"operator"}} {
			if _, _, err := s.CreateToken(t.Context(), models.NewTokenParams{TenantID: ten, Name: "x", Scopes: scopes}); err == nil {
				t.Errorf("CreateToken with scopes %q: no error", scopes)
			}
		}
		if n := count(t, db, "api_tokens", ""); n != 0 {
			t.Errorf("api_tokens has %d rows after rejected requests, want 0", n)
		}
	})
}

func TestLookupTokenNotFound(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// prepare returns the hash to look up, after arranging the token's state.
		prepare func(t *testing.T, s *models.Store, c *clock, ten string) string
	}{
		{"unknown", func(t *testing.T, s *models.Store, c *clock, ten string) string {
			return models.HashToken(models.TokenPrefix + strings.Repeat("a", 52))
		}},
		{"revoked", func(t *testing.T, s *models.Store, c *clock, ten string) string {
			token, rec := newToken(t, s, ten, nil)
			if err := s.RevokeToken(t.Context(), ten, rec.ID); err != nil {
				t.Fatalf("RevokeToken: %v", err)
			}
			return models.HashToken(token)
		}},
		{"expired", func(t *testing.T, s *models.Store, c *clock, ten string) string {
			token, _ := newToken(t, s, ten, ptr(epoch.Add(time.Hour)))
			if _, err := s.LookupToken(t.Context(), models.HashToken(token)); err != nil {
				t.Fatalf("LookupToken before expiry: %v", err)
			}
			c.Advance(time.Hour + time.Second)
			return models.HashToken(token)
		}},
		{"expires exactly now", func(t *testing.T, s *models.Store, c *clock, ten string) string {
			token, _ := newToken(t, s, ten, ptr(epoch.Add(time.Minute)))
			c.Advance(time.Minute)
			return models.HashToken(token)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testenv.Backends(t, func(t *testing.T, db *bun.DB) {
				s, c := setupClock(t, db)
				hash := tc.prepare(t, s, c, tenant(t, s, "acme"))
				tok, err := s.LookupToken(t.Context(), hash)
				if !errors.Is(err, models.ErrNotFound) {
					t.Fatalf("LookupToken = %+v, %v; want ErrNotFound", tok, err)
				}
			})
		})
	}
}

func newToken(t *testing.T, s *models.Store, ten string, expires *time.Time) (string, *models.APIToken) {
	t.Helper()
	token, rec, err := s.CreateToken(t.Context(), models.NewTokenParams{
		TenantID: ten, Name: "t", Scopes: []string{models.ScopeRead}, ExpiresAt: expires,
	})
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	return token, rec
}

func TestRevokeToken(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		acme, other := tenant(t, s, "acme"), tenant(t, s, "other")
		token, rec := newToken(t, s, acme, nil)

		if err := s.RevokeToken(ctx, other, rec.ID); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("RevokeToken by another tenant = %v, want ErrNotFound", err)
		}
		if _, err := s.LookupToken(ctx, models.HashToken(token)); err != nil {
			t.Fatalf("token dead after another tenant's revoke: %v", err)
		}
		if err := s.RevokeToken(ctx, acme, rec.ID); err != nil {
			t.Fatalf("RevokeToken: %v", err)
		}
		if err := s.RevokeToken(ctx, acme, rec.ID); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("second RevokeToken = %v, want ErrNotFound", err)
		}
		if n := count(t, db, "api_tokens", "revoked_at IS NOT NULL"); n != 1 {
			t.Fatalf("%d revoked tokens, want 1", n)
		}
	})
}

func TestScopeAllows(t *testing.T) {
	t.Parallel()
	tests := []struct {
		held []string
		want string
		ok   bool
	}{
		{[]string{"read"}, "read", true},
		{[]string{"read"}, "write", false},
		{[]string{"read"}, "admin", false},
		{[]string{"write"}, "read", true},
		{[]string{"write"}, "write", true},
		{[]string{"write"}, "admin", false},
		{[]string{"admin"}, "read", true},
		{[]string{"admin"}, "write", true},
		{[]string{"admin"}, "admin", true},
		{[]string{"read", "admin"}, "write", true},
		{nil, "read", false},
		{[]string{}, "read", false},
		{[]string{""}, "read", false},
		{[]string{"superuser"}, "read", false},
		{[]string{"Admin"}, "read", false},
		// A scope this package does not know is never granted, so a typo in a
		// route's required scope fails closed.
		{[]string{"read"}, "", false},
		{[]string{"admin"}, "superuser", false},
		{[]string{"superuser"}, "superuser", false},
		// ops stands outside read < write < admin: only ops and admin grant it,
		// and it grants nothing else.
		{[]string{"ops"}, "ops", true},
		{[]string{"admin"}, "ops", true},
		{[]string{"read", "write"}, "ops", false},
		{[]string{"write"}, "ops", false},
		{[]string{"ops"}, "read", false},
		{[]string{"ops"}, "write", false},
		{[]string{"ops"}, "admin", false},
		{[]string{"ops", "read"}, "read", true},
		{[]string{"Ops"}, "ops", false},
		{nil, "ops", false},
	}
	for _, tc := range tests {
		if got := models.ScopeAllows(tc.held, tc.want); got != tc.ok {
			t.Errorf("ScopeAllows(%q, %q) = %v, want %v", tc.held, tc.want, got, tc.ok)
		}
	}
}

func TestWellFormedToken(t *testing.T) {
	t.Parallel()
	secret := strings.Repeat("abcdefghijklmnopqrstuvwxyz234567", 2)[:52]
	tests := []struct {
		name  string
		token string
		ok    bool
	}{
		{"valid", "chom_" + secret, true},
		{"empty", "", false},
		{"prefix only", "chom_", false},
		{"secret without prefix", secret, false},
		{"wrong prefix", "chum_" + secret, false},
		{"upper-case prefix", "CHOM_" + secret, false},
		{"one short", "chom_" + secret[:51], false},
		{"one long", "chom_" + secret + "a", false},
		{"upper case", "chom_" + strings.ToUpper(secret), false},
		{"digit 0", "chom_0" + secret[1:], false},
		{"digit 1", "chom_1" + secret[1:], false},
		{"digit 8", "chom_8" + secret[1:], false},
		{"padding", "chom_" + secret[:51] + "=", false},
		{"space", "chom_" + secret[:51] + " ", false},
		{"newline", "chom_" + secret[:51] + "\n", false},
		{"bearer", "Bearer chom_" + secret[:45], false},
		{"multibyte", "chom_" + secret[:50] + "é", false},
	}
	for _, tc := range tests {
		if got := models.WellFormedToken(tc.token); got != tc.ok {
			t.Errorf("%s: WellFormedToken(%q) = %v, want %v", tc.name, tc.token, got, tc.ok)
		}
	}
}

func TestHashToken(t *testing.T) {
	t.Parallel()
	a, b := models.HashToken("chom_a"), models.HashToken("chom_b")
	if len(a) != 64 || strings.Trim(a, "0123456789abcdef") != "" {
		t.Errorf("HashToken = %q, want 64 lower-case hex digits", a)
	}
	if a == b || a != models.HashToken("chom_a") {
		t.Errorf("HashToken is not a deterministic, distinguishing hash: %q %q", a, b)
	}
}

// An ops token (what `chom token create --scope ops` issues) is stored with that
// scope alone and grants the ops UI, nothing of the API.
func TestCreateTokenOpsScope(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		s := setup(t, db)
		token, rec, err := s.CreateToken(t.Context(), models.NewTokenParams{
			TenantID: tenant(t, s, "platform"), Name: "oncall", Scopes: []string{models.ScopeOps},
		})
		if err != nil {
			t.Fatalf("CreateToken(ops): %v", err)
		}
		got, err := s.LookupToken(t.Context(), models.HashToken(token))
		if err != nil {
			t.Fatalf("LookupToken: %v", err)
		}
		if got.Scopes != "ops" || rec.Scopes != "ops" {
			t.Fatalf("Scopes = %q (returned %q), want %q", got.Scopes, rec.Scopes, "ops")
		}
		held := got.ScopeList()
		if !models.ScopeAllows(held, models.ScopeOps) || models.ScopeAllows(held, models.ScopeRead) {
			t.Errorf("ops token: allows ops %v, read %v; want true, false",
				models.ScopeAllows(held, models.ScopeOps), models.ScopeAllows(held, models.ScopeRead))
		}
	})
}
