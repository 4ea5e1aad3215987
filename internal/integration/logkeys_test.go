package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chomhq/chom/drivers/local"
	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
	"github.com/chomhq/chom/workers"
)

// logLines parses every line written to buf so far as a JSON object, failing
// the test on any that is not one.
func logLines(t *testing.T, buf *testenv.SyncBuffer, name string) []map[string]any {
	t.Helper()
	raw := buf.String()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(raw))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s log line is not JSON (%v): %s", name, err, sc.Bytes())
		}
		out = append(out, m)
	}
	return out
}

// jsonLogger is what `chom` builds with CHOM_LOG_FORMAT=json and
// CHOM_LOG_LEVEL=debug (cmd/chom newLogger).
func jsonLogger(w *testenv.SyncBuffer) *slog.Logger {
	return slog.New(workers.TaskLogHandler(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})))
}

// Structured JSON logs carry request_id, tenant_id, operation_id and task_id:
// an ingress and a worker on real PostgreSQL and Redis, each logging JSON at
// debug level into a buffer, provision a site; the request's line carries the
// request and tenant IDs, and every line about the job (the worker's, the job
// handler's, the driver's) carries the operation, task and tenant IDs.
func TestLogLinesCarryIDs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.Postgres(t)
	if _, err := models.MigrateUp(ctx, db); err != nil {
		t.Fatal(err)
	}
	store, err := models.New(models.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	rdb := testenv.Redis(t)
	rc := rdb.Client(t)
	var apiBuf, workerBuf testenv.SyncBuffer
	apiLog, workerLog := jsonLogger(&apiBuf), jsonLogger(&workerBuf)

	tn, err := store.EnsureTenant(ctx, "logs")
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := store.CreateToken(ctx, models.NewTokenParams{TenantID: tn.ID, Name: "t", Scopes: []string{models.ScopeWrite}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.RegisterVPS(ctx, models.Accept{}, models.RegisterVPSParams{Hostname: "vps.logs.example",
		IPAddress: "127.0.0.1", SSHPort: 22, Provider: "local", Region: "test", Allocation: models.AllocationShared, SiteCapacity: 10}); err != nil {
		t.Fatal(err)
	}

	acceptor, err := models.NewSiteAcceptor(models.SiteAcceptorConfig{Store: store, Logger: apiLog.With("component", "acceptor")})
	if err != nil {
		t.Fatal(err)
	}
	testenv.RunInBackground(t, "acceptor", acceptor.Run)
	api, err := ingress.New(ingress.Config{Store: store, Sites: acceptor, Enqueuer: queue.NewEnqueuer(rc),
		Inspector: queue.NewInspector(rc), Logger: apiLog, TokenCacheTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)

	root, err := os.MkdirTemp("", "chom-vps-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	prov, err := local.New(local.Config{Root: root, Logger: workerLog.With("component", "driver")})
	if err != nil {
		t.Fatal(err)
	}
	deps := jobs.Deps{Store: store, Provisioner: prov, Notifier: queue.NewNotifier(rc), Logger: workerLog}
	provision, err := jobs.NewProvisionSite(deps)
	if err != nil {
		t.Fatal(err)
	}
	deprovision, err := jobs.NewDeprovisionSite(deps)
	if err != nil {
		t.Fatal(err)
	}
	reconciler, err := jobs.NewReconciler(jobs.ReconcilerConfig{Store: store, Inspector: queue.NewInspector(rc),
		Enqueuer: queue.NewEnqueuer(rc), Logger: workerLog.With("component", "reconciler"), Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	w, err := workers.New(workers.Config{Redis: rc, Logger: workerLog, Provision: provision, Deprovision: deprovision,
		Reconciler: reconciler, Concurrency: 2, PollInterval: 20 * time.Millisecond, ShutdownTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	stopWorker := testenv.RunInBackground(t, "worker", w.Run)

	const requestID = "req-logkeys-1"
	req, _ := http.NewRequest("POST", srv.URL+"/api/v1/sites", strings.NewReader(`{"domain":"logs.example","site_type":"html"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-ID", requestID)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var op ingress.OperationView
	err = json.NewDecoder(res.Body).Decode(&op)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /sites: %d %v", res.StatusCode, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := store.OperationByID(ctx, op.ID)
		if err != nil {
			t.Fatal(err)
		}
		if models.IsTerminal(got.Status) {
			if got.Status != models.OpSucceeded {
				t.Fatalf("operation %s: %s", op.ID, got.Status)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("operation %s still %s after 30s", op.ID, got.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopWorker() // its last lines ("task done") are written before Run returns

	var sawRequest bool
	for _, l := range logLines(t, &apiBuf, "ingress") {
		if l["msg"] != "http request" {
			continue
		}
		if id, _ := l["request_id"].(string); id == "" {
			t.Errorf("request line without request_id: %v", l)
		}
		if l["method"] == "POST" && l["route"] == "/api/v1/sites" {
			sawRequest = true
			if l["request_id"] != requestID || l["tenant_id"] != tn.ID {
				t.Errorf("POST /sites line: request_id %v, tenant_id %v; want %s, %s", l["request_id"], l["tenant_id"], requestID, tn.ID)
			}
		}
	}
	if !sawRequest {
		t.Errorf("no request line for POST /api/v1/sites in the ingress log:\n%s", apiBuf.String())
	}

	msgs := map[string]bool{}
	for _, l := range logLines(t, &workerBuf, "worker") {
		if l["task_id"] != op.ID && l["operation_id"] != op.ID {
			continue
		}
		msg, _ := l["msg"].(string)
		if c, ok := l["component"].(string); ok {
			msg = c + ": " + msg
		}
		msgs[msg] = true
		if l["task_id"] != op.ID || l["operation_id"] != op.ID || l["tenant_id"] != tn.ID {
			t.Errorf("job line %q: task_id %v, operation_id %v, tenant_id %v; want %s, %s, %s",
				msg, l["task_id"], l["operation_id"], l["tenant_id"], op.ID, op.ID, tn.ID)
		}
	}
	// The worker's own line, the job handler's and the driver's.
	for _, want := range []string{"task done", "site provisioned", "provision step done", "driver: site provisioned", "driver: provision step done"} {
		if !msgs[want] {
			t.Errorf("no job line %q carrying the IDs; job lines: %v\nworker log:\n%s", want, msgs, workerBuf.String())
		}
	}
}
