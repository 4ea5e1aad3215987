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
