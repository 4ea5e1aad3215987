package models

import (
	"context"
	"fmt"
)

// EnsureTenant returns the tenant called name, creating it if it does not exist.
func (s *Store) EnsureTenant(ctx context.Context, name string) (*Tenant, error) {
	now := s.nowUTC()
	t := &Tenant{ID: NewID(PrefixTenant), Name: name, Status: "active", CreatedAt: now, UpdatedAt: now}
	if _, err := s.db.NewInsert().Model(t).On("CONFLICT DO NOTHING").Exec(ctx); err != nil {
		return nil, fmt.Errorf("create tenant %q: %w", name, err)
	}
	got := new(Tenant)
	if err := s.db.NewSelect().Model(got).Where("name = ?", name).Scan(ctx); err != nil {
		return nil, notFound(err, "tenant", name)
	}
	return got, nil
}

// GetTenant returns the tenant with id.
func (s *Store) GetTenant(ctx context.Context, id string) (*Tenant, error) {
	t := new(Tenant)
	if err := s.db.NewSelect().Model(t).Where("id = ?", id).Scan(ctx); err != nil {
		return nil, notFound(err, "tenant", id)
	}
	return t, nil
}
