package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chomhq/chom/models"
)

// Every command explains itself without configuration or servers: --help
// prints its synopsis, its flags and the variables it reads, even when the
// environment holds bad values.
func TestEveryCommandHasHelp(t *testing.T) {
	t.Parallel()
	badEnv := func(k string) string {
		if strings.HasPrefix(k, "CHOM_") {
			return "not a value"
		}
		return ""
	}
	for _, cmd := range commands() {
		for _, flag := range []string{"--help", "-h"} {
			var stdout, stderr bytes.Buffer
			if err := run(t.Context(), []string{cmd.name, flag}, &stdout, &stderr, badEnv); err != nil {
				t.Errorf("chom %s %s: %v", cmd.name, flag, err)
				continue
			}
			out := stdout.String()
			if !strings.HasPrefix(out, "Usage: chom "+cmd.name) {
				t.Errorf("chom %s %s: no usage line:\n%s", cmd.name, flag, out)
			}
			if cmd.role != 0 && !strings.Contains(out, "CHOM_DATABASE_URL") && !strings.Contains(out, "CHOM_REDIS_URL") {
				t.Errorf("chom %s %s: no environment variables listed:\n%s", cmd.name, flag, out)
			}
		}
	}
	var stdout bytes.Buffer
	if err := run(t.Context(), []string{"dev", "--help"}, &stdout, &bytes.Buffer{}, badEnv); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"-data-dir", "-kafka-listen", "CHOM_METERING_INTERVAL", "sqlite://<data-dir>/chom.db"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("chom dev --help lacks %q:\n%s", want, stdout.String())
		}
	}
	stdout.Reset()
	if err := run(t.Context(), []string{"help", "token"}, &stdout, &bytes.Buffer{}, badEnv); err != nil ||
		!strings.Contains(stdout.String(), "-tenant") || !strings.Contains(stdout.String(), "-data-dir") {
		t.Errorf("chom help token: %v\n%s", err, stdout.String())
	}
	// chom token --help lists every subcommand with its synopsis.
	for _, args := range [][]string{{"token", "--help"}, {"token", "-h"}, {"token", "help"}} {
		stdout.Reset()
		if err := run(t.Context(), args, &stdout, &bytes.Buffer{}, badEnv); err != nil {
			t.Errorf("chom %q: %v", args, err)
		}
		for _, want := range []string{"chom token create --tenant NAME", "chom token list [--tenant NAME]", "chom token revoke ID", "-expires", "CHOM_TOKEN_DEFAULT_TTL"} {
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("chom %q lacks %q:\n%s", args, want, stdout.String())
			}
		}
	}
	for _, sub := range []string{"create", "list", "revoke"} {
		stdout.Reset()
		if err := run(t.Context(), []string{"token", sub, "--help"}, &stdout, &bytes.Buffer{}, badEnv); err != nil ||
			!strings.HasPrefix(stdout.String(), "Usage: chom token "+sub) || !strings.Contains(stdout.String(), "-data-dir") {
			t.Errorf("chom token %s --help: %v\n%s", sub, err, stdout.String())
		}
	}
}

// Unknown commands, flags and arguments are usage errors (exit 2), named.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{}, {"serve"}, {"worker", "--bogus"}, {"dev", "--data"}, {"ingress", "extra"}, {"migrate", "sideways"},
		{"token"}, {"token", "frobnicate"}, {"token", "create"}, {"token", "create", "--tenant"},
		{"token", "create", "--tenant", "a", "extra"}, {"token", "list", "extra"}, {"token", "list", "--bogus"},
		{"token", "revoke"}, {"token", "revoke", "tok_1", "tok_2"}, {"token", "revoke", "not-an-id"},
	} {
		err := run(t.Context(), args, &bytes.Buffer{}, &bytes.Buffer{}, func(string) string { return "" })
		if !errors.Is(err, errUsage) {
			t.Errorf("chom %q: %v, want a usage error", args, err)
		}
	}
	err := run(t.Context(), []string{"worker", "--bogus"}, &bytes.Buffer{}, &bytes.Buffer{}, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("unknown flag: %v, want it named", err)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	var stdout bytes.Buffer
	if err := run(t.Context(), []string{"version"}, &stdout, &bytes.Buffer{}, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stdout.String(), "chom ") || !strings.Contains(stdout.String(), "commit ") {
		t.Errorf("version: %q", stdout.String())
	}
}

// chom token create --data-dir issues a token in a chom dev data directory's
// SQLite database, which the dev API then accepts; a directory chom dev never
// ran in is refused with a hint.
func TestTokenCreateInDevDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	noEnv := func(string) string { return "" }
	err := run(t.Context(), []string{"token", "create", "--tenant", "ops-team", "--data-dir", dir}, &bytes.Buffer{}, &bytes.Buffer{}, noEnv)
	if err == nil || !strings.Contains(err.Error(), "chom dev") {
		t.Errorf("empty data dir: %v, want a hint to start chom dev", err)
	}
	ctx := context.Background()
	db, err := models.Open(ctx, "sqlite://"+filepath.Join(dir, "chom.db"), models.PoolConfig{MaxOpenConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := models.MigrateUp(ctx, db); err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	if err := run(t.Context(), []string{"token", "create", "--tenant", "ops-team", "--scope", "ops", "--data-dir", dir}, &stdout, &bytes.Buffer{}, noEnv); err != nil {
		t.Fatal(err)
	}
	store, err := models.New(models.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := store.LookupToken(ctx, models.HashToken(strings.TrimSpace(stdout.String())))
	if err != nil {
		t.Fatalf("the printed token is not in the dev database: %v", err)
	}
	if tok.Scopes != models.ScopeOps {
		t.Errorf("scopes %q, want ops", tok.Scopes)
	}
}
