package ingress

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/netip"
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
	store tokenLookup
	ttl   time.Duration
	max   int
	now   func() time.Time
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
	return &tokenCache{store: lookup, ttl: ttl, max: max, now: now, entries: make(map[string]cacheEntry)}
}

// cached returns the principal of the token hashed hash when a live lookup of
// it is cached: found false means a lookup is needed; err is errUnauthorized
// when the cached token has expired since (its expiry is checked on every hit).
func (tc *tokenCache) cached(hash string) (p Principal, found bool, err error) {
	now := tc.now()
	tc.mu.RLock()
	e, ok := tc.entries[hash]
	tc.mu.RUnlock()
	if !ok || !now.Before(e.expires) {
		return Principal{}, false, nil
	}
	tc.stats.Hit()
	if e.p.ExpiresAt != nil && !now.Before(*e.p.ExpiresAt) {
		return Principal{}, true, errUnauthorized
	}
	return e.p, true, nil
}

// lookup reads the token hashed hash from the database and caches a live one;
// errUnauthorized when there is no live token with that hash.
func (tc *tokenCache) lookup(ctx context.Context, hash string) (Principal, error) {
	tc.stats.Miss()
	now := tc.now()
	t, err := tc.store.LookupToken(ctx, hash)
	if errors.Is(err, models.ErrNotFound) {
		return Principal{}, errUnauthorized
	}
	if err != nil {
		return Principal{}, err
	}
	p := Principal{TokenID: t.ID, TenantID: t.TenantID, Scopes: t.ScopeList(), ExpiresAt: t.ExpiresAt}
	if t.LastUsedAt == nil || now.Sub(*t.LastUsedAt) >= models.TokenTouchInterval {
		if err := tc.store.TouchToken(ctx, t.ID, now); err != nil && tc.log != nil {
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

// authLimitedError is a request refused before its token was looked up: its
// address has failed authentication too often (failLimiter).
type authLimitedError struct{ wait time.Duration }

func (e *authLimitedError) Error() string {
	return "too many failed authentication attempts from this address"
}

// authenticate resolves the request's credential (a Bearer token or the
// password of Basic auth) to its principal. It returns errUnauthorized for a
// missing, malformed, unknown, revoked or expired token alike, counting the
// reason, and charges the failure to the client's address; once the address
// has no attempts left it returns *authLimitedError instead, before any
// database lookup (a token in the token cache still passes). Only failures
// are charged, after the lookup, so valid tokens never use up their
// address's attempts, however many arrive at once.
func (a *API) authenticate(c *gin.Context) (Principal, error) {
	token := bearerToken(c.GetHeader("Authorization"))
	key := clientKey(c.Request.RemoteAddr)
	if !models.WellFormedToken(token) {
		reason := metrics.AuthMissing
		if token != "" || c.GetHeader("Authorization") != "" {
			reason = metrics.AuthMalformed
		}
		return Principal{}, a.authFailed(key, reason, true)
	}
	hash := models.HashToken(token)
	p, found, err := a.tokens.cached(hash)
	if found {
		if err != nil {
			return Principal{}, a.authFailed(key, metrics.AuthExpired, true)
		}
		return p, nil
	}
	if a.failures != nil {
		if ok, wait := a.failures.allow(key); !ok {
			a.metrics.AuthRateLimited()
			return Principal{}, &authLimitedError{wait: wait}
		}
	}
	p, err = a.tokens.lookup(c.Request.Context(), hash)
	if errors.Is(err, errUnauthorized) {
		// The lookup happened: charge it, and answer what it found.
		if a.failures != nil {
			a.failures.take(key)
		}
		return Principal{}, a.authFailed(key, metrics.AuthUnknown, false)
	}
	return p, err
}

// authFailed counts a failed authentication by reason and returns
// errUnauthorized, or *authLimitedError when charge is set and the address
// has no attempts left.
func (a *API) authFailed(key netip.Prefix, reason string, charge bool) error {
	if charge && a.failures != nil {
		if ok, wait := a.failures.take(key); !ok {
			a.metrics.AuthRateLimited()
			return &authLimitedError{wait: wait}
		}
	}
	a.metrics.AuthFailed(reason)
	return errUnauthorized
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
		p, err := a.authenticate(c)
		if err != nil {
			a.fail(c, err)
			return
		}
		if !models.ScopeAllows(p.Scopes, scope) {
			a.metrics.AuthFailed(metrics.AuthScope)
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
