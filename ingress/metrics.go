package ingress

import (
	"time"

	"github.com/gin-gonic/gin"
)

// MetricsPath is where the API serves Prometheus metrics when Config.Metrics is
// set: no authentication (Prometheus scrapes it), no tenant data in it, and it
// should not be reachable from the internet (block it at the load balancer).
const MetricsPath = "/metrics"

// observe is the outermost middleware: it counts the request in flight and, when
// it is answered, records its method, route template (gin's FullPath, empty and
// so "unmatched" for a 404 or 405 of the router, keeping the route label bounded),
// status and duration.
func (a *API) observe(c *gin.Context) {
	start := time.Now()
	inFlight := a.metrics.HTTPInFlight()
	inFlight.Inc()
	defer inFlight.Dec()
	c.Next()
	a.metrics.ObserveHTTP(c.Request.Method, c.FullPath(), c.Writer.Status(), time.Since(start))
}
