package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/models"
)

// Idempotency-Key, as in the IETF draft: the same key and body give the same
// operation (202 again, nothing new written); the same key with another body is a
// 422 naming the header; keys are per tenant.
func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true})
		first := s.createSite(s.tokenA, "idem.example", "html", "Idempotency-Key", "key-1")
		// Same request, keys in another order and other spacing: the same request.
		r := s.do("POST", "/api/v1/sites", s.tokenA, `{ "site_type" : "html",  "domain":"IDEM.example" }`, "Idempotency-Key", "key-1")
		if r.status != http.StatusAccepted {
			t.Fatalf("replay: %d %s", r.status, r.body)
		}
		var again ingress.OperationView
		r.json(t, &again)
		if again.ID != first.ID {
			t.Fatalf("replay gave operation %s, want %s", again.ID, first.ID)
		}
		r = s.do("POST", "/api/v1/sites", s.tokenA, map[string]string{"domain": "other.example", "site_type": "html"}, "Idempotency-Key", "key-1")
		assertProblem(t, r, http.StatusUnprocessableEntity, "Idempotency-Key")
		if n := s.count("operations", ""); n != 1 {
			t.Errorf("operations = %d, want 1", n)
		}
		if n := s.count("sites", ""); n != 1 {
			t.Errorf("sites = %d, want 1", n)
		}
		// Tenant B's key-1 is its own.
		b := s.createSite(s.tokenB, "idem-b.example", "html", "Idempotency-Key", "key-1")
		if b.ID == first.ID {
			t.Fatal("tenant B replayed tenant A's operation")
		}
		// DELETE with a key replays too, even once the site is gone.
		s.startWorker()
		s.waitOp(s.tokenA, first.ID)
		d1 := s.do("DELETE", "/api/v1/sites/"+first.TargetID, s.tokenA, nil, "Idempotency-Key", "del-1")
		var del ingress.OperationView
		d1.json(t, &del)
		s.waitOp(s.tokenA, del.ID)
		d2 := s.do("DELETE", "/api/v1/sites/"+first.TargetID, s.tokenA, nil, "Idempotency-Key", "del-1")
		var del2 ingress.OperationView
		d2.json(t, &del2)
		if d2.status != http.StatusAccepted || del2.ID != del.ID {
			t.Fatalf("DELETE replay: %d %s", d2.status, d2.body)
		}
	})
}

// assertProblem checks an RFC 9457 answer: status, content type, and (when field
// is not empty) that the offending field is named.
func assertProblem(t *testing.T, r response, status int, field string) ingress.Problem {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d: %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var p ingress.Problem
	r.json(t, &p)
	if p.Status != status || p.Type == "" || p.Title == "" {
		t.Errorf("problem = %+v", p)
	}
	if field != "" {
		found := false
		for _, e := range p.Errors {
			found = found || e.Field == field
		}
		if !found {
			t.Errorf("problem does not name field %q: %s", field, r.body)
		}
	}
	return p
}

