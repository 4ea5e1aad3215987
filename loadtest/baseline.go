package loadtest

import (
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/models"
)

// BaselineConfig configures the naive accept handler.
type BaselineConfig struct {
	// DB must hold CHOM's schema (the operations table) and the tenant.
	DB *bun.DB
	// Redis receives the tasks. Use a database no CHOM worker reads: the
	// baseline's task type has no handler.
	Redis redis.UniversalClient
	// TenantID owns every operation the handler inserts.
	TenantID string
}

// BaselineTaskType is the type of the tasks the baseline enqueues.
const BaselineTaskType = "baseline"

// NewBaseline returns the naive per-request accept handler that issue 6 sets
// CHOM against, serving POST /api/v1/sites: bind and validate the JSON body
// with gin, INSERT one operation row, enqueue one asynq task whose ID is the
// operation's, answer 202 with the row. No auth, no idempotency, no site row,
// no grouping: one transaction and one Redis round trip per request, as a
// plain framework handler would do it. It puts gin in release mode, a
// process-wide setting.
func NewBaseline(cfg BaselineConfig) (http.Handler, error) {
	var errs []error
	if cfg.DB == nil {
		errs = append(errs, errors.New("loadtest: baseline: DB is required"))
	}
	if cfg.Redis == nil {
		errs = append(errs, errors.New("loadtest: baseline: Redis is required"))
	}
	if cfg.TenantID == "" {
		errs = append(errs, errors.New("loadtest: baseline: TenantID is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	client := asynq.NewClientFromRedisClient(cfg.Redis)
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	type body struct {
		Domain   string `json:"domain" binding:"required"`
		SiteType string `json:"site_type" binding:"required,oneof=wordpress laravel php html"`
	}
	r.POST("/api/v1/sites", func(c *gin.Context) {
		var req body
		if err := c.ShouldBindJSON(&req); err != nil {
			c.JSON(http.StatusUnprocessableEntity, gin.H{"error": err.Error()})
			return
		}
		now := time.Now().UTC()
		op := &models.Operation{ID: models.NewID(models.PrefixOperation), TenantID: cfg.TenantID, Type: models.OpTypeSiteProvision,
			Status: models.OpPending, TargetType: "site", TargetID: req.Domain, Payload: "{}", CreatedAt: now, UpdatedAt: now}
		if _, err := cfg.DB.NewInsert().Model(op).Exec(c.Request.Context()); err != nil {
			c.JSON(http.StatusInternalServerError, gin.H{"error": err.Error()})
			return
		}
		if _, err := client.EnqueueContext(c.Request.Context(), asynq.NewTask(BaselineTaskType, nil, asynq.TaskID(op.ID))); err != nil {
			c.JSON(http.StatusInternalServerError, gin.H{"error": err.Error()})
			return
		}
		c.JSON(http.StatusAccepted, op)
	})
	return r, nil
}
