package stack

import (
	"net"
	"net/url"
	"slices"
)

// APIHealthPath is the ingress's (and chom dev's) liveness endpoint on its
// API listener: 200 while it serves requests, without touching the database.
const APIHealthPath = "/api/v1/health"

// HealthURLs lists the health endpoints a CHOM process configured by c
// serves on this machine, for `chom healthcheck` to probe from beside it (a
// container's HEALTHCHECK runs in the process's network namespace, so
// loopback reaches it): APIHealthPath on CHOM_LISTEN (ingress, dev), then
// HealthPath on the /metrics listener of the worker, scheduler, relay and
// billing consumer (CHOM_METRICS_LISTEN, else each one's default). The
// prober does not know which role runs, so it gets them all; a process
// answers on exactly one. A wildcard or empty host becomes 127.0.0.1; an
// address that does not parse is left out.
func HealthURLs(c Config) []string {
	var urls []string
	add := func(addr, path string) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || port == "" || port == "0" {
			return
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			host = "127.0.0.1"
		}
		u := (&url.URL{Scheme: "http", Host: net.JoinHostPort(host, port), Path: path}).String()
		if !slices.Contains(urls, u) {
			urls = append(urls, u)
		}
	}
	add(c.Listen, APIHealthPath)
	for _, def := range []string{MetricsAddrWorker, MetricsAddrScheduler, MetricsAddrRelay, MetricsAddrBilling} {
		if addr := metricsAddr(c, def); addr != "" {
			add(addr, HealthPath)
		}
	}
	return urls
}