// Each class of bad input gets a clear 4xx problem naming the field, and none of
// them changes anything.
func TestBadInput(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true})
		site := s.createSite(s.tokenA, "exists.example", "html")
		before := s.snapshot()
		big := `{"domain":"a.example","site_type":"html","x":"` + strings.Repeat("a", 70<<10) + `"}`
		cases := []struct {
			name         string
			method, path string
			body         string
			headers      []string
			status       int
			field        string
		}{
			{"malformed JSON", "POST", "/api/v1/sites", `{"domain":`, nil, 400, ""},
			{"not an object", "POST", "/api/v1/sites", `["a"]`, nil, 400, ""},
			{"empty body", "POST", "/api/v1/sites", ``, nil, 400, ""},
			{"unknown field", "POST", "/api/v1/sites", `{"domain":"a.example","site_type":"html","owner":"x"}`, nil, 422, "owner"},
			{"wrong type", "POST", "/api/v1/sites", `{"domain":5,"site_type":"html"}`, nil, 422, "domain"},
			{"bad enum", "POST", "/api/v1/sites", `{"domain":"a.example","site_type":"rails"}`, nil, 422, "site_type"},
			{"bad php version", "POST", "/api/v1/sites", `{"domain":"a.example","site_type":"php","php_version":"5.6"}`, nil, 422, "php_version"},
			{"php version on html", "POST", "/api/v1/sites", `{"domain":"a.example","site_type":"html","php_version":"8.3"}`, nil, 422, "php_version"},
			{"missing fields", "POST", "/api/v1/sites", `{}`, nil, 422, "domain"},
			{"shell in domain", "POST", "/api/v1/sites", `{"domain":"a.com;touch /tmp/x","site_type":"html"}`, nil, 422, "domain"},
			{"command substitution", "POST", "/api/v1/sites", `{"domain":"$(id).example","site_type":"html"}`, nil, 422, "domain"},
			{"path traversal", "POST", "/api/v1/sites", `{"domain":"../etc","site_type":"html"}`, nil, 422, "domain"},
			{"IP literal", "POST", "/api/v1/sites", `{"domain":"10.0.0.1","site_type":"html"}`, nil, 422, "domain"},
			{"label too long", "POST", "/api/v1/sites", `{"domain":"` + strings.Repeat("a", 64) + `.example","site_type":"html"}`, nil, 422, "domain"},
			{"oversize body", "POST", "/api/v1/sites", big, nil, 413, ""},
			{"wrong content type", "POST", "/api/v1/sites", `{"domain":"a.example","site_type":"html"}`, []string{"Content-Type", "text/plain"}, 415, ""},
			{"bad idempotency key", "POST", "/api/v1/sites", `{"domain":"a.example","site_type":"html"}`, []string{"Idempotency-Key", "has space"}, 422, "Idempotency-Key"},
			{"domain taken", "POST", "/api/v1/sites", `{"domain":"exists.example","site_type":"html"}`, nil, 409, ""},
			{"bad wait", "GET", "/api/v1/operations/" + site.ID + "?wait=1h", "", nil, 422, "wait"},
			{"bad status filter", "GET", "/api/v1/sites?status=gone", "", nil, 422, "status"},
			{"bad cursor", "GET", "/api/v1/sites?cursor=../../x", "", nil, 422, "cursor"},
			{"bad limit", "GET", "/api/v1/operations?limit=1000", "", nil, 422, "limit"},
			{"bad op type", "GET", "/api/v1/operations?type=rm", "", nil, 422, "type"},
			{"malformed site id", "GET", "/api/v1/sites/1%20OR%201=1", "", nil, 404, ""},
			{"unknown route", "GET", "/api/v1/nope", "", nil, 404, ""},
			{"wrong method", "PUT", "/api/v1/sites", "", nil, 405, ""},
			{"admin route, tenant token", "POST", "/api/v1/vps", `{"hostname":"v.example","ip_address":"10.0.0.9","provider":"x","region":"y"}`, nil, 403, ""},
			{"bad vps", "POST", "/api/v1/vps", `{"hostname":"v.example","ip_address":"999.1.1.1","provider":"x","region":"y","ssh_port":0}`, []string{"Authorization", "Bearer " + s.admin}, 422, "ip_address"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				var body any
				switch {
				case tc.name == "empty body":
					body = []byte{}
				case tc.body != "":
					body = tc.body
				}
				headers := tc.headers
				r := s.do(tc.method, tc.path, s.tokenA, body, headers...)
				assertProblem(t, r, tc.status, tc.field)
			})
		}
		if after := s.snapshot(); after != before {
			t.Errorf("bad input changed the database: before %v, after %v", before, after)
		}
	})
}

// snapshot counts the rows a request could write.
func (s *stack) snapshot() [6]int {
	return [6]int{s.count("sites", ""), s.count("operations", ""), s.count("audit_logs", ""),
		s.count("idempotency_keys", ""), s.count("vps_servers", ""), s.count("outbox_events", "")}
}

