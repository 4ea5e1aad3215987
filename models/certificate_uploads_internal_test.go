package models

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/certs/seal"
	"github.com/chomhq/chom/internal/testenv"
)

// epochForUploads is a fixed instant for the records these tests write.
var epochForUploads = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)

// uploadRing is a key ring of one fresh key called id.
func uploadRing(t *testing.T, id string) *seal.Ring {
	t.Helper()
	b := make([]byte, seal.KeySize)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	r, err := seal.ParseKeys(id + ":" + base64.StdEncoding.EncodeToString(b))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// httpsOffSite creates a site of tenantID on domain with aliases, HTTPS off
// (so no automatic issuance gets in the way), and, when active, places it on a
// server and completes its provision.
func httpsOffSite(t *testing.T, s *Store, tenantID, domain string, active bool, aliases ...string) string {
	t.Helper()
	ctx := t.Context()
	acc, err := s.CreateSite(ctx, CreateSiteParams{Accept: Accept{TenantID: tenantID, Actor: "tok_t", RequestID: "req"},
		Domain: domain, Aliases: aliases, SiteType: "html", HTTPS: HTTPSOff})
	if err != nil {
		t.Fatalf("CreateSite(%s): %v", domain, err)
	}
	siteID := acc.Operation.TargetID
	if !active {
		return siteID
	}
	if _, err := s.AssignVPS(ctx, siteID); err != nil {
		t.Fatalf("AssignVPS: %v", err)
	}
	if _, err := s.StartOperation(ctx, acc.Operation.ID); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.CompleteProvision(ctx, acc.Operation.ID, siteID, ProvisionedSite{}, nil, nil); err != nil || !ok {
		t.Fatalf("CompleteProvision = %v, %v", ok, err)
	}
	return siteID
}

// uploadRows counts what an upload writes.
type uploadRows struct{ Operations, Audit, Keys, Uploads, Records int }

func uploadCounts(t *testing.T, db bun.IDB) uploadRows {
	t.Helper()
	n := func(table string) int {
		c, err := db.NewSelect().Table(table).Count(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return int(c)
	}
	return uploadRows{n("operations"), n("audit_logs"), n("idempotency_keys"), n("certificate_uploads"), n("site_certificates")}
}

// TestCertificateUploads: an upload is one certificate.issue operation
// (reason upload) with its row, key sealed and bound to the operation and
// the site; every refusal writes nothing; a replayed key gives the same
// operation; Upload opens what was stored and nothing else; deleteUpload
// removes it.
func TestCertificateUploads(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, acme, other := batchSetup(t, db)
		if _, _, err := s.RegisterVPS(ctx, Accept{}, RegisterVPSParams{Hostname: "vps1.test.example", IPAddress: "192.0.2.1",
			SSHPort: 22, Provider: "test", Region: "eu", Allocation: AllocationShared, SiteCapacity: 10}); err != nil {
			t.Fatal(err)
		}
		cs, err := NewCertificateStore(CertificateStoreConfig{Store: s, Ring: uploadRing(t, "k1")})
		if err != nil {
			t.Fatal(err)
		}
		site := httpsOffSite(t, s, acme, "up.example", true, "www.up.example")
		idle := httpsOffSite(t, s, acme, "idle.example", false)
		chain, key := []byte("-----BEGIN CERTIFICATE-----\nchain\n"), []byte("-----BEGIN PRIVATE KEY-----\nsecret-key-bytes\n")
		var checked []string
		params := func(tenantID, siteID, idem, hash string) UploadParams {
			return UploadParams{Accept: Accept{TenantID: tenantID, Actor: "tok_t", RequestID: "req", IdempotencyKey: idem, RequestHash: hash},
				SiteID: siteID, ChainPEM: chain, KeyPEM: key, Check: func(d []string) error { checked = d; return nil }}
		}

		// Refusals first: each writes nothing.
		before := uploadCounts(t, db)
		refused := params(acme, site, "", "")
		bad := errors.New("the certificate does not cover up.example")
		refused.Check = func([]string) error { return bad }
		if _, err := cs.StartCertificateUpload(ctx, refused); !errors.Is(err, bad) {
			t.Errorf("refused by Check: err = %v, want Check's error", err)
		}
		if _, err := cs.StartCertificateUpload(ctx, params(other, site, "", "")); !errors.Is(err, ErrNotFound) {
			t.Errorf("another tenant's site: err = %v, want ErrNotFound", err)
		}
		var ce *ConflictError
		if _, err := cs.StartCertificateUpload(ctx, params(acme, idle, "", "")); !errors.As(err, &ce) || !strings.Contains(ce.Reason, "pending") {
			t.Errorf("a site not yet active: err = %v, want a ConflictError", err)
		}
		noCheck := params(acme, site, "", "")
		noCheck.Check = nil
		if _, err := cs.StartCertificateUpload(ctx, noCheck); err == nil {
			t.Error("an upload without a Check was accepted")
		}
		if after := uploadCounts(t, db); after != before {
			t.Fatalf("refused uploads wrote rows: before %+v, after %+v", before, after)
		}

		acc, err := cs.StartCertificateUpload(ctx, params(acme, site, "k-1", "h-1"))
		if err != nil {
			t.Fatal(err)
		}
		op := acc.Operation
		if diff := cmp.Diff([]string{"up.example", "www.up.example"}, checked); diff != "" {
			t.Errorf("Check saw (-want +got):\n%s", diff)
		}
		var payload CertificatePayload
		if err := json.Unmarshal([]byte(op.Payload), &payload); err != nil {
			t.Fatal(err)
		}
		if op.Type != OpTypeCertificateIssue || op.Status != OpPending || op.TargetID != site || payload.Reason != IssueUpload {
			t.Errorf("operation %+v, payload %+v", op, payload)
		}
		var action string
		if err := db.NewSelect().Table("audit_logs").Column("action").Where("operation_id = ?", op.ID).Scan(ctx, &action); err != nil || action != "certificate.upload" {
			t.Errorf("audit action %q, %v", action, err)
		}
		var row certificateUpload
		if err := db.NewSelect().Model(&row).Where("operation_id = ?", op.ID).Scan(ctx); err != nil {
			t.Fatal(err)
		}
		if row.SiteID != site || row.ChainPEM != string(chain) || !strings.HasPrefix(row.KeySealed, "v1:k1:") || strings.Contains(row.KeySealed, "secret") {
			t.Errorf("stored upload %+v: want the chain as is and the key sealed under k1", row)
		}
		gotChain, gotKey, err := cs.Upload(ctx, op.ID)
		if err != nil || string(gotChain) != string(chain) || string(gotKey) != string(key) {
			t.Errorf("Upload = %q, %q, %v", gotChain, gotKey, err)
		}
		// The site has a pending record now; the read path shows it with
		// the operation, without a key ring.
		v, err := s.TenantSiteCertificate(ctx, acme, site)
		if err != nil || v.Status != CertificatePending || v.Source != SourceUpload || v.OperationID != op.ID || v.KeySealed != "" || v.ChainPEM != "" {
			t.Errorf("TenantSiteCertificate = %+v, %v", v, err)
		}

		// The same key and request: the same operation, nothing new. The
		// same key, another request: a mismatch. Another upload while this
		// one is unfinished: a conflict naming it. None writes a row.
		before = uploadCounts(t, db)
		again, err := cs.StartCertificateUpload(ctx, params(acme, site, "k-1", "h-1"))
		if err != nil || !again.Replayed || again.Operation.ID != op.ID {
			t.Errorf("replay = %+v, %v; want operation %s replayed", again, err, op.ID)
		}
		if _, err := cs.StartCertificateUpload(ctx, params(acme, site, "k-1", "h-2")); !errors.Is(err, ErrIdempotencyMismatch) {
			t.Errorf("same key, other request: err = %v", err)
		}
		if _, err := cs.StartCertificateUpload(ctx, params(acme, site, "", "")); !errors.As(err, &ce) || ce.OperationID != op.ID {
			t.Errorf("second upload: err = %v, want a ConflictError naming %s", err, op.ID)
		}
		if after := uploadCounts(t, db); after != before {
			t.Fatalf("replayed or refused uploads wrote rows: before %+v, after %+v", before, after)
		}

		// The key is bound to its operation and site: a row moved to
		// another site does not open; a ring without the key does not
		// either; an operation without an upload is ErrNotFound.
		if _, err := db.NewUpdate().Table("certificate_uploads").Set("site_id = ?", idle).Where("operation_id = ?", op.ID).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if _, _, err := cs.Upload(ctx, op.ID); !errors.Is(err, seal.ErrOpen) {
			t.Errorf("upload moved to another site: err = %v, want seal.ErrOpen", err)
		}
		if _, err := db.NewUpdate().Table("certificate_uploads").Set("site_id = ?", site).Where("operation_id = ?", op.ID).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		otherRing, _ := NewCertificateStore(CertificateStoreConfig{Store: s, Ring: uploadRing(t, "k2")})
		var unknown *seal.UnknownKeyError
		if _, _, err := otherRing.Upload(ctx, op.ID); !errors.As(err, &unknown) {
			t.Errorf("a ring without k1: err = %v, want an UnknownKeyError", err)
		}
		if _, _, err := cs.Upload(ctx, site); !errors.Is(err, ErrNotFound) {
			t.Errorf("no upload: err = %v, want ErrNotFound", err)
		}

		// The finish deletes it, in its transaction; twice is harmless.
		for range 2 {
			if err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error { return deleteUpload(ctx, tx, op.ID) }); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := cs.Upload(ctx, op.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("after deleteUpload: err = %v, want ErrNotFound", err)
		}
	})
}

