package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/chomhq/chom/internal/healthcheck"
	"github.com/chomhq/chom/internal/stack"
	"github.com/chomhq/chom/models"
)

// dataDirFlag declares --data-dir, the chom dev data directory whose SQLite
// database a one-shot command uses when CHOM_DATABASE_URL is unset.
func dataDirFlag(fs *flag.FlagSet) *string {
	return fs.String("data-dir", "", "use the SQLite database of this chom dev data directory (when CHOM_DATABASE_URL is unset)")
}

func migrateFlags(fs *flag.FlagSet) func(context.Context, env) error {
	dataDir := dataDirFlag(fs)
	return func(ctx context.Context, e env) error {
		if len(e.args) != 1 || (e.args[0] != "up" && e.args[0] != "down" && e.args[0] != "status") {
			return fmt.Errorf("%w: chom migrate up|down|status", errUsage)
		}
		db, _, err := stack.OpenAdmin(ctx, e.getenv, *dataDir)
		if err != nil {
			return err
		}
		defer db.Close()
		switch e.args[0] {
		case "up", "down":
			migrate, done, none := models.MigrateUp, "applied", "database is up to date"
			if e.args[0] == "down" {
				migrate, done, none = models.MigrateDown, "rolled back", "nothing to roll back"
			}
			g, err := migrate(ctx, db)
			switch {
			case err != nil:
				return err
			case g.IsZero():
				fmt.Fprintln(e.stdout, none)
			default:
				fmt.Fprintf(e.stdout, "%s %s\n", done, g)
			}
		case "status":
			ms, err := models.MigrationStatus(ctx, db)
			if err != nil {
				return err
			}
			for _, m := range ms {
				state := "pending"
				if m.IsApplied() {
					state = "applied " + m.MigratedAt.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(e.stdout, "%s_%s\t%s\n", m.Name, m.Comment, state)
			}
		}
		return nil
	}
}

// tokenCommands are the subcommands of chom token.
func tokenCommands() []command {
	return []command{
		{name: "create", args: "--tenant NAME", summary: "issue an API token (creating the tenant if needed) and print it: the only time it is shown", flags: tokenCreateFlags},
		{name: "list", args: "[--tenant NAME]", summary: "list tokens (every tenant's, or one's), newest first: never their secrets", flags: tokenListFlags},
		{name: "revoke", args: "ID", summary: "revoke a token; ingress processes refuse it within CHOM_TOKEN_CACHE_TTL", flags: tokenRevokeFlags},
	}
}

func tokenCreateFlags(fs *flag.FlagSet) func(context.Context, env) error {
	tenant := fs.String("tenant", "", "tenant name (created if missing); required")
	scope := fs.String("scope", "read,write", "comma-separated scopes: read, write, admin (read, write and more), ops (read-only ops UI)")
	name := fs.String("name", "cli", "a label for the token")
	expires := fs.Duration("expires", 0, "lifetime, e.g. 720h; 0 = never expires; unset = CHOM_TOKEN_DEFAULT_TTL (default 2160h, 90 days)")
	dataDir := dataDirFlag(fs)
	return func(ctx context.Context, e env) error {
		if *tenant == "" {
			return fmt.Errorf("%w: chom token create: --tenant is required", errUsage)
		}
		if len(e.args) > 0 {
			return fmt.Errorf("%w: chom token create takes no arguments, got %q", errUsage, e.args)
		}
		ttl := *expires
		if !flagSet(fs, "expires") {
			c, err := stack.LoadConfig(e.getenv)
			if err != nil {
				return err
			}
			ttl = c.TokenDefaultTTL
		}
		db, store, err := stack.OpenAdmin(ctx, e.getenv, *dataDir)
		if err != nil {
			return err
		}
		defer db.Close()
		token, err := stack.IssueToken(ctx, store, *tenant, *name, strings.Split(*scope, ","), ttl)
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, token)
		return nil
	}
}

// flagSet reports whether the command line set the flag called name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func tokenListFlags(fs *flag.FlagSet) func(context.Context, env) error {
	tenant := fs.String("tenant", "", "only this tenant's tokens (its name or ID)")
	dataDir := dataDirFlag(fs)
	return func(ctx context.Context, e env) error {
		if len(e.args) > 0 {
			return fmt.Errorf("%w: chom token list takes no arguments, got %q", errUsage, e.args)
		}
		db, store, err := stack.OpenAdmin(ctx, e.getenv, *dataDir)
		if err != nil {
			return err
		}
		defer db.Close()
		var f models.TokenFilter
		if *tenant != "" {
			t, err := store.FindTenant(ctx, *tenant)
			if err != nil {
				return fmt.Errorf("chom token list --tenant %s: %w", *tenant, err)
			}
			f.TenantID = t.ID
		}
		list, err := store.ListTokens(ctx, f)
		if err != nil {
			return err
		}
		return writeTokens(e.stdout, list, time.Now())
	}
}

