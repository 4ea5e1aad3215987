package ingress

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/chomhq/chom/metrics"
	"github.com/chomhq/chom/models"
)

// Principal is who a request acts as: a token of a tenant, with its scopes.
type Principal struct {
	TokenID   string
	TenantID  string
	Scopes    []string
	ExpiresAt *time.Time
}

// tokenLookup finds a live token by its hash and records its use;
// models.Store implements it.
type tokenLookup interface {
	LookupToken(ctx context.Context, tokenHash string) (*models.APIToken, error)
	TouchToken(ctx context.Context, id string, at time.Time) error
}

// tokenCache remembers successful token lookups for a short TTL, so the hot path
// does not read api_tokens on every request. A revoked token therefore keeps
// working for at most the TTL (default 30s); an expired one stops at once, because
// its expiry is checked on every hit. Failed lookups are not cached, so a new token
// works immediately. The cache is bounded; when full it drops everything (cheap,
// and the next requests refill it).
//
// A lookup (a miss) also records the token's last_used_at, when the recorded
// one is older than models.TokenTouchInterval: a hit writes nothing, so the hot
// path costs no write, and last_used_at is exact to within the larger of the
// TTL and that interval.
type tokenCache struct {
	lookup tokenLookup
	ttl    time.Duration
	max    int
	now    func() time.Time
	// stats counts hits and misses of well-formed tokens (nil: not counted).
	stats *metrics.CacheStats
	// log reports a failed last_used_at write (nil: not reported); the
	// request is served anyway.
	log *slog.Logger

	mu      sync.RWMutex
	entries map[string]cacheEntry
}

type cacheEntry struct {
	p       Principal
	expires time.Time
}

func newTokenCache(lookup tokenLookup, ttl time.Duration, max int, now func() time.Time) *tokenCache {
	return &tokenCache{lookup: lookup, ttl: ttl, max: max, now: now, entries: make(map[string]cacheEntry)}
}

// authenticate resolves a bearer token to its principal, or errUnauthorized for a
// missing, malformed, unknown, revoked or expired token alike.
func (tc *tokenCache) authenticate(ctx context.Context, token string) (Principal, error) {
	if !models.WellFormedToken(token) {
		return Principal{}, errUnauthorized
	}
	hash := models.HashToken(token)
	now := tc.now()
	tc.mu.RLock()
	e, ok := tc.entries[hash]
	tc.mu.RUnlock()
	if ok && now.Before(e.expires) {
		tc.stats.Hit()
		if e.p.ExpiresAt != nil && !now.Before(*e.p.ExpiresAt) {
			return Principal{}, errUnauthorized
		}
		return e.p, nil
	}
	tc.stats.Miss()
	t, err := tc.lookup.LookupToken(ctx, hash)
	if errors.Is(err, models.ErrNotFound) {
		return Principal{}, errUnauthorized
	}
	if err != nil {
		return Principal{}, err
	}
	p := Principal{TokenID: t.ID, TenantID: t.TenantID, Scopes: t.ScopeList(), ExpiresAt: t.ExpiresAt}
	if t.LastUsedAt == nil || now.Sub(*t.LastUsedAt) >= models.TokenTouchInterval {
		if err := tc.lookup.TouchToken(ctx, t.ID, now); err != nil && tc.log != nil {
			tc.log.WarnContext(ctx, "record token use", "token_id", t.ID, "tenant_id", t.TenantID, "error", err)
		}
	}
	if tc.ttl > 0 {
		tc.mu.Lock()
		if len(tc.entries) >= tc.max {
			clear(tc.entries)
		}
		tc.entries[hash] = cacheEntry{p: p, expires: now.Add(tc.ttl)}
		tc.mu.Unlock()
	}
	return p, nil
}

// forget drops the cached lookups of the token with id, so a token revoked
// through this process stops working here at once (other processes keep it
// for at most the TTL).
func (tc *tokenCache) forget(id string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	for hash, e := range tc.entries {
		if e.p.TokenID == id {
			delete(tc.entries, hash)
		}
	}
}

// bearerToken extracts the token of "Authorization: Bearer <token>", or the
// password of HTTP Basic auth (how a browser presents it to the ops UI).
func bearerToken(header string) string {
	scheme, rest, ok := strings.Cut(header, " ")
	if !ok {
		return ""
	}
	switch strings.ToLower(scheme) {
	case "bearer":
		return strings.TrimSpace(rest)
	case "basic":
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
		if err != nil {
			return ""
		}
		_, pass, _ := strings.Cut(string(raw), ":")
		return pass
	}
	return ""
}

const ctxPrincipal = "chom.principal"

// requireScope authenticates the request and checks that its token holds scope.
func (a *API) requireScope(scope string) gin.HandlerFunc {
	return func(c *gin.Context) {
		p, err := a.tokens.authenticate(c.Request.Context(), bearerToken(c.GetHeader("Authorization")))
		if err != nil {
			a.fail(c, err)
			return
		}
		if !models.ScopeAllows(p.Scopes, scope) {
			a.fail(c, errForbidden)
			return
		}
		c.Set(ctxPrincipal, p)
		c.Next()
	}
}

// principal returns the authenticated principal of the request.
func principal(c *gin.Context) Principal {
	p, _ := c.Get(ctxPrincipal)
	pr, _ := p.(Principal)
	return pr
}
