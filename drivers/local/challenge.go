package local

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/chomhq/chom/drivers"
)

// ChallengePathPrefix is where HTTP-01 challenges are asked for (RFC 8555
// §8.3): the token follows it.
const ChallengePathPrefix = "/.well-known/acme-challenge/"

// Challenge returns the key authorization a server's nginx would answer for
// http://<host>/.well-known/acme-challenge/<token>: the file PutChallenge
// wrote as acme/<domain>/<token> in the server directory whose server block
// for <domain> (nginx/sites-enabled/<domain>.conf) names host in its
// server_name, so an alias answers with its site's tokens. host may carry a
// port; it is matched without it, case-insensitively.
//
// It reads only: no lock is taken (PutChallenge writes atomically, so a
// token is seen whole or not at all). Every server directory under Root is
// looked at and every server block read on each call, which suits the few
// sites of `chom dev`. An unknown host, a host no server block names, a
// malformed token or a token not put: an error wrapping fs.ErrNotExist. A
// server marked down (DownMarker) that serves host: an error wrapping
// drivers.ErrUnreachable.
func (p *Provisioner) Challenge(host, token string) ([]byte, error) {
	if err := drivers.ValidateChallengeToken(token); err != nil {
		return nil, fmt.Errorf("local: challenge: %w: %w", fs.ErrNotExist, err)
	}
	host = normalHost(host)
	if err := drivers.ValidateDomain(host); err != nil {
		return nil, fmt.Errorf("local: challenge: %w: %w", fs.ErrNotExist, err)
	}
	servers, err := os.ReadDir(p.root)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("local: challenge for %s: no servers yet: %w", host, err)
		}
		return nil, fmt.Errorf("local: challenge for %s: %w", host, err)
	}
	var down error
	for _, s := range servers { // sorted by name: the same server wins every time
		if !s.IsDir() {
			continue
		}
		server := filepath.Join(p.root, s.Name())
		domain, err := servedBy(server, host)
		if err != nil || domain == "" {
			continue
		}
		if err := checkUp(server); err != nil {
			down = err
			continue
		}
		dir := filepath.Join(server, "acme", domain)
		if filepath.Dir(dir) != filepath.Join(server, "acme") || !inside(server, dir) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, token))
		if err == nil {
			return b, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("local: challenge for %s: %w", host, err)
		}
	}
	if down != nil {
		return nil, fmt.Errorf("local: challenge for %s: %w", host, down)
	}
	return nil, fmt.Errorf("local: challenge for %s: token %s: %w", host, token, fs.ErrNotExist)
}

// servedBy returns the domain of the server block in server's sites-enabled
// that names host, or "" when none does. A block that fails the reload
// check's syntax is skipped, as nginx would never have loaded it.
func servedBy(server, host string) (string, error) {
	dir := filepath.Join(server, "nginx", "sites-enabled")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".conf") {
			continue
		}
		domain := strings.TrimSuffix(name, ".conf")
		if drivers.ValidateDomain(domain) != nil {
			continue
		}
		conf, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue // removed meanwhile
		}
		names, err := checkServerBlocks(conf)
		if err != nil {
			continue
		}
		if slices.Contains(names, host) {
			return domain, nil
		}
	}
	return "", nil
}

// normalHost is host without its port, lowercase, without a trailing dot.
func normalHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.TrimSuffix(strings.ToLower(host), ".")
}

// ChallengeHandler serves Challenge over HTTP, as the servers' nginx serves
// /.well-known/acme-challenge/ on port 80: GET or HEAD of
// /.well-known/acme-challenge/<token> with the Host header naming the site
// answers the key authorization (text/plain, 200). An unknown host or token,
// or any other path: 404. Another method: 405. A server marked down: 503.
// `chom dev`'s development CA sends its HTTP-01 validations here.
func (p *Provisioner) ChallengeHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.URL.Path, ChallengePathPrefix)
		if !ok || token == "" || strings.Contains(token, "/") {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		b, err := p.Challenge(r.Host, token)
		switch {
		case errors.Is(err, drivers.ErrUnreachable):
			http.Error(w, "server down", http.StatusServiceUnavailable)
			return
		case errors.Is(err, fs.ErrNotExist):
			http.NotFound(w, r)
			return
		case err != nil:
			p.logger.ErrorContext(r.Context(), "serve acme challenge", "host", r.Host, "error", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Cache-Control", "no-store")
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(b)
	})
}