// writeTokens prints tokens as a table: identity and lifecycle, never the
// secret or its hash.
func writeTokens(w io.Writer, list []models.APIToken, now time.Time) error {
	ts := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTENANT\tNAME\tPREFIX\tSCOPES\tSTATE\tCREATED\tEXPIRES\tLAST USED\tREVOKED")
	for _, t := range list {
		state := "active"
		switch {
		case t.RevokedAt != nil:
			state = "revoked"
		case t.ExpiresAt != nil && !now.Before(*t.ExpiresAt):
			state = "expired"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.TenantID, t.Name, t.Prefix, t.Scopes, state,
			ts(&t.CreatedAt), ts(t.ExpiresAt), ts(t.LastUsedAt), ts(t.RevokedAt))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write tokens: %w", err)
	}
	return nil
}

func tokenRevokeFlags(fs *flag.FlagSet) func(context.Context, env) error {
	dataDir := dataDirFlag(fs)
	return func(ctx context.Context, e env) error {
		if len(e.args) != 1 || !strings.HasPrefix(e.args[0], models.PrefixToken) {
			return fmt.Errorf("%w: chom token revoke ID (a %s… ID, see chom token list)", errUsage, models.PrefixToken)
		}
		db, store, err := stack.OpenAdmin(ctx, e.getenv, *dataDir)
		if err != nil {
			return err
		}
		defer db.Close()
		t, err := store.RevokeTokenByID(ctx, e.args[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "revoked %s (%s) of tenant %s at %s; running ingress processes refuse it within CHOM_TOKEN_CACHE_TTL\n",
			t.ID, t.Prefix, t.TenantID, t.RevokedAt.UTC().Format(time.RFC3339))
		return nil
	}
}

// certificateCommands are the subcommands of chom certificates.
func certificateCommands() []command {
	return []command{
		{name: "reseal", args: "[--batch N]", summary: "re-seal every stored key (ACME accounts, certificates, pending uploads) under the first key of CHOM_CERT_ENCRYPTION_KEYS; run it after putting a new key first, until it reports nothing, before dropping the old key",
			flags: certificateResealFlags},
	}
}

func certificateResealFlags(fs *flag.FlagSet) func(context.Context, env) error {
	batch := fs.Int("batch", 100, "rows read per statement")
	dataDir := dataDirFlag(fs)
	return func(ctx context.Context, e env) error {
		if len(e.args) != 0 || *batch <= 0 {
			return fmt.Errorf("%w: chom certificates reseal [--batch N] (N > 0)", errUsage)
		}
		db, certs, err := stack.OpenCertificateAdmin(ctx, e.getenv, *dataDir)
		if err != nil {
			return err
		}
		defer db.Close()
		rep, err := certs.Reseal(ctx, *batch)
		fmt.Fprintf(e.stdout, "re-sealed %d ACME account keys, %d certificate keys, %d pending upload keys\n",
			rep.Accounts, rep.Certificates, rep.Uploads)
		if err != nil {
			return fmt.Errorf("re-seal stopped (run it again once the cause is fixed): %w", err)
		}
		if rep == (models.ResealReport{}) {
			fmt.Fprintln(e.stdout, "nothing is sealed under another key: the old keys can be dropped from CHOM_CERT_ENCRYPTION_KEYS")
		} else {
			fmt.Fprintln(e.stdout, "run it again until it re-seals nothing (a row changed meanwhile is left to the next pass)")
		}
		return nil
	}
}

// healthcheckFlags is `chom healthcheck`: the image has no shell or curl, so
// its HEALTHCHECK runs this. Without --url it tries every endpoint the
// environment's CHOM_LISTEN and CHOM_METRICS_LISTEN give (stack.HealthURLs).
func healthcheckFlags(fs *flag.FlagSet) func(context.Context, env) error {
	url := fs.String("url", "", "probe only this URL (default: the API's and every /metrics listener's health endpoint, from CHOM_LISTEN and CHOM_METRICS_LISTEN)")
	timeout := fs.Duration("timeout", healthcheck.DefaultTimeout, "give up after this long")
	return func(ctx context.Context, e env) error {
		c := healthcheck.Config{URLs: []string{*url}, Timeout: *timeout}
		if *url == "" {
			cfg, err := stack.LoadConfig(e.getenv)
			if err != nil {
				return err
			}
			c.URLs = stack.HealthURLs(cfg)
		}
		u, err := healthcheck.Probe(ctx, c)
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, "healthy:", u)
		return nil
	}
}