// TestTenantSiteCertificate: the read of GET …/certificate is scoped by
// tenant, answers ErrNotFound alike for no record, another tenant's site and
// a deleted one, never reads the key or the chain, and names the unfinished
// certificate operation.
func TestTenantSiteCertificate(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, acme, other := batchSetup(t, db)
		cs, err := NewCertificateStore(CertificateStoreConfig{Store: s, Ring: uploadRing(t, "k1")})
		if err != nil {
			t.Fatal(err)
		}
		site := httpsOffSite(t, s, acme, "read.example", false)
		if _, err := s.TenantSiteCertificate(ctx, acme, site); !errors.Is(err, ErrNotFound) {
			t.Errorf("no record: err = %v, want ErrNotFound", err)
		}
		rec := SiteCertificate{SiteID: site, Status: CertificateIssued, Source: SourceUpload, Issuer: "Test CA",
			Domains: []string{"read.example"}, Serial: "0abc", ChainPEM: "-----BEGIN CERTIFICATE-----", KeyPEM: []byte("secret key")}
		if err := cs.PutCertificate(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if err := cs.RecordCertificateError(ctx, site, "ca_refused", "no", epochForUploads); err != nil {
			t.Fatal(err)
		}
		v, err := s.TenantSiteCertificate(ctx, acme, site)
		if err != nil {
			t.Fatal(err)
		}
		if v.Status != CertificateIssued || v.Issuer != "Test CA" || v.Serial != "0abc" || !cmp.Equal(v.Domains, []string{"read.example"}) ||
			v.LastErrorCode != "ca_refused" || v.OperationID != "" {
			t.Errorf("record %+v", v)
		}
		if v.KeySealed != "" || len(v.KeyPEM) != 0 || v.ChainPEM != "" {
			t.Errorf("the read returned key or chain material: %+v", v)
		}
		if _, err := s.TenantSiteCertificate(ctx, other, site); !errors.Is(err, ErrNotFound) {
			t.Errorf("another tenant: err = %v, want ErrNotFound", err)
		}
		if _, err := db.NewUpdate().Table("sites").Set("status = ?", SiteStatusDeleted).Set("deleted_at = ?", epochForUploads).
			Where("id = ?", site).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.TenantSiteCertificate(ctx, acme, site); !errors.Is(err, ErrNotFound) {
			t.Errorf("deleted site: err = %v, want ErrNotFound", err)
		}
	})
}

