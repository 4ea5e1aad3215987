package ingress_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/google/go-cmp/cmp"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// The response side of the document is checked against real responses in
// internal/integration (stack.do); these tests check its shape without servers.

func init() { gin.SetMode(gin.ReleaseMode) }

type nopEnqueuer struct{}

func (nopEnqueuer) EnqueueOperation(context.Context, *models.Operation) error { return nil }

type nopInspector struct{}

func (nopInspector) Ping(context.Context) error                         { return nil }
func (nopInspector) Depths(context.Context) ([]queue.QueueDepth, error) { return nil, nil }
func (nopInspector) DeletePending(context.Context, string, string) error {
	return nil
}

// newAPI builds the API over an empty SQLite file: enough to list routes and to
// serve the routes that touch nothing.
func newAPI(t *testing.T) *ingress.API {
	t.Helper()
	store, err := models.New(models.Config{DB: testenv.SQLite(t)})
	if err != nil {
		t.Fatal(err)
	}
	api, err := ingress.New(ingress.Config{
		Store: store, Enqueuer: nopEnqueuer{}, Inspector: nopInspector{},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), OpsUI: http.NotFoundHandler(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return api
}

type document struct {
	Servers []struct {
		URL string `json:"url"`
	} `json:"servers"`
	Paths map[string]map[string]json.RawMessage `json:"paths"`
}

func loadDocument(t *testing.T) document {
	t.Helper()
	var d document
	if err := json.Unmarshal(ingress.OpenAPIDocument(), &d); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if len(d.Servers) != 1 || d.Servers[0].URL != "/api/v1" {
		t.Fatalf("servers = %+v, want one server /api/v1", d.Servers)
	}
	return d
}

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// Every route the router registers is documented, and every documented
// operation is a registered route; only the asynq web UI is left out.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	t.Parallel()
	api := newAPI(t)
	d := loadDocument(t)
	param := regexp.MustCompile(`:([A-Za-z_]+)`)
	var registered []string
	for _, rt := range api.Routes() {
		if rt.Path == queue.OpsUIPath || strings.HasPrefix(rt.Path, queue.OpsUIPath+"/") {
			continue
		}
		registered = append(registered, rt.Method+" "+param.ReplaceAllString(rt.Path, "{$1}"))
	}
	var documented []string
	for path, item := range d.Paths {
		for m := range item {
			if slices.Contains(httpMethods, m) {
				documented = append(documented, strings.ToUpper(m)+" "+d.Servers[0].URL+path)
			}
		}
	}
	sort.Strings(registered)
	sort.Strings(documented)
	if diff := cmp.Diff(registered, documented); diff != "" {
		t.Errorf("routes (-registered +documented):\n%s", diff)
	}
}

// The document is served as it is embedded, without a token.
func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	api := newAPI(t)
	rec := httptest.NewRecorder()
	api.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/openapi.json", nil))
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("GET /api/v1/openapi.json: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	if !bytes.Equal(rec.Body.Bytes(), ingress.OpenAPIDocument()) {
		t.Error("served document differs from the embedded one")
	}
}

// The document hangs together: every $ref resolves, every schema compiles as
// JSON Schema 2020-12, operation IDs are unique, links name real operations,
// and every path template parameter is declared as a path parameter.
func TestOpenAPIDocumentIsConsistent(t *testing.T) {
	t.Parallel()
	raw, err := jsonschema.UnmarshalJSON(bytes.NewReader(ingress.OpenAPIDocument()))
	if err != nil {
		t.Fatal(err)
	}
	root := raw.(map[string]any)
	if v, _ := root["openapi"].(string); !strings.HasPrefix(v, "3.1.") {
		t.Errorf("openapi = %q, want 3.1.x", v)
	}

	const url = "mem:///openapi.json"
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource(url, root); err != nil {
		t.Fatal(err)
	}
	resolve := func(ref string) any {
		var cur any = root
		for _, tok := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			m, _ := cur.(map[string]any)
			cur = m[strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)]
		}
		return cur
	}
	escape := strings.NewReplacer("~", "~0", "/", "~1", "{", "%7B", "}", "%7D").Replace

	// Walk the whole document: check each $ref, compile each "schema" member.
	var walk func(v any, ptr string)
	walk = func(v any, ptr string) {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				p := ptr + "/" + escape(k)
				if k == "$ref" {
					ref, _ := child.(string)
					if !strings.HasPrefix(ref, "#/") || resolve(ref) == nil {
						t.Errorf("%s: $ref %q resolves to nothing", ptr, ref)
					}
					continue
				}
				if k == "schema" || (strings.HasPrefix(ptr, "/components/schemas") && strings.Count(ptr, "/") == 2) {
					if _, err := c.Compile(url + "#" + p); err != nil {
						t.Errorf("%s: %v", p, err)
					}
					continue
				}
				walk(child, p)
			}
		case []any:
			for i, child := range v {
				walk(child, ptr+"/"+strconv.Itoa(i))
			}
		}
	}
	walk(root, "")

	paths := root["paths"].(map[string]any)
	ops := map[string]bool{}
	var links []string
	tmplParam := regexp.MustCompile(`\{([^}]+)\}`)
	for path, item := range paths {
		item := item.(map[string]any)
		declared := map[string]bool{}
		addParams := func(list any) {
			for _, p := range asSlice(list) {
				p, _ := p.(map[string]any)
				if ref, ok := p["$ref"].(string); ok {
					p, _ = resolve(ref).(map[string]any)
				}
				if p["in"] == "path" {
					declared[p["name"].(string)] = true
				}
			}
		}
		addParams(item["parameters"])
		for _, m := range httpMethods {
			op, ok := item[m].(map[string]any)
			if !ok {
				continue
			}
			addParams(op["parameters"])
			id, _ := op["operationId"].(string)
			if id == "" || ops[id] {
				t.Errorf("%s %s: operationId %q missing or repeated", m, path, id)
			}
			ops[id] = true
			if _, ok := op["security"]; !ok {
				t.Errorf("%s %s: no security requirement (use [] for none)", m, path)
			}
			// Bearer requirements list no scopes (linters refuse them); the
			// scope is x-chom-scope, present exactly when a token is needed.
			scope, _ := op["x-chom-scope"].(string)
			switch sec := asSlice(op["security"]); {
			case len(sec) == 0 && scope != "":
				t.Errorf("%s %s: x-chom-scope %q on an operation without a token", m, path, scope)
			case len(sec) > 0 && scope != models.ScopeRead && scope != models.ScopeWrite && scope != models.ScopeAdmin:
				t.Errorf("%s %s: x-chom-scope %q, want read, write or admin", m, path, scope)
			}
			for _, req := range asSlice(op["security"]) {
				for name, scopes := range req.(map[string]any) {
					if len(asSlice(scopes)) != 0 {
						t.Errorf("%s %s: security %s lists scopes %v; name the scope in x-chom-scope", m, path, name, scopes)
					}
				}
			}
			for _, r := range op["responses"].(map[string]any) {
				r, _ := r.(map[string]any)
				if l, ok := r["links"].(map[string]any); ok {
					for _, link := range l {
						links = append(links, link.(map[string]any)["operationId"].(string))
					}
				}
			}
		}
		for _, m := range tmplParam.FindAllStringSubmatch(path, -1) {
			if !declared[m[1]] {
				t.Errorf("%s: path parameter %q is not declared", path, m[1])
			}
		}
	}
	for _, l := range links {
		if !ops[l] {
			t.Errorf("a link names operation %q, which does not exist", l)
		}
	}
}

func asSlice(v any) []any { s, _ := v.([]any); return s }
