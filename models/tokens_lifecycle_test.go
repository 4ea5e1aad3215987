package models_test

import (
	"errors"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// TouchToken writes last_used_at at most once per TokenTouchInterval, so a
// busy token costs one write a minute; concurrent touches write once.
func TestTouchTokenOncePerInterval(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s := setup(t, db)
		_, tok, err := s.CreateToken(ctx, models.NewTokenParams{TenantID: tenant(t, s, "acme"), Name: "ci", Scopes: []string{models.ScopeRead}})
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
		for _, tc := range []struct {
			at, want time.Time
		}{
			{t0, t0},                       // first use
			{t0.Add(59 * time.Second), t0}, // within the interval: no write
			{t0.Add(time.Minute), t0.Add(time.Minute)},      // a minute later: written
			{t0.Add(30 * time.Second), t0.Add(time.Minute)}, // never goes back
		} {
			if err := s.TouchToken(ctx, tok.ID, tc.at); err != nil {
				t.Fatal(err)
			}
			got, err := s.GetToken(ctx, tok.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.LastUsedAt == nil || !got.LastUsedAt.Equal(tc.want) {
				t.Errorf("touch at %v: last_used_at %v, want %v", tc.at, got.LastUsedAt, tc.want)
			}
		}
	})
}

// ListTokens lists one tenant's tokens or all, newest first, paged;
// RevokeTokenByID revokes any tenant's token once and keeps the first time;
// FindTenant finds a tenant by ID or name.
func TestListAndRevokeTokens(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, clk := setupClock(t, db)
		a, b := tenant(t, s, "alpha"), tenant(t, s, "beta")
		var ids []string
		for _, ten := range []string{a, b, a} {
			_, tok, err := s.CreateToken(ctx, models.NewTokenParams{TenantID: ten, Name: "n", Scopes: []string{models.ScopeRead}})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, tok.ID)
		}
		list := func(f models.TokenFilter) []string {
			t.Helper()
			got, err := s.ListTokens(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, tok := range got {
				out = append(out, tok.ID)
			}
			return out
		}
		if got := list(models.TokenFilter{TenantID: a}); len(got) != 2 || got[0] != ids[2] || got[1] != ids[0] {
			t.Errorf("alpha's tokens %v, want %v newest first", got, []string{ids[2], ids[0]})
		}
		if got := list(models.TokenFilter{}); len(got) != 3 {
			t.Errorf("all tokens %v", got)
		}
		if got := list(models.TokenFilter{TenantID: a, Cursor: ids[2], Limit: 1}); len(got) != 1 || got[0] != ids[0] {
			t.Errorf("second page %v", got)
		}

		first, err := s.RevokeTokenByID(ctx, ids[1])
		if err != nil || first.RevokedAt == nil || first.TenantID != b {
			t.Fatalf("revoke beta's token: %+v %v", first, err)
		}
		clk.Advance(time.Hour)
		again, err := s.RevokeTokenByID(ctx, ids[1])
		if err != nil || again.RevokedAt == nil || !again.RevokedAt.Equal(*first.RevokedAt) {
			t.Errorf("second revoke: %+v %v, want the first revocation time kept", again, err)
		}
		if _, err := s.RevokeTokenByID(ctx, models.NewID(models.PrefixToken)); !errors.Is(err, models.ErrNotFound) {
			t.Errorf("unknown token: %v", err)
		}

		for _, ref := range []string{"alpha", a} {
			if ten, err := s.FindTenant(ctx, ref); err != nil || ten.ID != a {
				t.Errorf("FindTenant(%q) = %+v, %v", ref, ten, err)
			}
		}
		if _, err := s.FindTenant(ctx, "gamma"); !errors.Is(err, models.ErrNotFound) {
			t.Errorf("FindTenant(gamma): %v", err)
		}
	})
}
