package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/uptrace/bun"

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
		db, err := openAdminDB(ctx, e.getenv, *dataDir)
		if err != nil {
			return err
		}
		defer db.Close()
		switch e.args[0] {
		case "up":
			g, err := models.MigrateUp(ctx, db)
			if err != nil {
				return err
			}
			if g.IsZero() {
				fmt.Fprintln(e.stdout, "database is up to date")
				return nil
			}
			fmt.Fprintf(e.stdout, "applied %s\n", g)
		case "down":
			g, err := models.MigrateDown(ctx, db)
			if err != nil {
				return err
			}
			if g.IsZero() {
				fmt.Fprintln(e.stdout, "nothing to roll back")
				return nil
			}
			fmt.Fprintf(e.stdout, "rolled back %s\n", g)
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

func tokenFlags(fs *flag.FlagSet) func(context.Context, env) error {
	tenant := fs.String("tenant", "", "tenant name (created if missing); required")
	scope := fs.String("scope", "read,write", "comma-separated scopes: read, write, admin (read, write and more), ops (read-only ops UI)")
	name := fs.String("name", "cli", "a label for the token")
	expires := fs.Duration("expires", 0, "lifetime, e.g. 720h; 0 = never expires")
	dataDir := dataDirFlag(fs)
	return func(ctx context.Context, e env) error {
		if *tenant == "" {
			return fmt.Errorf("%w: chom token create: --tenant is required", errUsage)
		}
		db, err := openAdminDB(ctx, e.getenv, *dataDir)
		if err != nil {
			return err
		}
		defer db.Close()
		store, err := models.New(models.Config{DB: db})
		if err != nil {
			return err
		}
		token, err := stack.IssueToken(ctx, store, *tenant, *name, strings.Split(*scope, ","), *expires)
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, token)
		return nil
	}
}

// openAdminDB opens the database CHOM_DATABASE_URL names (else the SQLite
// database of the dev data directory dataDir) with the small pool a one-shot
// command needs.
func openAdminDB(ctx context.Context, getenv func(string) string, dataDir string) (*bun.DB, error) {
	c, err := stack.LoadConfig(getenv)
	if err != nil {
		return nil, err
	}
	if c.DatabaseURL == "" && dataDir != "" {
		dir, err := filepath.Abs(dataDir)
		if err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "chom.db")); err != nil {
			return nil, fmt.Errorf("--data-dir %s: no chom dev database there (start `chom dev --data-dir %s` once first): %w", dataDir, dataDir, err)
		}
		dc, err := stack.LoadDevConfig(getenv, dir)
		if err != nil {
			return nil, err
		}
		c.DatabaseURL = dc.DatabaseURL
	}
	if err := c.Require("CHOM_DATABASE_URL"); err != nil {
		return nil, fmt.Errorf("%w (or --data-dir of a chom dev data directory)", err)
	}
	return models.Open(ctx, c.DatabaseURL, models.PoolConfig{MaxOpenConns: 2})
}
