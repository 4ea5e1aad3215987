package models

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/migrate"

	"github.com/chomhq/chom/models/migrations"
)

// NewMigrator returns a bun migrator for CHOM's schema on db.
func NewMigrator(db *bun.DB) *migrate.Migrator {
	return migrate.NewMigrator(db, migrations.Migrations, migrate.WithMarkAppliedOnSuccess(true))
}

// MigrateUp applies every pending migration. Several processes may start at once
// (replicas with CHOM_AUTO_MIGRATE): they take turns, and each migration is applied
// once.
func MigrateUp(ctx context.Context, db *bun.DB) (*migrate.MigrationGroup, error) {
	var group *migrate.MigrationGroup
	err := withMigrationLock(ctx, db, func(m *migrate.Migrator) error {
		g, err := m.Migrate(ctx)
		group = g
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("migrate up: %w", err)
	}
	return group, nil
}

// MigrateDown rolls back the last applied group of migrations.
func MigrateDown(ctx context.Context, db *bun.DB) (*migrate.MigrationGroup, error) {
	var group *migrate.MigrationGroup
	err := withMigrationLock(ctx, db, func(m *migrate.Migrator) error {
		g, err := m.Rollback(ctx)
		group = g
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("migrate down: %w", err)
	}
	return group, nil
}

// withMigrationLock runs fn with the migrator initialised, holding a lock that
// makes concurrent callers wait their turn. On PostgreSQL it is a session advisory
// lock keyed by the current schema (bun's own lock fails instead of waiting, and its
// Init races on creating its tables); on SQLite, which one process owns, bun's lock.
func withMigrationLock(ctx context.Context, db *bun.DB, fn func(m *migrate.Migrator) error) error {
	m := NewMigrator(db)
	if !IsPostgres(db) {
		if err := m.Init(ctx); err != nil {
			return fmt.Errorf("init: %w", err)
		}
		if err := m.Lock(ctx); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		defer func() { _ = m.Unlock(context.WithoutCancel(ctx)) }()
		return fn(m)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	defer conn.Close()
	const key = "hashtext(current_schema() || '.chom_migrations')"
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock("+key+")"); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	defer func() { _, _ = conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock("+key+")") }()
	if err := m.Init(ctx); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	return fn(m)
}

// MigrationStatus lists every known migration and whether it is applied.
func MigrationStatus(ctx context.Context, db *bun.DB) (migrate.MigrationSlice, error) {
	m := NewMigrator(db)
	if err := m.Init(ctx); err != nil {
		return nil, fmt.Errorf("migrate: init: %w", err)
	}
	ms, err := m.MigrationsWithStatus(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate status: %w", err)
	}
	return ms, nil
}