// Missing, malformed, unknown, revoked and expired tokens all get the same 401.
func TestUnauthorizedIsUniform(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true})
		ctx := context.Background()
		revoked, _, err := s.store.CreateToken(ctx, models.NewTokenParams{TenantID: s.tenantA, Name: "r", Scopes: []string{"read"}})
		if err != nil {
			t.Fatal(err)
		}
		tok, _ := s.store.LookupToken(ctx, models.HashToken(revoked))
		if err := s.store.RevokeToken(ctx, s.tenantA, tok.ID); err != nil {
			t.Fatal(err)
		}
		past := time.Now().Add(-time.Minute)
		expired, _, err := s.store.CreateToken(ctx, models.NewTokenParams{TenantID: s.tenantA, Name: "e", Scopes: []string{"read"}, ExpiresAt: &past})
		if err != nil {
			t.Fatal(err)
		}
		unknown := "chom_" + strings.Repeat("a", 52)
		var bodies []string
		for _, h := range []string{"", "Bearer", "Bearer x", "Basic !!", "Bearer " + unknown, "Bearer " + revoked, "Bearer " + expired, "Bearer " + s.tokenA + "x"} {
			req, _ := http.NewRequest("GET", s.url+"/api/v1/sites", nil)
			if h != "" {
				req.Header.Set("Authorization", h)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var p ingress.Problem
			_ = json.NewDecoder(res.Body).Decode(&p)
			res.Body.Close()
			if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%q: %d %v", h, res.StatusCode, res.Header)
			}
			p.RequestID = ""
			b, _ := json.Marshal(p)
			bodies = append(bodies, string(b))
		}
		for _, b := range bodies[1:] {
			if b != bodies[0] {
				t.Errorf("401 bodies differ:\n%s\n%s", bodies[0], b)
			}
		}
		// Read scope cannot write.
		r := s.do("POST", "/api/v1/sites", s.readOnlyToken(), `{"domain":"a.example","site_type":"html"}`)
		assertProblem(t, r, http.StatusForbidden, "")
	})
}

func (s *stack) readOnlyToken() string {
	tok, _, err := s.store.CreateToken(context.Background(), models.NewTokenParams{TenantID: s.tenantA, Name: "ro", Scopes: []string{"read"}})
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

// Cancel: a pending operation is cancelled at once and its task removed; cancelling
// again is still 202; a finished operation answers 409 naming it.
func TestCancel(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true})
		op := s.createSite(s.tokenA, "cancel.example", "html")
		for i := 0; i < 2; i++ {
			r := s.do("POST", "/api/v1/operations/"+op.ID+"/cancel", s.tokenA, nil)
			if r.status != http.StatusAccepted {
				t.Fatalf("cancel #%d: %d %s", i, r.status, r.body)
			}
			var v ingress.OperationView
			r.json(t, &v)
			if v.Status != models.OpCancelled {
				t.Fatalf("cancel #%d: status %s", i, v.Status)
			}
		}
		var site models.Site
		s.do("GET", "/api/v1/sites/"+op.TargetID, s.tokenA, nil).json(t, &site)
		if site.Status != models.SiteStatusDeleted {
			t.Errorf("site of cancelled provision = %s", site.Status)
		}
		// The worker that starts now finds nothing to run for it.
		s.startWorker()
		ok := s.createSite(s.tokenA, "done.example", "html")
		s.waitOp(s.tokenA, ok.ID)
		if n := s.count("sites", "domain = ? AND status = ?", "cancel.example", models.SiteStatusActive); n != 0 {
			t.Error("cancelled site was provisioned")
		}
		r := s.do("POST", "/api/v1/operations/"+ok.ID+"/cancel", s.tokenA, nil)
		p := assertProblem(t, r, http.StatusConflict, "")
		if p.OperationID != ok.ID {
			t.Errorf("409 names %q, want %s", p.OperationID, ok.ID)
		}
		// A site with a mutation in flight cannot be deleted: 409 naming it.
		s.proxy.Cut() // keep the next one pending
		busy := s.createSite(s.tokenA, "busy.example", "html")
		s.proxy.Restore()
		r = s.do("DELETE", "/api/v1/sites/"+busy.TargetID, s.tokenA, nil)
		if p := assertProblem(t, r, http.StatusConflict, ""); p.OperationID != busy.ID {
			t.Errorf("409 names %q, want %s", p.OperationID, busy.ID)
		}
	})
}

