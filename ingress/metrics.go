package ingress

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/chomhq/chom/metrics"
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

// documentedRoutes returns every route of routes that the OpenAPI document
// describes, with the status codes the document lists for it: the documented
// label values of chom_http_requests_total, which New creates at zero
// (metrics.InitHTTP) so that request rates and 5xx ratios have series before
// the first request. Routes the document leaves out (GET /metrics, the ops UI)
// and response keys that are not a status code (default, 5XX) are skipped.
func documentedRoutes(routes []gin.RouteInfo) ([]metrics.HTTPRoute, error) {
	var doc struct {
		Servers []struct {
			URL string `json:"url"`
		} `json:"servers"`
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDocument, &doc); err != nil {
		return nil, fmt.Errorf("ingress: parse the OpenAPI document: %w", err)
	}
	base := ""
	if len(doc.Servers) > 0 {
		base = strings.TrimSuffix(doc.Servers[0].URL, "/")
	}
	var out []metrics.HTTPRoute
	for _, r := range routes {
		rest, ok := strings.CutPrefix(r.Path, base)
		if !ok {
			continue
		}
		raw, ok := doc.Paths[openAPIPath(rest)][strings.ToLower(r.Method)]
		if !ok {
			continue
		}
		var op struct {
			Responses map[string]json.RawMessage `json:"responses"`
		}
		if err := json.Unmarshal(raw, &op); err != nil {
			return nil, fmt.Errorf("ingress: OpenAPI operation %s %s: %w", r.Method, rest, err)
		}
		route := metrics.HTTPRoute{Method: r.Method, Route: r.Path}
		for code := range op.Responses {
			if n, err := strconv.Atoi(code); err == nil && n >= 100 && n <= 599 {
				route.Statuses = append(route.Statuses, n)
			}
		}
		slices.Sort(route.Statuses)
		out = append(out, route)
	}
	return out, nil
}

// openAPIPath turns a gin path template (/sites/:id, /files/*path) into the
// OpenAPI one (/sites/{id}, /files/{path}).
func openAPIPath(path string) string {
	parts := strings.Split(path, "/")
	for i, p := range parts {
		if len(p) > 1 && (p[0] == ':' || p[0] == '*') {
			parts[i] = "{" + p[1:] + "}"
		}
	}
	return strings.Join(parts, "/")
}
