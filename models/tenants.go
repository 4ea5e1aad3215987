package models

import (
	"context"
	"fmt"
	"strings"

	"github.com/uptrace/bun"
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

// FindTenant returns the tenant whose ID or name is ref: an ID (ten_ and 32
// hex digits) is looked up as an ID, anything else as a name.
func (s *Store) FindTenant(ctx context.Context, ref string) (*Tenant, error) {
	col := "name"
	if isID(ref, PrefixTenant) {
		col = "id"
	}
	t := new(Tenant)
	if err := s.db.NewSelect().Model(t).Where("? = ?", bun.Ident(col), ref).Scan(ctx); err != nil {
		return nil, notFound(err, "tenant", ref)
	}
	return t, nil
}

// isID reports whether s is prefix followed by the 32 lowercase hex digits of
// NewID.
func isID(s, prefix string) bool {
	if len(s) != len(prefix)+32 || !strings.HasPrefix(s, prefix) {
		return false
	}
	for _, c := range s[len(prefix):] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
