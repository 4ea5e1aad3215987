package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/models"
)

func runMigrate(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	if len(args) != 1 || (args[0] != "up" && args[0] != "down" && args[0] != "status") {
		return fmt.Errorf("%w: chom migrate up|down|status", errUsage)
	}
	db, err := openAdminDB(ctx, getenv)
	if err != nil {
		return err
	}
	defer db.Close()
	switch args[0] {
	case "up":
		g, err := models.MigrateUp(ctx, db)
		if err != nil {
			return err
		}
		if g.IsZero() {
			fmt.Fprintln(stdout, "database is up to date")
			return nil
		}
		fmt.Fprintf(stdout, "applied %s\n", g)
	case "down":
		g, err := models.MigrateDown(ctx, db)
		if err != nil {
			return err
		}
		if g.IsZero() {
			fmt.Fprintln(stdout, "nothing to roll back")
			return nil
		}
		fmt.Fprintf(stdout, "rolled back %s\n", g)
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
			fmt.Fprintf(stdout, "%s_%s\t%s\n", m.Name, m.Comment, state)
		}
	}
	return nil
}

func runToken(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	if len(args) == 0 || args[0] != "create" {
		return fmt.Errorf("%w: chom token create --tenant NAME [--scope read,write,admin,ops]", errUsage)
	}
	fs := flag.NewFlagSet("token create", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	tenant := fs.String("tenant", "", "tenant name (created if missing)")
	scope := fs.String("scope", "read,write", "comma-separated scopes: read, write, admin (read, write and more), ops (read-only ops UI)")
	name := fs.String("name", "cli", "a label for the token")
	expires := fs.Duration("expires", 0, "lifetime, e.g. 720h; 0 = never expires")
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *tenant == "" {
		return fmt.Errorf("%w: --tenant is required", errUsage)
	}
	db, err := openAdminDB(ctx, getenv)
	if err != nil {
		return err
	}
	defer db.Close()
	store, err := models.New(models.Config{DB: db})
	if err != nil {
		return err
	}
	token, _, err := issueToken(ctx, store, *tenant, *name, strings.Split(*scope, ","), *expires)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, token)
	return nil
}

// issueToken creates the tenant if needed and a token for it.
func issueToken(ctx context.Context, store *models.Store, tenant, name string, scopes []string, ttl time.Duration) (string, *models.Tenant, error) {
	t, err := store.EnsureTenant(ctx, tenant)
	if err != nil {
		return "", nil, err
	}
	p := models.NewTokenParams{TenantID: t.ID, Name: name, Scopes: scopes}
	if ttl > 0 {
		exp := time.Now().Add(ttl).UTC()
		p.ExpiresAt = &exp
	}
	token, _, err := store.CreateToken(ctx, p)
	if err != nil {
		return "", nil, err
	}
	return token, t, nil
}

// openAdminDB opens the database CHOM_DATABASE_URL names with the small pool a
// one-shot admin command needs.
func openAdminDB(ctx context.Context, getenv func(string) string) (*bun.DB, error) {
	c, err := loadConfig(getenv)
	if err != nil {
		return nil, err
	}
	if err := c.require("CHOM_DATABASE_URL"); err != nil {
		return nil, err
	}
	return models.Open(ctx, c.DatabaseURL, models.PoolConfig{MaxOpenConns: 2})
}
