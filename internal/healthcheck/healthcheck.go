// Package healthcheck probes a CHOM process's health endpoints over HTTP: it
// is `chom healthcheck`, the command a container image's HEALTHCHECK (or any
// supervisor without an HTTP client) runs beside the process, since the
// image has no shell and no curl.
package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// DefaultTimeout bounds one probe when Config.Timeout is zero: well under
// Docker's default HEALTHCHECK timeout of 30s, long enough for a busy process.
const DefaultTimeout = 3 * time.Second

// Config is what Probe checks.
type Config struct {
	// URLs are the endpoints to try; the process is healthy when any one of
	// them answers 200. Required.
	URLs []string
	// Timeout bounds the whole probe (DefaultTimeout when zero).
	Timeout time.Duration
	// Client makes the requests (a client without proxies when nil: the
	// endpoints are local, and HTTP_PROXY must not redirect a probe).
	Client *http.Client
}

// Probe GETs every URL at once and returns the first that answered 200. It
// fails with every URL's outcome when none did within the timeout, or when
// there is none to try.
func Probe(ctx context.Context, c Config) (string, error) {
	if len(c.URLs) == 0 {
		return "", errors.New("healthcheck: no endpoint to probe (the process's HTTP listeners are all disabled; pass --url)")
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	client := c.Client
	if client == nil {
		client = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	type result struct {
		url string
		err error
	}
	results := make(chan result, len(c.URLs))
	for _, u := range c.URLs {
		go func() { results <- result{u, get(ctx, client, u)} }()
	}
	var errs []error
	for range c.URLs {
		r := <-results
		if r.err == nil {
			return r.url, nil
		}
		errs = append(errs, r.err)
	}
	return "", fmt.Errorf("healthcheck: unhealthy: %w", errors.Join(errs...))
}

// get succeeds when url answers 200.
func get(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, res.Status)
	}
	return nil
}
