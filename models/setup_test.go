package models_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/models"
)

// epoch is where every test clock starts: a fixed instant, so expiry and
// ordering tests do not depend on the wall clock.
var epoch = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// clock is a controllable time source for models.Config.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// setup migrates db and returns a Store over it whose clock is a fresh clock at epoch.
func setup(t *testing.T, db *bun.DB) *models.Store {
	t.Helper()
	s, _ := setupClock(t, db)
	return s
}

// setupClock is setup that also hands back the store's clock.
func setupClock(t *testing.T, db *bun.DB) (*models.Store, *clock) {
	t.Helper()
	if _, err := models.MigrateUp(t.Context(), db); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	c := &clock{now: epoch}
	s, err := models.New(models.Config{DB: db, Now: c.Now})
	if err != nil {
		t.Fatalf("models.New: %v", err)
	}
	return s, c
}

// tenant creates (or finds) the tenant called name and returns its ID.
func tenant(t *testing.T, s *models.Store, name string) string {
	t.Helper()
	ten, err := s.EnsureTenant(t.Context(), name)
	if err != nil {
		t.Fatalf("EnsureTenant(%q): %v", name, err)
	}
	return ten.ID
}

// count returns the number of rows of table matching where (all rows when where is "").
func count(t *testing.T, db bun.IDB, table, where string, args ...any) int {
	t.Helper()
	q := db.NewSelect().Table(table)
	if where != "" {
		q = q.Where(where, args...)
	}
	n, err := q.Count(t.Context())
	if err != nil {
		t.Fatalf("count %s where %q: %v", table, where, err)
	}
	return int(n)
}

// rowCounts is the number of rows in the tables every accepted mutation writes to.
type rowCounts struct {
	Sites, Operations, Audit, Keys, Outbox int
}

func counts(t *testing.T, db bun.IDB) rowCounts {
	t.Helper()
	return rowCounts{
		Sites:      count(t, db, "sites", ""),
		Operations: count(t, db, "operations", ""),
		Audit:      count(t, db, "audit_logs", ""),
		Keys:       count(t, db, "idempotency_keys", ""),
		Outbox:     count(t, db, "outbox_events", ""),
	}
}

// accept returns the Accept of a request by tenantID, with an optional key and hash.
func accept(tenantID, key, hash string) models.Accept {
	return models.Accept{
		TenantID: tenantID, Actor: "tok_test", RequestID: "req_" + key,
		IdempotencyKey: key, RequestHash: hash,
	}
}

// siteParams returns the parameters of a WordPress site on domain.
func siteParams(a models.Accept, domain string) models.CreateSiteParams {
	return models.CreateSiteParams{Accept: a, Domain: domain, SiteType: "wordpress", PHPVersion: "8.3"}
}

// createSite creates a site on domain for tenantID (no idempotency key) and returns
// its ID and provision operation.
func createSite(t *testing.T, s *models.Store, tenantID, domain string) (string, *models.Operation) {
	t.Helper()
	acc, err := s.CreateSite(t.Context(), siteParams(accept(tenantID, "", ""), domain))
	if err != nil {
		t.Fatalf("CreateSite(%s): %v", domain, err)
	}
	return acc.Operation.TargetID, acc.Operation
}

// activeSite creates a site on domain and completes its provision.
func activeSite(t *testing.T, s *models.Store, tenantID, domain string) string {
	t.Helper()
	siteID, op := createSite(t, s, tenantID, domain)
	if _, err := s.StartOperation(t.Context(), op.ID); err != nil {
		t.Fatalf("StartOperation: %v", err)
	}
	ok, err := s.CompleteProvision(t.Context(), op.ID, siteID, models.ProvisionedSite{}, nil, nil)
	if err != nil || !ok {
		t.Fatalf("CompleteProvision = %v, %v; want true, nil", ok, err)
	}
	return siteID
}

// registerVPS registers a shared server with capacity slots.
func registerVPS(t *testing.T, s *models.Store, hostname string, capacity int) *models.VPSServer {
	t.Helper()
	v, _, err := s.RegisterVPS(t.Context(), models.Accept{}, models.RegisterVPSParams{
		Hostname: hostname, IPAddress: "192.0.2.10", SSHPort: 22, Provider: "test", Region: "eu",
		Allocation: models.AllocationShared, SiteCapacity: capacity,
	})
	if err != nil {
		t.Fatalf("RegisterVPS(%s): %v", hostname, err)
	}
	return v
}

// siteCount reads a server's site_count column.
func siteCount(t *testing.T, db bun.IDB, vpsID string) int {
	t.Helper()
	var n int
	err := db.NewSelect().Table("vps_servers").Column("site_count").Where("id = ?", vpsID).Scan(t.Context(), &n)
	if err != nil {
		t.Fatalf("read site_count of %s: %v", vpsID, err)
	}
	return int(n)
}

// siteRow reads a site whatever its tenant.
func siteRow(t *testing.T, s *models.Store, id string) *models.Site {
	t.Helper()
	site, err := s.SiteByID(t.Context(), id)
	if err != nil {
		t.Fatalf("SiteByID(%s): %v", id, err)
	}
	return site
}

// opRow reads an operation whatever its tenant.
func opRow(t *testing.T, s *models.Store, id string) *models.Operation {
	t.Helper()
	op, err := s.OperationByID(t.Context(), id)
	if err != nil {
		t.Fatalf("OperationByID(%s): %v", id, err)
	}
	return op
}

// event returns an outbox event about siteID.
func event(tenantID, siteID, eventID string) models.OutboxEvent {
	return models.OutboxEvent{
		EventID: eventID, TenantID: tenantID, Topic: "sites.v1", Type: "site.provisioned.v1",
		Source: "/chom/sites", Subject: siteID, Data: "{}",
	}
}

// wantConflict fails unless err is a *models.ConflictError (and so ErrConflict).
func wantConflict(t *testing.T, err error) *models.ConflictError {
	t.Helper()
	var ce *models.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want a *models.ConflictError", err)
	}
	if !errors.Is(err, models.ErrConflict) {
		t.Fatalf("errors.Is(%v, ErrConflict) = false", err)
	}
	return ce
}

// decodeJSON decodes s into a value of type T.
func decodeJSON[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
	return v
}

// ptr returns a pointer to v.
func ptr[T any](v T) *T { return &v }

// deref prints a *string for messages.
func deref(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%q", *p)
}
