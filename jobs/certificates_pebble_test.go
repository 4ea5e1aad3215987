package jobs_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chomhq/chom/certs/acme"
	"github.com/chomhq/chom/certs/seal"
	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
	"github.com/chomhq/chom/workers"
)

// webServer is a fleet of servers as Pebble sees them: every name resolves
// to 127.0.0.1 (challtestsrv), where this answers the HTTP-01 tokens the job
// put through the driver; deploys are counted.
type webServer struct {
	mu      sync.Mutex
	tokens  map[string]string
	deploys int
}

func (w *webServer) PutChallenge(_ context.Context, _ drivers.SiteSpec, token, keyAuth string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tokens[token] = keyAuth
	return nil
}

func (w *webServer) RemoveChallenge(_ context.Context, _ drivers.SiteSpec, token string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.tokens, token)
	return nil
}

func (w *webServer) DeployCertificate(context.Context, drivers.SiteSpec, drivers.TLSCertificate, drivers.TLSOptions) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.deploys++
	return nil
}

func (w *webServer) RemoveCertificate(context.Context, drivers.SiteSpec) error { return nil }

func (w *webServer) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w.mu.Lock()
	ka, ok := w.tokens[strings.TrimPrefix(r.URL.Path, "/.well-known/acme-challenge/")]
	w.mu.Unlock()
	if !ok {
		http.NotFound(rw, r)
		return
	}
	_, _ = io.WriteString(rw, ka)
}

// TestCertificateBurst is the issue's burst on a real CA (Pebble) and the
// real fleet-wide budget in PostgreSQL, at Let's Encrypt's limit of 50
// certificates per registered domain per week: 60 sites under one registered
// domain are provisioned at once and their automatic issuances run on twelve
// workers side by side. 50 are issued and deployed; the other 10 are
// deferred until the week's window has room (their operations running, no
// retry spent, their records pending with the reason); none fails.
func TestCertificateBurst(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := testenv.Postgres(t)
	if _, err := models.MigrateUp(ctx, db); err != nil {
		t.Fatal(err)
	}
	store, err := models.New(models.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.RegisterVPS(ctx, models.Accept{}, models.RegisterVPSParams{Hostname: "web1.example", IPAddress: "192.0.2.1",
		SSHPort: 22, Provider: "test", Region: "eu", Allocation: models.AllocationShared, SiteCapacity: 100}); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	ring, err := seal.ParseKeys("k1:" + base64.StdEncoding.EncodeToString(key))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := models.NewCertificateStore(models.CertificateStoreConfig{Store: store, Ring: ring}) // Let's Encrypt's limits
	if err != nil {
		t.Fatal(err)
	}
	dns := testenv.StartChallTestSrv(t)
	pebble := testenv.StartPebble(t, dns, testenv.PebbleOptions{})
	web := &webServer{tokens: map[string]string{}}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(pebble.HTTPPort)))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: web, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	log := slog.New(slog.DiscardHandler)
	acme.SetLegoLogger(log) // lego's own lines, as main sends them to the process's log at Warn
	issuer, err := acme.New(acme.Config{DirectoryURL: pebble.DirectoryURL, Email: "ops@chom.test",
		Accounts: acme.StoreAccounts{Store: cs}, Budget: cs, Logger: log,
		HTTPClient: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: pebble.ClientTLS.Clone()}}})
	if err != nil {
		t.Fatal(err)
	}
	handler, err := jobs.NewIssueCertificate(jobs.IssueCertificateConfig{Store: store, Certs: cs, Issuer: issuer,
		Deployer: web, Notifier: jobs.NopNotifier{}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	enq := &orderedEnqueuer{}
	prov, err := jobs.NewProvisionSite(jobs.Deps{Store: store, Provisioner: &countingProvisioner{provisions: map[string]int{},
		deprovisions: map[string]int{}}, Notifier: jobs.NopNotifier{}, Logger: log, Enqueuer: enq, IssueCertificates: true})
	if err != nil {
		t.Fatal(err)
	}
	ten, err := store.EnsureTenant(ctx, "burst")
	if err != nil {
		t.Fatal(err)
	}
	const sites, workersN = 60, 12
	for i := range sites {
		acc, err := store.CreateSite(ctx, models.CreateSiteParams{Accept: models.Accept{TenantID: ten.ID, Actor: "tok"},
			Domain: fmt.Sprintf("s%02d.burst.example", i), SiteType: "html"})
		if err != nil {
			t.Fatal(err)
		}
		task, _, err := queue.TaskForOperation(acc.Operation)
		if err != nil {
			t.Fatal(err)
		}
		if err := prov.ProcessTask(ctx, task); err != nil {
			t.Fatal(err)
		}
	}
	issues := enq.take()
	if len(issues) != sites {
		t.Fatalf("%d provisions started %d issuances", sites, len(issues))
	}

	start := time.Now()
	work := make(chan *models.Operation)
	var mu sync.Mutex
	deferred := map[string]time.Time{} // operation → when it may run again
	var wg sync.WaitGroup
	for range workersN {
		wg.Go(func() {
			for op := range work {
				task, _, err := queue.TaskForOperation(op)
				if err != nil {
					t.Error(err)
					continue
				}
				err = handler.ProcessTask(ctx, task)
				var ra interface{ RetryAt() time.Time }
				switch {
				case err == nil:
				case !workers.IsFailure(err) && errors.As(err, &ra):
					mu.Lock()
					deferred[op.ID] = ra.RetryAt()
					mu.Unlock()
				default:
					t.Errorf("issuance %s: %v", op.ID, err)
				}
			}
		})
	}
	for _, op := range issues {
		work <- op
	}
	close(work)
	wg.Wait()
	took := time.Since(start)

	var issued, pending, failed int
	for _, op := range issues {
		got, err := store.OperationByID(ctx, op.ID)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := cs.CertificateBySite(ctx, op.TargetID)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case got.Status == models.OpSucceeded && rec.Status == models.CertificateIssued:
			issued++
		case got.Status == models.OpRunning && rec.Status == models.CertificatePending && rec.LastErrorCode == acme.CodeDeferred:
			pending++
			if at, ok := deferred[op.ID]; !ok || time.Until(at) < 7*24*time.Hour-time.Hour {
				t.Errorf("site %s deferred until %v; want the week's window", op.TargetID, at)
			}
		default:
			failed++
			t.Errorf("site %s: operation %s, certificate %s %s", op.TargetID, got.Status, rec.Status, rec.LastErrorCode)
		}
	}
	n, err := cs.BudgetUse(ctx, "cert", "burst.example")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d sites under burst.example on %d workers: %d issued and deployed, %d deferred, %d failed in %v; the ledger counts %d",
		sites, workersN, issued, pending, failed, took.Round(time.Millisecond), n)
	if issued != 50 || pending != 10 || failed != 0 || n != 50 || web.deploys != 50 {
		t.Errorf("issued %d, deferred %d, failed %d, ledger %d, deploys %d; want 50, 10, 0, 50, 50", issued, pending, failed, n, web.deploys)
	}
}
