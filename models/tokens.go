package models

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Token scopes. read, write and admin nest: admin implies write, write implies
// read. ops (an operator: read-only access to the ops UI at /ops/queues) stands
// outside that chain: it grants no API scope, and of the others only admin
// implies it, so an operator's token cannot touch tenants' resources and a
// tenant's read/write token cannot see the queues.
const (
	ScopeRead  = "read"
	ScopeWrite = "write"
	ScopeAdmin = "admin"
	ScopeOps   = "ops"
)

// TokenPrefix starts every CHOM API token, so secret scanners can recognise one.
const TokenPrefix = "chom_"

// tokenSecretLen is the length of the base32 secret after the prefix: 32 random
// bytes (256 bits) in unpadded lowercase base32.
const tokenSecretLen = 52

var tokenEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// ValidScope reports whether s names a scope.
func ValidScope(s string) bool {
	return s == ScopeRead || s == ScopeWrite || s == ScopeAdmin || s == ScopeOps
}

// ScopeAllows reports whether a token holding scopes may act with scope want:
// read < write < admin nest, ops is granted by ops or admin only, and an unknown
// scope (wanted or held) is never granted.
func ScopeAllows(scopes []string, want string) bool {
	if want == ScopeOps {
		return slices.Contains(scopes, ScopeOps) || slices.Contains(scopes, ScopeAdmin)
	}
	rank := map[string]int{ScopeRead: 1, ScopeWrite: 2, ScopeAdmin: 3}
	need, ok := rank[want]
	if !ok {
		return false // an unknown scope is never granted: fail closed
	}
	for _, s := range scopes {
		if rank[s] >= need {
			return true
		}
	}
	return false
}

// HashToken returns the hex SHA-256 of a token: what is stored and looked up.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// WellFormedToken reports whether token has the shape of a CHOM token. A malformed
// token is rejected without a database lookup.
func WellFormedToken(token string) bool {
	if len(token) != len(TokenPrefix)+tokenSecretLen || !strings.HasPrefix(token, TokenPrefix) {
		return false
	}
	for _, c := range token[len(TokenPrefix):] {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// NewTokenParams describes a token to issue.
type NewTokenParams struct {
	TenantID  string
	Name      string
	Scopes    []string
	ExpiresAt *time.Time
}

// CreateToken issues a token and returns its plaintext, which is never stored and
// cannot be recovered: only its hash is kept.
func (s *Store) CreateToken(ctx context.Context, p NewTokenParams) (string, *APIToken, error) {
	if len(p.Scopes) == 0 {
		return "", nil, fmt.Errorf("create token: at least one scope is required")
	}
	for _, sc := range p.Scopes {
		if !ValidScope(sc) {
			return "", nil, fmt.Errorf("create token: unknown scope %q", sc)
		}
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", nil, fmt.Errorf("create token: random: %w", err)
	}
	secret := tokenEncoding.EncodeToString(raw[:])
	token := TokenPrefix + secret
	scopes := slices.Clone(p.Scopes)
	slices.Sort(scopes)
	t := &APIToken{
		ID:        NewID(PrefixToken),
		TenantID:  p.TenantID,
		Name:      p.Name,
		Prefix:    TokenPrefix + secret[:6],
		TokenHash: HashToken(token),
		Scopes:    strings.Join(slices.Compact(scopes), ","),
		ExpiresAt: p.ExpiresAt,
		CreatedAt: s.nowUTC(),
	}
	if _, err := s.db.NewInsert().Model(t).Exec(ctx); err != nil {
		return "", nil, fmt.Errorf("create token for tenant %s: %w", p.TenantID, err)
	}
	return token, t, nil
}

// LookupToken returns the live token whose hash is tokenHash. A revoked or expired
// token, like an unknown one, is ErrNotFound: callers answer all three the same way.
func (s *Store) LookupToken(ctx context.Context, tokenHash string) (*APIToken, error) {
	t := new(APIToken)
	err := s.db.NewSelect().Model(t).Where("token_hash = ?", tokenHash).Limit(1).Scan(ctx)
	if err != nil {
		return nil, notFound(err, "token", "by hash")
	}
	if t.RevokedAt != nil || (t.ExpiresAt != nil && !s.now().Before(*t.ExpiresAt)) {
		return nil, fmt.Errorf("token %s: %w", t.ID, ErrNotFound)
	}
	return t, nil
}

// RevokeToken revokes a tenant's token by ID.
func (s *Store) RevokeToken(ctx context.Context, tenantID, tokenID string) error {
	res, err := s.db.NewUpdate().Model((*APIToken)(nil)).
		Set("revoked_at = ?", s.nowUTC()).
		Where("id = ? AND tenant_id = ? AND revoked_at IS NULL", tokenID, tenantID).
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", tokenID, err)
	}
	if affected(res) == 0 {
		return fmt.Errorf("revoke token %s: %w", tokenID, ErrNotFound)
	}
	return nil
}

// ScopeList splits the stored scopes of t.
func (t *APIToken) ScopeList() []string { return strings.Split(t.Scopes, ",") }
