package ingress

import (
	"errors"

	"github.com/gin-gonic/gin"

	"github.com/chomhq/chom/ingress/input"
	"github.com/chomhq/chom/models"
)

// registerVPS serves POST /vps (admin): it records the server at once and answers
// 201 with it. The hostname is unique, so repeating the request is a 409, unless
// it carries the same Idempotency-Key: then it answers 200 with the same server.
func (a *API) registerVPS(c *gin.Context) {
	req, ok := decodeBody[input.RegisterVPSRequest](a, c)
	if !ok {
		return
	}
	acc, err := a.accept(c, req)
	if err != nil {
		a.fail(c, err)
		return
	}
	p := models.RegisterVPSParams{
		Hostname: req.Hostname, IPAddress: req.IPAddress, SSHPort: *req.SSHPort, Provider: req.Provider,
		Region: req.Region, Allocation: req.Allocation, SiteCapacity: *req.SiteCapacity, HostKey: input.Pin(req.HostKey),
	}
	if req.TenantID != "" {
		p.TenantID = &req.TenantID
	}
	ctx, cancel := mutationContext(c)
	defer cancel()
	v, replayed, err := a.store.RegisterVPS(ctx, acc, p)
	if errors.Is(err, models.ErrNotFound) && p.TenantID != nil {
		verr := &input.ValidationError{}
		verr.Add("tenant_id", "names no tenant")
		err = verr
	}
	if err != nil {
		a.fail(c, err)
		return
	}
	c.Header("Location", "/api/v1/vps/"+v.ID)
	if !replayed && v.HostKeySHA256 != "" {
		a.log.InfoContext(c.Request.Context(), "ssh host key pinned", "vps_id", v.ID, "fingerprint", v.HostKeySHA256, "source", "registration")
	}
	if replayed {
		c.JSON(200, v) // the server the same request registered before
		return
	}
	c.JSON(201, v)
}

// pinVPSHostKey serves PUT /vps/{id}/host-key (admin): it replaces the
// server's pinned SSH host key after a planned key change (a reinstall, a
// rotated key) and answers 200 with the server. Workers dial with the new pin
// from their next connection; a pooled connection made under the old pin is
// never reused for it.
func (a *API) pinVPSHostKey(c *gin.Context) {
	id, ok := a.pathID(c, models.PrefixVPS)
	if !ok {
		return
	}
	req, ok := decodeBody[input.PinHostKeyRequest](a, c)
	if !ok {
		return
	}
	ctx, cancel := mutationContext(c)
	defer cancel()
	v, err := a.store.RepinHostKey(ctx, id, input.Pin(req.HostKey))
	if err != nil {
		a.fail(c, err)
		return
	}
	a.log.InfoContext(c.Request.Context(), "ssh host key pinned", "vps_id", v.ID, "fingerprint", v.HostKeySHA256, "source", "admin")
	c.JSON(200, v)
}

func (a *API) getVPS(c *gin.Context) {
	id, ok := a.pathID(c, models.PrefixVPS)
	if !ok {
		return
	}
	v, err := a.store.GetVPS(c.Request.Context(), id)
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(200, v)
}

func (a *API) listVPS(c *gin.Context) {
	var verr input.ValidationError
	cursor, limit := pageParams(c, models.PrefixVPS, &verr)
	if err := verr.Err(); err != nil {
		a.fail(c, err)
		return
	}
	list, err := a.store.ListVPS(c.Request.Context(), cursor, limit)
	if err != nil {
		a.fail(c, err)
		return
	}
	page := Page[models.VPSServer]{Data: list}
	if page.Data == nil {
		page.Data = []models.VPSServer{}
	}
	if len(list) == limit {
		page.NextCursor = list[len(list)-1].ID
	}
	c.JSON(200, page)
}

// checkVPSHealth serves POST /vps/{id}/health-check (admin): it records an
// on-demand health check as an operation of the caller's tenant and answers 202
// with it; the check's result is the operation's result, and it counts towards
// the server's hysteresis like a sweep check. An unknown server is a 404.
func (a *API) checkVPSHealth(c *gin.Context) {
	a.mutateByID(c, models.PrefixVPS, "vps_id", a.store.RequestHealthCheck)
}