// TestSiteHTTPSFieldsStored: https and hsts reach the sites table through
// both writers, one request at a time (Store.CreateSite) and in a batch
// (SiteAcceptor: the PostgreSQL unnest statement, bun's inserts on SQLite),
// and an omitted https is auto.
func TestSiteHTTPSFieldsStored(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		s, acme, _ := batchSetup(t, db)
		type mode struct {
			HTTPS string
			HSTS  bool
		}
		want := map[string]mode{}
		var batch []CreateSiteParams
		for i, m := range []mode{{HTTPSOff, true}, {"", false}, {HTTPSAuto, true}, {HTTPSOff, false}} {
			p := req(acme, "", "", "batch"+string(rune('a'+i))+".example")
			p.HTTPS, p.HSTS = m.HTTPS, m.HSTS
			batch = append(batch, p)
			if m.HTTPS == "" {
				m.HTTPS = HTTPSAuto
			}
			want[p.Domain] = m
		}
		for _, r := range oneBatch(t, s, batch) {
			if r.err != nil {
				t.Fatalf("batch: %v", r.err)
			}
		}
		one := req(acme, "", "", "single.example")
		one.HTTPS, one.HSTS = HTTPSOff, true
		if _, err := s.CreateSite(ctx, one); err != nil {
			t.Fatal(err)
		}
		want["single.example"] = mode{HTTPSOff, true}
		var sites []Site
		if err := db.NewSelect().Model(&sites).Scan(ctx); err != nil {
			t.Fatal(err)
		}
		got := map[string]mode{}
		for _, st := range sites {
			got[st.Domain] = mode{st.HTTPS, st.HSTS}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("stored modes (-want +got):\n%s", diff)
		}
	})
}
