package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RouteUnmatched is the route label of a request no route matched (a 404 or 405
// from the router), so arbitrary paths never become label values.
const RouteUnmatched = "unmatched"

// MethodOther is the method label of a request whose method is not a standard
// HTTP one, for the same reason.
const MethodOther = "OTHER"

type httpKey struct {
	method, route string
	status        int
}

type httpChild struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// ObserveHTTP records one answered request: route is the matched route template
// (gin's FullPath, e.g. /api/v1/sites/:id), empty when none matched. The label
// values are bounded whatever the client sends: unknown methods are OTHER and an
// empty route is unmatched. It allocates nothing once a (method, route, status)
// has been seen, since the accept path calls it ~10k times a second.
func (m *Metrics) ObserveHTTP(method, route string, status int, d time.Duration) {
	k := httpKey{method: methodLabel(method), route: route, status: status}
	if k.route == "" {
		k.route = RouteUnmatched
	}
	m.httpMu.RLock()
	c, ok := m.httpChildren[k]
	m.httpMu.RUnlock()
	if !ok {
		c = m.httpChild(k)
	}
	c.requests.Inc()
	c.duration.Observe(d.Seconds())
}

func (m *Metrics) httpChild(k httpKey) httpChild {
	m.httpMu.Lock()
	defer m.httpMu.Unlock()
	if c, ok := m.httpChildren[k]; ok {
		return c
	}
	c := httpChild{
		requests: m.httpRequests.WithLabelValues(k.method, k.route, strconv.Itoa(k.status)),
		duration: m.httpDuration.WithLabelValues(k.method, k.route),
	}
	m.httpChildren[k] = c
	return c
}

// HTTPInFlight is the gauge of requests being served; a middleware adds one when
// a request starts and subtracts it (deferred) when it ends.
func (m *Metrics) HTTPInFlight() prometheus.Gauge { return m.httpInFlight }

// methodLabel returns method when it is a standard HTTP method, else OTHER.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete,
		http.MethodHead, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return method
	}
	return MethodOther
}

// HTTPRoute is one route of the API with the status codes its documentation
// (the OpenAPI document) says it answers.
type HTTPRoute struct {
	// Method is the HTTP method (GET, POST…).
	Method string
	// Route is the route template, as ObserveHTTP receives it
	// (/api/v1/sites/:id).
	Route string
	// Statuses are the documented status codes of the route.
	Statuses []int
}

// InitHTTP creates, at zero, chom_http_requests_total{method,route,status} for
// every documented status of every route and
// chom_http_request_duration_seconds{method,route} for every route, so that
// request rates and 5xx ratios read 0 from the first scrape instead of nothing
// until a route was first called. The label set stays bounded: it is the
// routes and statuses the caller documents (the ingress passes its OpenAPI
// document's operations and responses); an undocumented status, an unmatched
// path or a route left out (GET /metrics, the ops UI) still gets its series on
// first use. A nil Metrics does nothing.
func (m *Metrics) InitHTTP(routes []HTTPRoute) {
	if m == nil {
		return
	}
	for _, r := range routes {
		method := methodLabel(r.Method)
		route := r.Route
		if route == "" {
			route = RouteUnmatched
		}
		if len(r.Statuses) == 0 {
			m.httpDuration.WithLabelValues(method, route)
		}
		for _, status := range r.Statuses {
			m.httpChild(httpKey{method: method, route: route, status: status})
		}
	}
}
