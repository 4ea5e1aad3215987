package stack

import (
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"testing"
	"time"

	"github.com/chomhq/chom/certs/seal"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// TestNewRenewSweep: the worker's sweep, built as the assembly builds it,
// starts a due renewal and its task reaches the real Redis under the
// operation's ID.
func TestNewRenewSweep(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb := testenv.Redis(t).Client(t)
	b, err := NewBackends(ctx, testenv.SQLite(t), rdb, BackendOptions{Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, seal.KeySize)
	_, _ = rand.Read(key)
	ring, err := seal.ParseKeys("k1:" + base64.StdEncoding.EncodeToString(key))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := models.NewCertificateStore(models.CertificateStoreConfig{Store: b.Store, Ring: ring})
	if err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewRenewSweep(c, &Backends{}, cs, nil, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("NewRenewSweep without a store and Redis: no error")
	}
	h, err := NewRenewSweep(c, b, cs, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}

	ten, err := b.Store.EnsureTenant(ctx, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Store.RegisterVPS(ctx, models.Accept{}, models.RegisterVPSParams{Hostname: "web1", IPAddress: "192.0.2.1",
		SSHPort: 22, Provider: "test", Region: "eu", Allocation: models.AllocationShared, SiteCapacity: 5}); err != nil {
		t.Fatal(err)
	}
	acc, err := b.Store.CreateSite(ctx, models.CreateSiteParams{Accept: models.Accept{TenantID: ten.ID, Actor: "tok_test"},
		Domain: "renew.example", SiteType: "static", HTTPS: models.HTTPSOff})
	if err != nil {
		t.Fatal(err)
	}
	siteID := acc.Operation.TargetID
	if _, err := b.Store.StartOperation(ctx, acc.Operation.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Store.AssignVPS(ctx, siteID); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.Store.CompleteProvision(ctx, acc.Operation.ID, siteID, models.ProvisionedSite{}, nil, nil); err != nil || !ok {
		t.Fatalf("CompleteProvision = %v, %v", ok, err)
	}
	nb, na, due := time.Now().Add(-80*24*time.Hour), time.Now().Add(10*24*time.Hour), time.Now().Add(-time.Minute)
	if err := cs.PutCertificate(ctx, models.SiteCertificate{SiteID: siteID, Status: models.CertificateIssued, Source: models.SourceACME,
		Domains: []string{"renew.example"}, Serial: "01", NotBefore: &nb, NotAfter: &na, RenewAfter: &due}); err != nil {
		t.Fatal(err)
	}
	rep, err := h.Sweep(ctx)
	if err != nil || rep.Started != 1 || rep.EnqueueFailed != 0 {
		t.Fatalf("Sweep = %+v, %v; want one renewal started and enqueued", rep, err)
	}
	ops, err := b.Store.UnfinishedOperations(ctx, time.Now().Add(time.Minute), 10)
	if err != nil {
		t.Fatal(err)
	}
	var renewal *models.Operation
	for i := range ops {
		if ops[i].Type == models.OpTypeCertificateIssue && ops[i].TargetID == siteID {
			renewal = &ops[i]
		}
	}
	if renewal == nil {
		t.Fatalf("no certificate.issue among %+v", ops)
	}
	_, spec, err := queue.TaskForOperation(renewal)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := queue.NewInspector(rdb).TaskState(ctx, spec.Queue, renewal.ID); err != nil || st == queue.TaskMissing {
		t.Errorf("task of %s in Redis: %v, %v; want it queued", renewal.ID, st, err)
	}
}
