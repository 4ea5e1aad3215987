package ingress

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/chomhq/chom/queue"
)

// health is liveness: the process answers. It touches no dependency, so a
// database outage never makes an orchestrator kill healthy API processes.
func (a *API) health(c *gin.Context) {
	c.JSON(200, gin.H{"status": "ok"})
}

// CheckResult is one dependency's health.
type CheckResult struct {
	Status    string  `json:"status"` // "ok" or "down"
	LatencyMS float64 `json:"latency_ms"`
	Error     string  `json:"error,omitempty"`
}

// DetailedHealth is the body of /health/detailed.
type DetailedHealth struct {
	Status string                 `json:"status"` // "ok" or "degraded"
	Checks map[string]CheckResult `json:"checks"`
	Queues []queue.QueueDepth     `json:"queues,omitempty"`
}

// healthDetailed checks the database and Redis (with latencies) and reports queue
// depths; 503 when a dependency is down. Error texts are generic on purpose.
func (a *API) healthDetailed(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 3*time.Second)
	defer cancel()
	out := DetailedHealth{Status: "ok", Checks: map[string]CheckResult{}}
	check := func(name string, fn func(context.Context) error) bool {
		start := time.Now()
		err := fn(ctx)
		r := CheckResult{Status: "ok", LatencyMS: float64(time.Since(start).Microseconds()) / 1000}
		if err != nil {
			r.Status, r.Error = "down", name+" unreachable"
			out.Status = "degraded"
			a.log.Warn("health check failed", "dependency", name, "error", err)
		}
		out.Checks[name] = r
		return err == nil
	}
	check("database", a.store.Ping)
	if check("redis", a.inspector.Ping) {
		depths, err := a.inspector.Depths(ctx)
		if err == nil {
			out.Queues = depths
		}
	}
	status := http.StatusOK
	if out.Status != "ok" {
		status = http.StatusServiceUnavailable
		retryAfter(c, 5)
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(status, out)
}
