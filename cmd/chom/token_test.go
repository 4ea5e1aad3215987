package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chomhq/chom/models"
)

// devDataDir makes a chom dev data directory with a migrated SQLite database
// and returns it with a store over that database.
func devDataDir(t *testing.T) (string, *models.Store) {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	db, err := models.Open(ctx, "sqlite://"+filepath.Join(dir, "chom.db"), models.PoolConfig{MaxOpenConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := models.MigrateUp(ctx, db); err != nil {
		t.Fatal(err)
	}
	store, err := models.New(models.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	return dir, store
}

// chom token create expires its token after CHOM_TOKEN_DEFAULT_TTL (90 days
// unless set; 0 = never) unless --expires names a lifetime (0 = never).
func TestTokenCreateDefaultExpiry(t *testing.T) {
	t.Parallel()
	dir, store := devDataDir(t)
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want time.Duration // 0: never expires
	}{
		{"default", nil, nil, 90 * 24 * time.Hour},
		{"setting", map[string]string{"CHOM_TOKEN_DEFAULT_TTL": "1h"}, nil, time.Hour},
		{"setting never", map[string]string{"CHOM_TOKEN_DEFAULT_TTL": "0"}, nil, 0},
		{"flag", map[string]string{"CHOM_TOKEN_DEFAULT_TTL": "1h"}, []string{"--expires", "720h"}, 720 * time.Hour},
		{"flag never", nil, []string{"--expires", "0"}, 0},
	} {
		var stdout bytes.Buffer
		getenv := func(k string) string { return tc.env[k] }
		args := append([]string{"token", "create", "--tenant", "acme", "--data-dir", dir}, tc.args...)
		before := time.Now()
		if err := run(t.Context(), args, &stdout, &bytes.Buffer{}, getenv); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		tok, err := store.LookupToken(t.Context(), models.HashToken(strings.TrimSpace(stdout.String())))
		if err != nil {
			t.Fatalf("%s: the printed token is not in the database: %v", tc.name, err)
		}
		switch {
		case tc.want == 0 && tok.ExpiresAt != nil:
			t.Errorf("%s: expires at %v, want never", tc.name, tok.ExpiresAt)
		case tc.want != 0 && tok.ExpiresAt == nil:
			t.Errorf("%s: never expires, want after %v", tc.name, tc.want)
		case tc.want != 0 && (tok.ExpiresAt.Before(before.Add(tc.want).Add(-time.Second)) || tok.ExpiresAt.After(time.Now().Add(tc.want))):
			t.Errorf("%s: expires at %v, want %v after %v", tc.name, tok.ExpiresAt, tc.want, before)
		}
	}
}

// chom token list shows every token (or one tenant's) without its secret or
// hash; chom token revoke makes a token unusable, is repeatable, and refuses
// an unknown ID.
func TestTokenListAndRevoke(t *testing.T) {
	t.Parallel()
	dir, store := devDataDir(t)
	noEnv := func(string) string { return "" }
	create := func(tenant string) (string, *models.APIToken) {
		t.Helper()
		var stdout bytes.Buffer
		if err := run(t.Context(), []string{"token", "create", "--tenant", tenant, "--name", "n-" + tenant, "--data-dir", dir}, &stdout, &bytes.Buffer{}, noEnv); err != nil {
			t.Fatal(err)
		}
		secret := strings.TrimSpace(stdout.String())
		tok, err := store.LookupToken(t.Context(), models.HashToken(secret))
		if err != nil {
			t.Fatal(err)
		}
		return secret, tok
	}
	secretA, a := create("alpha")
	secretB, b := create("beta")
	list := func(args ...string) string {
		t.Helper()
		var stdout bytes.Buffer
		if err := run(t.Context(), append([]string{"token", "list", "--data-dir", dir}, args...), &stdout, &bytes.Buffer{}, noEnv); err != nil {
			t.Fatalf("chom token list %q: %v", args, err)
		}
		return stdout.String()
	}
	all := list()
	for _, want := range []string{a.ID, b.ID, a.Prefix, "n-alpha", "active", "LAST USED"} {
		if !strings.Contains(all, want) {
			t.Errorf("chom token list lacks %q:\n%s", want, all)
		}
	}
	for _, secret := range []string{secretA, secretB} {
		for _, leak := range []string{secret, strings.TrimPrefix(secret, models.TokenPrefix)[6:], models.HashToken(secret)} {
			if strings.Contains(all, leak) {
				t.Errorf("chom token list shows a secret or hash %q:\n%s", leak, all)
			}
		}
	}
	if only := list("--tenant", "alpha"); !strings.Contains(only, a.ID) || strings.Contains(only, b.ID) {
		t.Errorf("chom token list --tenant alpha:\n%s", only)
	}
	if err := run(t.Context(), []string{"token", "list", "--tenant", "nobody", "--data-dir", dir}, &bytes.Buffer{}, &bytes.Buffer{}, noEnv); !errors.Is(err, models.ErrNotFound) {
		t.Errorf("list of an unknown tenant: %v, want not found", err)
	}

	for range 2 { // revoking twice is fine
		var stdout bytes.Buffer
		if err := run(t.Context(), []string{"token", "revoke", "--data-dir", dir, a.ID}, &stdout, &bytes.Buffer{}, noEnv); err != nil {
			t.Fatalf("chom token revoke: %v", err)
		}
		if !strings.Contains(stdout.String(), "revoked "+a.ID) {
			t.Errorf("revoke said %q", stdout.String())
		}
	}
	if _, err := store.LookupToken(t.Context(), models.HashToken(secretA)); !errors.Is(err, models.ErrNotFound) {
		t.Errorf("revoked token still looks up: %v", err)
	}
	if _, err := store.LookupToken(t.Context(), models.HashToken(secretB)); err != nil {
		t.Errorf("the other tenant's token stopped working: %v", err)
	}
	if all := list(); !strings.Contains(all, "revoked") {
		t.Errorf("the list does not show the revocation:\n%s", all)
	}
	err := run(t.Context(), []string{"token", "revoke", "--data-dir", dir, models.NewID(models.PrefixToken)}, &bytes.Buffer{}, &bytes.Buffer{}, noEnv)
	if !errors.Is(err, models.ErrNotFound) {
		t.Errorf("revoke of an unknown ID: %v, want not found", err)
	}
}
