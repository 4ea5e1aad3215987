package ingress_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/models"
)

// fixedReads is a ReadRouter that always answers the same store and counts
// the reads it routed.
type fixedReads struct {
	store *models.Store
	n     atomic.Int64
}

func (r *fixedReads) Store(context.Context) *models.Store {
	r.n.Add(1)
	return r.store
}

// TestReadRouterServesPollsAndListings checks which routes read through
// Config.Reads: with a router that answers a store over another (empty)
// database, the polls and listings see that database, while authentication
// (the token lives only in the primary) and the backups route still read the
// primary.
func TestReadRouterServesPollsAndListings(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, primary, tn := tenantStore(t, "reads")
	_, other, _ := tenantStore(t, "other")
	tok, _, err := primary.CreateToken(ctx, models.NewTokenParams{TenantID: tn.ID, Name: "t", Scopes: []string{models.ScopeRead}})
	if err != nil {
		t.Fatal(err)
	}
	acc, err := primary.CreateSite(ctx, models.CreateSiteParams{Accept: models.Accept{TenantID: tn.ID, Actor: "tok", RequestID: "req"},
		Domain: "reads.example", SiteType: "html"})
	if err != nil {
		t.Fatal(err)
	}
	siteID, opID := acc.Operation.TargetID, acc.Operation.ID
	for _, tc := range []struct {
		name    string
		store   *models.Store
		want    int    // status of the by-ID reads
		listing string // what the listings must contain
	}{
		{"router answers the primary", primary, http.StatusOK, siteID},
		{"router answers another database", other, http.StatusNotFound, `"data":[]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reads := &fixedReads{store: tc.store}
			api, err := ingress.New(ingress.Config{Store: primary, Reads: reads, Enqueuer: nopEnqueuer{}, Inspector: nopInspector{},
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			get := func(path string) (int, string) {
				req := httptest.NewRequest("GET", "/api/v1"+path, nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				rec := httptest.NewRecorder()
				api.Handler().ServeHTTP(rec, req)
				return rec.Code, rec.Body.String()
			}
			for _, path := range []string{"/sites/" + siteID, "/operations/" + opID} {
				if code, body := get(path); code != tc.want {
					t.Errorf("GET %s = %d %s, want %d", path, code, body, tc.want)
				}
			}
			for _, path := range []string{"/sites", "/operations"} {
				if code, body := get(path); code != http.StatusOK || !strings.Contains(body, tc.listing) {
					t.Errorf("GET %s = %d %s, want 200 containing %s", path, code, body, tc.listing)
				}
			}
			if got := reads.n.Load(); got != 4 {
				t.Errorf("the router routed %d reads, want 4 (site, operation, and both listings)", got)
			}
			// Backups stay on the primary: the site is found there.
			if code, body := get("/sites/" + siteID + "/backups"); code != http.StatusOK {
				t.Errorf("GET /sites/{id}/backups = %d %s, want 200 (read from the primary)", code, body)
			}
		})
	}
}
