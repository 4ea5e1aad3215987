package acme

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// ChallTestSrvDNS is a DNSProvider over the management API of Pebble's
// pebble-challtestsrv: for tests and `chom dev`, never production.
type ChallTestSrvDNS struct {
	// ManagementURL is http://host:port of the management API.
	ManagementURL string
	// Client makes the requests; nil is http.DefaultClient.
	Client *http.Client
}

var _ DNSProvider = (*ChallTestSrvDNS)(nil)

// Present adds value to the TXT records of fqdn.
func (c *ChallTestSrvDNS) Present(ctx context.Context, fqdn, value string) error {
	return c.post(ctx, "/set-txt", map[string]string{"host": fqdn, "value": value})
}

// CleanUp removes the TXT records of fqdn (the server keeps one value per
// host, so all of them).
func (c *ChallTestSrvDNS) CleanUp(ctx context.Context, fqdn, _ string) error {
	return c.post(ctx, "/clear-txt", map[string]string{"host": fqdn})
}

func (c *ChallTestSrvDNS) post(ctx context.Context, path string, body any) error {
	if c.ManagementURL == "" {
		return errors.New("challtestsrv: no management URL")
	}
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.ManagementURL, "/")+path, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("challtestsrv %s: %w", path, err)
	}
	hc := c.Client
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("challtestsrv %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("challtestsrv %s: %s", path, resp.Status)
	}
	return nil
}
