package ingress

import (
	"github.com/gin-gonic/gin"

	"github.com/chomhq/chom/ingress/input"
	"github.com/chomhq/chom/models"
)

// QuotaView is a tenant's quota: the limits in force (0 = unlimited), the
// administrator's overrides (null: the platform default) and the usage that
// counts against them.
type QuotaView struct {
	TenantID       string            `json:"tenant_id"`
	MaxSites       int64             `json:"max_sites"`
	MaxBackups     int64             `json:"max_backups"`
	MaxBackupBytes int64             `json:"max_backup_bytes"`
	Overrides      QuotaOverrides    `json:"overrides"`
	Usage          models.QuotaUsage `json:"usage"`
}

// QuotaOverrides are a tenant's own limits; null: the platform default.
type QuotaOverrides struct {
	MaxSites       *int64 `json:"max_sites"`
	MaxBackups     *int64 `json:"max_backups"`
	MaxBackupBytes *int64 `json:"max_backup_bytes"`
}

func quotaView(q *models.Quota) QuotaView {
	return QuotaView{
		TenantID: q.TenantID, MaxSites: q.Limits.MaxSites, MaxBackups: q.Limits.MaxBackups, MaxBackupBytes: q.Limits.MaxBackupBytes,
		Overrides: QuotaOverrides{MaxSites: q.Overrides.MaxSites, MaxBackups: q.Overrides.MaxBackups, MaxBackupBytes: q.Overrides.MaxBackupBytes},
		Usage:     q.Usage,
	}
}

// quotaRoutes registers the quota routes on the admin group.
func (a *API) quotaRoutes(admin *gin.RouterGroup) {
	admin.PUT("/tenants/:tenant/quota", a.putQuota)
	admin.GET("/tenants/:tenant/quota", a.getQuota)
}

// putQuota serves PUT /tenants/{tenant}/quota (admin): it replaces the
// tenant's limits and answers 200 with its quota. Lowering a limit below the
// usage removes nothing; it refuses what would add more.
func (a *API) putQuota(c *gin.Context) {
	req, ok := decodeBody[input.QuotaRequest](a, c)
	if !ok {
		return
	}
	ten := a.pathTenant(c)
	if ten == nil {
		return
	}
	ctx, cancel := mutationContext(c)
	defer cancel()
	q, err := a.store.SetQuota(ctx, models.TenantQuota{TenantID: ten.ID, MaxSites: req.MaxSites, MaxBackups: req.MaxBackups, MaxBackupBytes: req.MaxBackupBytes})
	if err != nil {
		a.fail(c, err)
		return
	}
	a.log.InfoContext(ctx, "quota set", "request_id", c.GetString(ctxRequestID), "actor", principal(c).TokenID,
		"tenant_id", ten.ID, "max_sites", q.Limits.MaxSites, "max_backups", q.Limits.MaxBackups, "max_backup_bytes", q.Limits.MaxBackupBytes)
	c.JSON(200, quotaView(q))
}

// getQuota serves GET /tenants/{tenant}/quota (admin).
func (a *API) getQuota(c *gin.Context) {
	ten := a.pathTenant(c)
	if ten == nil {
		return
	}
	q, err := a.store.GetQuota(c.Request.Context(), ten.ID)
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(200, quotaView(q))
}
