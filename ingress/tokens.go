package ingress

import (
	"time"

	"github.com/gin-gonic/gin"

	"github.com/chomhq/chom/ingress/input"
	"github.com/chomhq/chom/models"
)

// TokenView is the API representation of a token: what identifies it and its
// lifecycle, never its secret or hash.
type TokenView struct {
	ID         string     `json:"id"`
	TenantID   string     `json:"tenant_id"`
	Name       string     `json:"name"`
	Prefix     string     `json:"prefix"`
	Scopes     []string   `json:"scopes"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
}

// CreatedToken is the answer to a token's creation: the only time its secret
// is shown.
type CreatedToken struct {
	TokenView
	Token string `json:"token"`
}

func tokenView(t *models.APIToken) TokenView {
	return TokenView{
		ID: t.ID, TenantID: t.TenantID, Name: t.Name, Prefix: t.Prefix, Scopes: t.ScopeList(),
		CreatedAt: t.CreatedAt.UTC(), ExpiresAt: utc(t.ExpiresAt), LastUsedAt: utc(t.LastUsedAt), RevokedAt: utc(t.RevokedAt),
	}
}

// tokenRoutes registers the token lifecycle routes on the admin group.
func (a *API) tokenRoutes(admin *gin.RouterGroup) {
	admin.POST("/tenants/:tenant/tokens", a.createToken)
	admin.GET("/tenants/:tenant/tokens", a.listTokens)
	admin.DELETE("/tokens/:id", a.revokeToken)
}

// pathTenant resolves the :tenant path parameter (a tenant ID or name); an
// unknown tenant answers 404 and returns nil.
func (a *API) pathTenant(c *gin.Context) *models.Tenant {
	t, err := a.store.FindTenant(c.Request.Context(), c.Param("tenant"))
	if err != nil {
		a.fail(c, err)
		return nil
	}
	return t
}

// createToken serves POST /tenants/{tenant}/tokens (admin): it issues a token
// and answers 201 with its secret, shown this once. Without ttl_seconds the
// token expires after TokenDefaultTTL.
func (a *API) createToken(c *gin.Context) {
	req, ok := decodeBody[input.CreateTokenRequest](a, c)
	if !ok {
		return
	}
	ten := a.pathTenant(c)
	if ten == nil {
		return
	}
	ttl := a.tokenTTL
	if req.TTLSeconds != nil {
		ttl = time.Duration(*req.TTLSeconds) * time.Second
	}
	p := models.NewTokenParams{TenantID: ten.ID, Name: req.Name, Scopes: req.Scopes}
	if ttl > 0 {
		exp := a.now().Add(ttl).UTC().Truncate(time.Second)
		p.ExpiresAt = &exp
	}
	ctx, cancel := mutationContext(c)
	defer cancel()
	secret, t, err := a.store.CreateToken(ctx, p)
	if err != nil {
		a.fail(c, err)
		return
	}
	a.log.InfoContext(ctx, "token created", "request_id", c.GetString(ctxRequestID), "actor", principal(c).TokenID,
		"tenant_id", t.TenantID, "token_id", t.ID, "scopes", t.Scopes)
	c.Header("Cache-Control", "no-store")
	c.JSON(201, CreatedToken{TokenView: tokenView(t), Token: secret})
}

// listTokens serves GET /tenants/{tenant}/tokens (admin): the tenant's tokens,
// newest first, revoked and expired ones included.
func (a *API) listTokens(c *gin.Context) {
	var verr input.ValidationError
	cursor, limit := pageParams(c, models.PrefixToken, &verr)
	if err := verr.Err(); err != nil {
		a.fail(c, err)
		return
	}
	ten := a.pathTenant(c)
	if ten == nil {
		return
	}
	list, err := a.store.ListTokens(c.Request.Context(), models.TokenFilter{TenantID: ten.ID, Cursor: cursor, Limit: limit + 1})
	if err != nil {
		a.fail(c, err)
		return
	}
	page := Page[TokenView]{Data: []TokenView{}}
	for i := range list {
		if i == limit {
			page.NextCursor = page.Data[limit-1].ID
			break
		}
		page.Data = append(page.Data, tokenView(&list[i]))
	}
	c.JSON(200, page)
}

// revokeToken serves DELETE /tokens/{id} (admin): it revokes the token and
// answers 200 with it. This process stops accepting it at once, the others
// within CHOM_TOKEN_CACHE_TTL. Revoking a revoked token changes nothing.
func (a *API) revokeToken(c *gin.Context) {
	id, ok := a.pathID(c, models.PrefixToken)
	if !ok {
		return
	}
	ctx, cancel := mutationContext(c)
	defer cancel()
	t, err := a.store.RevokeTokenByID(ctx, id)
	if err != nil {
		a.fail(c, err)
		return
	}
	a.tokens.forget(t.ID)
	a.log.InfoContext(ctx, "token revoked", "request_id", c.GetString(ctxRequestID), "actor", principal(c).TokenID,
		"tenant_id", t.TenantID, "token_id", t.ID)
	c.JSON(200, tokenView(t))
}
