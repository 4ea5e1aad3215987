package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// The download link is absolute: `curl "$url"` works as given. The test
// fetches the returned URL as is with a plain http.Get (no base URL joined
// to it, no token) and gets the archive's bytes.
func TestDownloadLinkWorksAsGiven(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{})
		s.needBackups()
		op := s.createSite(s.tokenA, "curl.example", "html")
		if done := s.waitOp(s.tokenA, op.ID); done.Status != models.OpSucceeded {
			t.Fatalf("provision %s", done.Status)
		}
		bop := accepted(t, s.do("POST", "/api/v1/sites/"+op.TargetID+"/backups", s.tokenA, map[string]any{"type": "files"}))
		if done := s.waitOp(s.tokenA, bop.ID); done.Status != models.OpSucceeded {
			t.Fatalf("backup %s: %+v", done.Status, done.Error)
		}
		bk := s.backup(t, s.tokenA, bop.TargetID)

		r := s.do("GET", "/api/v1/backups/"+bk.ID+"/download", s.tokenA, nil)
		if r.status != http.StatusOK {
			t.Fatalf("download link: %d %s", r.status, r.body)
		}
		var link ingress.DownloadLink
		r.json(t, &link)
		// Without a configured public URL: the request's own scheme and host.
		if want := s.url + "/api/v1/backups/" + bk.ID + "/archive?"; !strings.HasPrefix(link.URL, want) {
			t.Fatalf("url = %q, want it to start with %q", link.URL, want)
		}

		res, err := http.Get(link.URL)
		if err != nil {
			t.Fatalf("GET %s: %v", link.URL, err)
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/gzip" {
			t.Fatalf("GET the link as given: %d %s %s", res.StatusCode, res.Header.Get("Content-Type"), body)
		}
		if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != bk.SHA256 || int64(len(body)) != bk.SizeBytes {
			t.Fatalf("downloaded %d bytes that do not match the recorded archive (%d bytes, sha256 %s)", len(body), bk.SizeBytes, bk.SHA256)
		}
	})
}

// CHOM_PUBLIC_URL, read by the production loader, is the base of the link:
// behind a proxy the link names the proxy, path prefix included.
func TestDownloadLinkUsesPublicURL(t *testing.T) {
	t.Parallel()
	s := newStack(t, testenv.Postgres(t), stackOpts{env: map[string]string{"CHOM_PUBLIC_URL": "https://api.example.com/chom/"}})
	op := s.createSite(s.tokenA, "public-url.example", "html")
	if done := s.waitOp(s.tokenA, op.ID); done.Status != models.OpSucceeded {
		t.Fatalf("provision %s", done.Status)
	}
	bop := accepted(t, s.do("POST", "/api/v1/sites/"+op.TargetID+"/backups", s.tokenA, map[string]any{"type": "files"}))
	if done := s.waitOp(s.tokenA, bop.ID); done.Status != models.OpSucceeded {
		t.Fatalf("backup %s: %+v", done.Status, done.Error)
	}
	var link ingress.DownloadLink
	s.do("GET", "/api/v1/backups/"+bop.TargetID+"/download", s.tokenA, nil).json(t, &link)
	if want := "https://api.example.com/chom/api/v1/backups/" + bop.TargetID + "/archive?"; !strings.HasPrefix(link.URL, want) {
		t.Fatalf("url = %q, want it to start with %q", link.URL, want)
	}
}
