package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chomhq/chom/ingress"
	assembly "github.com/chomhq/chom/internal/stack"
	"github.com/chomhq/chom/internal/stack/stacktest"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
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

// Structured JSON logs carry request_id, tenant_id, operation_id and task_id:
// the production wiring on real PostgreSQL and Redis, logging JSON at debug
// level (assembly.NewLogger with CHOM_LOG_FORMAT=json, CHOM_LOG_LEVEL=debug) into
// a buffer, provisions a site; the request's line carries the request and
// tenant IDs, and every line about the job (the worker's, the job handler's,
// the driver's) carries the operation, task and tenant IDs.
func TestLogLinesCarryIDs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var buf testenv.SyncBuffer
	log := assembly.NewLogger(&buf, assembly.Config{LogLevel: slog.LevelDebug, LogFormat: "json"})
	kit := stacktest.Start(t, stacktest.Options{DB: testenv.Postgres(t), Logger: log})
	store := kit.Store
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
	const requestID = "req-logkeys-1"
	req, _ := http.NewRequest("POST", kit.URL+"/api/v1/sites", strings.NewReader(`{"domain":"logs.example","site_type":"html"}`))
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
	// The worker logs "task done" after the handler marked the operation
	// finished: wait for that line rather than stop the worker.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(buf.String(), `"msg":"task done"`) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}

	var sawRequest bool
	for _, l := range logLines(t, &buf, "ingress") {
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
		t.Errorf("no request line for POST /api/v1/sites in the ingress log:\n%s", buf.String())
	}

	msgs := map[string]bool{}
	for _, l := range logLines(t, &buf, "worker") {
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
			t.Errorf("no job line %q carrying the IDs; job lines: %v\nworker log:\n%s", want, msgs, buf.String())
		}
	}
}
