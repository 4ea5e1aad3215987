package ingress

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/chomhq/chom/ingress/input"
	"github.com/chomhq/chom/models"
)

// accept builds the common part of every mutation: actor, request ID and the
// Idempotency-Key with the fingerprint of the canonical request.
func (a *API) accept(c *gin.Context, canonical any) (models.Accept, error) {
	p := principal(c)
	acc := models.Accept{TenantID: p.TenantID, Actor: p.TokenID, RequestID: c.GetString(ctxRequestID)}
	key, present := c.Request.Header["Idempotency-Key"]
	if !present {
		return acc, nil
	}
	if len(key) != 1 {
		v := &input.ValidationError{}
		v.Add("Idempotency-Key", "must be sent once")
		return acc, v
	}
	if err := input.ValidIdempotencyKey(key[0]); err != nil {
		return acc, err
	}
	body, err := json.Marshal(canonical)
	if err != nil {
		return acc, err
	}
	h := sha256.New()
	h.Write([]byte(c.Request.Method + " " + c.Request.URL.Path + "\n"))
	h.Write(body)
	acc.IdempotencyKey = key[0]
	acc.RequestHash = hex.EncodeToString(h.Sum(nil))
	return acc, nil
}

// mutationTimeout bounds the transaction of a mutation.
const mutationTimeout = 10 * time.Second

// mutationContext detaches a mutation from the client's connection: once its
// transaction starts it runs to the end and its task is enqueued, even if the
// client hangs up, so a committed operation never waits for the reconciler just
// because its caller left.
func mutationContext(c *gin.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(c.Request.Context()), mutationTimeout)
}

// mutateByID is a mutation of the resource the path's :id names (prefix is its
// ID prefix; a malformed ID is a 404): it takes the Idempotency-Key with the ID
// as the request (as field), records the operation with do, enqueues its task
// and answers 202 with it.
func (a *API) mutateByID(c *gin.Context, prefix, field string, do func(context.Context, models.Accept, string) (*models.Accepted, error)) {
	id, ok := a.pathID(c, prefix)
	if !ok {
		return
	}
	acc, err := a.accept(c, map[string]string{field: id})
	if err != nil {
		a.fail(c, err)
		return
	}
	ctx, cancel := mutationContext(c)
	defer cancel()
	res, err := do(ctx, acc, id)
	if err != nil {
		a.fail(c, err)
		return
	}
	a.enqueue(c, res.Operation)
	writeAccepted(c, res.Operation)
}

// enqueue puts the operation's task on the queue after its row committed. A
// failure is logged, not returned: the operation is safe in the database; the
// assembly's enqueuer (queue.Backlog) retries it in the background, and the
// reconciler enqueues it later if that fails too (DESIGN.md, invariant 2).
func (a *API) enqueue(c *gin.Context, op *models.Operation) {
	if op.Status != models.OpPending {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), a.enqueueTimeout)
	defer cancel()
	if err := a.enqueuer.EnqueueOperation(ctx, op); err != nil {
		a.log.Warn("enqueue failed; retried in the background, then by the reconciler", "operation_id", op.ID,
			"request_id", c.GetString(ctxRequestID), "error", err)
	}
}

func (a *API) createSite(c *gin.Context) {
	req, ok := decodeBody[input.CreateSiteRequest](a, c)
	if !ok {
		return
	}
	acc, err := a.accept(c, req)
	if err != nil {
		a.fail(c, err)
		return
	}
	ctx, cancel := mutationContext(c)
	defer cancel()
	res, err := a.sites.CreateSite(ctx, models.CreateSiteParams{
		Accept: acc, Domain: req.Domain, Aliases: req.Aliases, SiteType: req.SiteType, PHPVersion: req.PHPVersion,
		HTTPS: req.HTTPS, HSTS: req.HSTS,
	})
	if err != nil {
		a.fail(c, err)
		return
	}
	if !res.Held {
		// A held provision waits for domain verification: the verification
		// enqueues it once the domains are proven.
		a.enqueue(c, res.Operation)
	}
	writeAccepted(c, res.Operation)
}

func (a *API) deleteSite(c *gin.Context) {
	a.mutateByID(c, models.PrefixSite, "site_id", a.store.DeleteSite)
}

func (a *API) getSite(c *gin.Context) {
	id, ok := a.pathID(c, models.PrefixSite)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	site, err := a.reader(ctx).GetSite(ctx, principal(c).TenantID, id)
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(200, site)
}

func (a *API) listSites(c *gin.Context) {
	var v input.ValidationError
	cursor, limit := pageParams(c, models.PrefixSite, &v)
	status := c.Query("status")
	oneOf(&v, "status", status, models.SiteStatusPending, models.SiteStatusPendingVerification, models.SiteStatusProvisioning, models.SiteStatusActive,
		models.SiteStatusFailed, models.SiteStatusDeprovisioning, models.SiteStatusDeleted)
	if err := v.Err(); err != nil {
		a.fail(c, err)
		return
	}
	ctx := c.Request.Context()
	sites, err := a.reader(ctx).ListSites(ctx, principal(c).TenantID,
		models.SiteFilter{Status: status, Cursor: cursor, Limit: limit})
	if err != nil {
		a.fail(c, err)
		return
	}
	page := Page[models.Site]{Data: sites}
	if page.Data == nil {
		page.Data = []models.Site{}
	}
	if len(sites) == limit {
		page.NextCursor = sites[len(sites)-1].ID
	}
	c.JSON(200, page)
}
