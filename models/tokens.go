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

// TokenTouchInterval is the precision of APIToken.LastUsedAt: TouchToken does
// not write when the recorded time is younger than this, so a busy token costs
// at most one write a minute, however many processes look it up.
const TokenTouchInterval = time.Minute

// TokenFilter selects a page of ListTokens.
type TokenFilter struct {
	// TenantID limits the listing to one tenant; empty lists every tenant's.
	TenantID string
	// Cursor is the ID of the last token of the previous page (newest first).
	Cursor string
	// Limit is the page size; 0 means no limit (the CLI lists everything).
	Limit int
}

// ListTokens returns tokens newest first, revoked and expired ones included
// (the listing is an audit of what was issued). The hashes are in the rows;
// callers show none of them.
func (s *Store) ListTokens(ctx context.Context, f TokenFilter) ([]APIToken, error) {
	var out []APIToken
	q := s.db.NewSelect().Model(&out).OrderExpr("id DESC")
	if f.TenantID != "" {
		q = q.Where("tenant_id = ?", f.TenantID)
	}
	if f.Cursor != "" {
		q = q.Where("id < ?", f.Cursor)
	}
	if f.Limit > 0 {
		q = q.Limit(int64(f.Limit))
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("list tokens of tenant %q: %w", f.TenantID, err)
	}
	return out, nil
}

// GetToken returns the token with id, whatever its state.
func (s *Store) GetToken(ctx context.Context, id string) (*APIToken, error) {
	t := new(APIToken)
	if err := s.db.NewSelect().Model(t).Where("id = ?", id).Scan(ctx); err != nil {
		return nil, notFound(err, "token", id)
	}
	return t, nil
}

// RevokeTokenByID revokes the token with id, of any tenant (an administrator's
// act), and returns it. Revoking a revoked token changes nothing and succeeds
// (the first revocation time is kept); an unknown ID is ErrNotFound.
func (s *Store) RevokeTokenByID(ctx context.Context, id string) (*APIToken, error) {
	if _, err := s.db.NewUpdate().Model((*APIToken)(nil)).
		Set("revoked_at = ?", s.nowUTC()).
		Where("id = ? AND revoked_at IS NULL", id).
		Exec(ctx); err != nil {
		return nil, fmt.Errorf("revoke token %s: %w", id, err)
	}
	return s.GetToken(ctx, id)
}

// TouchToken records that the token with id authenticated a request at at,
// unless a time less than TokenTouchInterval older is recorded already (the
// condition is in the UPDATE, so concurrent touches write at most once).
func (s *Store) TouchToken(ctx context.Context, id string, at time.Time) error {
	at = at.UTC()
	if _, err := s.db.NewUpdate().Model((*APIToken)(nil)).
		Set("last_used_at = ?", at).
		Where("id = ? AND (last_used_at IS NULL OR last_used_at <= ?)", id, at.Add(-TokenTouchInterval)).
		Exec(ctx); err != nil {
		return fmt.Errorf("touch token %s: %w", id, err)
	}
	return nil
}