// Polling: ETag with If-None-Match answers 304; ?wait returns as soon as the
// status changes, and holds a matching If-None-Match for the whole wait.
func TestOperationPolling(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true})
		op := s.createSite(s.tokenA, "poll.example", "html")
		r := s.do("GET", "/api/v1/operations/"+op.ID, s.tokenA, nil)
		etag := r.header.Get("ETag")
		if etag == "" || r.header.Get("Retry-After") == "" {
			t.Fatalf("headers = %v", r.header)
		}
		if r := s.do("GET", "/api/v1/operations/"+op.ID, s.tokenA, nil, "If-None-Match", etag); r.status != http.StatusNotModified {
			t.Fatalf("If-None-Match: %d", r.status)
		}
		start := time.Now()
		if r := s.do("GET", "/api/v1/operations/"+op.ID+"?wait=1s", s.tokenA, nil, "If-None-Match", etag); r.status != http.StatusNotModified {
			t.Fatalf("wait with nothing changing: %d", r.status)
		}
		if waited := time.Since(start); waited < 900*time.Millisecond {
			t.Errorf("long poll returned after %s, before its 1s wait", waited)
		}
		// A worker starts while we wait: the poll returns with the new status.
		go func() { time.Sleep(300 * time.Millisecond); s.startWorker() }()
		r = s.do("GET", "/api/v1/operations/"+op.ID+"?wait=20s", s.tokenA, nil)
		var v ingress.OperationView
		r.json(t, &v)
		if v.Status == models.OpPending {
			t.Fatalf("long poll returned without a change: %+v", v)
		}
	})
}

// Health: liveness needs nothing; the detailed check reports each dependency and
// answers 503 with Retry-After when Redis is unreachable.
func TestHealth(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true})
		if r := s.do("GET", "/api/v1/health", "", nil); r.status != 200 {
			t.Fatalf("health: %d", r.status)
		}
		var h ingress.DetailedHealth
		r := s.do("GET", "/api/v1/health/detailed", "", nil)
		r.json(t, &h)
		if r.status != 200 || h.Checks["database"].Status != "ok" || h.Checks["redis"].Status != "ok" || len(h.Queues) != 3 {
			t.Fatalf("detailed: %d %s", r.status, r.body)
		}
		s.proxy.Cut()
		r = s.do("GET", "/api/v1/health/detailed", "", nil)
		r.json(t, &h)
		if r.status != 503 || h.Checks["redis"].Status != "down" || r.header.Get("Retry-After") == "" {
			t.Fatalf("detailed with redis down: %d %s", r.status, r.body)
		}
		s.proxy.Restore()
	})
}

// The asynq web UI is behind the admin credential: 401 without a token, 403 for
// a tenant token (neither the ops nor the admin scope), the UI with an admin
// token given as the Basic auth password. internal/opsui tests the ops scope.
func TestOpsUIRequiresAdmin(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true})
		get := func(auth string) *http.Response {
			req, _ := http.NewRequest("GET", s.url+"/ops/queues", nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			return res
		}
		basic := func(tok string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:"+tok)) }
		for _, auth := range []string{"", basic("not-a-token")} {
			if res := get(auth); res.StatusCode != 401 || !strings.Contains(res.Header.Get("WWW-Authenticate"), "Basic") {
				t.Errorf("%q: %d", auth, res.StatusCode)
			}
		}
		for _, auth := range []string{basic(s.tokenA), "Bearer " + s.tokenA} {
			if res := get(auth); res.StatusCode != 403 || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/problem+json") {
				t.Errorf("tenant token %q: %d %s, want 403 problem", auth, res.StatusCode, res.Header.Get("Content-Type"))
			}
		}
		if res := get(basic(s.admin)); res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
			t.Errorf("admin: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
		}
	})
}

