package ingress

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/chomhq/chom/queue"
)

// The ops UI is a browser application authenticated with HTTP Basic
// credentials, which a browser attaches to every request to the origin, the
// forged ones included. So besides the token, a request that changes something
// must come from the UI's own pages (opsCrossSite), and the pages refuse to be
// framed (clickjacking) and run only the UI's own scripts (opsHeaders).

// opsHeaders sets the ops UI's security headers on every answer under
// /ops/queues, the 401 and 403 ones included.
func (a *API) opsHeaders(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", a.opsCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	c.Next()
}

// opsCrossSite refuses, with 403 before any token lookup, a request that
// changes something (any method but GET, HEAD and OPTIONS) unless it comes
// from the ops UI's own origin:
//   - Sec-Fetch-Site (set by the browser, never by a page's script) decides when
//     present: same-origin and none (typed by the user) pass, cross-site and
//     same-site are refused: a tenant's site under the same registrable domain
//     as the API is same-site, and no less hostile.
//   - Otherwise Origin decides when present: its host must be the request's
//     Host or Config.PublicURL's host (with its scheme); "null" never matches.
//   - With neither header, a request with Basic credentials is refused (a
//     browser, the only client that attaches credentials by itself, sends one
//     of them on every mutation since 2020; an older one gets no pass), and one
//     with a Bearer token passes: no browser attaches a Bearer token on its own,
//     so whoever sent it holds the token (curl, scripts).
func (a *API) opsCrossSite(c *gin.Context) {
	r := c.Request
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		c.Next()
		return
	}
	why := a.crossSiteReason(r)
	if why == "" {
		c.Next()
		return
	}
	a.metrics.CrossSiteRefused()
	writeProblem(c, Problem{Type: problemForbidden, Title: "Forbidden", Status: http.StatusForbidden,
		Detail: "cross-site request refused: " + why + "; the ops UI accepts changes only from its own pages (or with a Bearer token)"})
	c.Abort()
}

// crossSiteReason says why r is cross-site, or "" when it is not (see
// opsCrossSite).
func (a *API) crossSiteReason(r *http.Request) string {
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "same-origin", "none":
		return ""
	case "":
	default:
		return "Sec-Fetch-Site is " + site
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		scheme, _, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if strings.EqualFold(scheme, "basic") {
			return "a change with Basic credentials needs an Origin or Sec-Fetch-Site header"
		}
		return ""
	}
	if a.sameOrigin(origin, r.Host) {
		return ""
	}
	return "Origin " + origin + " is not this API's"
}

// sameOrigin reports whether the Origin header value names host (the request's
// Host header) or the scheme and host of Config.PublicURL.
func (a *API) sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	if host != "" && strings.EqualFold(u.Host, host) {
		return true
	}
	if a.publicURL == "" {
		return false
	}
	pu, err := url.Parse(a.publicURL)
	return err == nil && strings.EqualFold(u.Scheme, pu.Scheme) && strings.EqualFold(u.Host, pu.Host)
}

// inlineScript finds the inline <script> elements of the ops UI's page.
var inlineScript = regexp.MustCompile(`(?s)<script>(.*?)</script>`)

// opsContentSecurityPolicy builds the Content-Security-Policy of the ops UI
// from its handlers' own page: scripts from the origin plus the page's inline
// ones by their SHA-256 (asynqmon writes its settings and webpack's runtime
// inline; the settings differ between the full and read-only UI, so both
// pages are read), no other script; styles inline too (Material UI injects
// <style> elements) and Google Fonts (asynqmon's page loads Roboto and
// Material Icons from there); XHR only to the origin; no framing, plugins,
// base URL changes or form posts elsewhere.
func opsContentSecurityPolicy(handlers ...http.Handler) string {
	var hashes []string
	for _, h := range handlers {
		if h == nil {
			continue
		}
		w := &pageRecorder{header: http.Header{}}
		req, err := http.NewRequest(http.MethodGet, queue.OpsUIPath, nil)
		if err != nil {
			continue
		}
		h.ServeHTTP(w, req)
		for _, m := range inlineScript.FindAllSubmatch(w.body.Bytes(), -1) {
			sum := sha256.Sum256(m[1])
			hash := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
			if !slices.Contains(hashes, hash) {
				hashes = append(hashes, hash)
			}
		}
	}
	return strings.Join([]string{
		"default-src 'self'",
		"script-src 'self' " + strings.Join(hashes, " "),
		"style-src 'self' 'unsafe-inline' https://fonts.googleapis.com",
		"font-src 'self' https://fonts.gstatic.com",
		"img-src 'self' data:",
		"connect-src 'self'",
		"manifest-src 'self'",
		"object-src 'none'",
		"base-uri 'none'",
		"form-action 'self'",
		"frame-ancestors 'none'",
	}, "; ")
}

// pageRecorder is the http.ResponseWriter opsContentSecurityPolicy reads the
// UI's page with.
type pageRecorder struct {
	header http.Header
	body   bytes.Buffer
}

func (p *pageRecorder) Header() http.Header         { return p.header }
func (p *pageRecorder) Write(b []byte) (int, error) { return p.body.Write(b) }
func (p *pageRecorder) WriteHeader(int)             {}