// VPS registration (admin): 201 with the server, the same Idempotency-Key and body
// gives the same server back, the hostname again without a key is a 409.
func TestRegisterVPS(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true})
		body := `{"hostname":"Web1.Example","ip_address":"203.0.113.7","provider":"hetzner","region":"fsn1","site_capacity":20}`
		r := s.do("POST", "/api/v1/vps", s.admin, body, "Idempotency-Key", "vps-1")
		if r.status != http.StatusCreated {
			t.Fatalf("POST /vps: %d %s", r.status, r.body)
		}
		var v models.VPSServer
		r.json(t, &v)
		if v.Hostname != "web1.example" || v.SSHPort != 22 || v.Allocation != "shared" || v.SiteCapacity != 20 || v.HealthStatus != "unknown" {
			t.Errorf("registered = %+v", v)
		}
		if r.header.Get("Location") != "/api/v1/vps/"+v.ID {
			t.Errorf("Location = %q", r.header.Get("Location"))
		}
		r = s.do("POST", "/api/v1/vps", s.admin, body, "Idempotency-Key", "vps-1")
		var again models.VPSServer
		r.json(t, &again)
		if r.status != http.StatusOK || again.ID != v.ID {
			t.Fatalf("replay: %d %s", r.status, r.body)
		}
		assertProblem(t, s.do("POST", "/api/v1/vps", s.admin, body), http.StatusConflict, "")
		assertProblem(t, s.do("POST", "/api/v1/vps", s.admin, body, "Idempotency-Key", "vps-1x"), http.StatusConflict, "")
		if r := s.do("GET", "/api/v1/vps/"+v.ID, s.admin, nil); r.status != 200 {
			t.Errorf("GET /vps/{id}: %d", r.status)
		}
		var list ingress.Page[models.VPSServer]
		s.do("GET", "/api/v1/vps", s.admin, nil).json(t, &list)
		if len(list.Data) != 2 { // the stack's own server and this one
			t.Errorf("GET /vps lists %d servers, want 2", len(list.Data))
		}
		// A dedicated server names an existing tenant.
		ded := `{"hostname":"ded.example","ip_address":"203.0.113.8","provider":"hetzner","region":"fsn1","allocation":"dedicated","tenant_id":"ten_00000000000000000000000000000000"}`
		assertProblem(t, s.do("POST", "/api/v1/vps", s.admin, ded), http.StatusUnprocessableEntity, "tenant_id")
		ded = strings.Replace(ded, "ten_00000000000000000000000000000000", s.tenantA, 1)
		if r := s.do("POST", "/api/v1/vps", s.admin, ded); r.status != http.StatusCreated {
			t.Errorf("dedicated: %d %s", r.status, r.body)
		}
	})
}

// A flood from one token gets 429 with Retry-After once its bucket is empty,
// without a 5xx and without writing anything; another token is unaffected.
func TestRateLimitPerToken(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true, rateLimit: 5, rateBurst: 10})
		before := s.snapshot()
		limited := 0
		for i := 0; i < 40; i++ {
			r := s.do("GET", "/api/v1/sites", s.tokenA, nil)
			switch r.status {
			case http.StatusOK:
			case http.StatusTooManyRequests:
				limited++
				if r.header.Get("Retry-After") == "" {
					t.Fatal("429 without Retry-After")
				}
				assertProblem(t, r, http.StatusTooManyRequests, "")
			default:
				t.Fatalf("flood: %d %s", r.status, r.body)
			}
		}
		if limited < 20 {
			t.Errorf("%d of 40 requests limited, want at least 20 (burst 10, 5/s)", limited)
		}
		if r := s.do("GET", "/api/v1/sites", s.tokenB, nil); r.status != http.StatusOK {
			t.Errorf("another token: %d", r.status)
		}
		if after := s.snapshot(); after != before {
			t.Errorf("flood changed the database: %v → %v", before, after)
		}
	})
}
