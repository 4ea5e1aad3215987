package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/queue"
)

// The OpenAPI document (ingress/openapi.json) is checked against every response
// the integration tests see: stack.do hands each one to checkOpenAPI, which finds
// the documented operation of the request and validates the status, the content
// type, the body (JSON Schema 2020-12, formats asserted) and the documented
// response headers. A path no route matches must answer the document's
// fallback x-chom-fallback-responses/unknown-path (the 404 problem), a known
// path with another method its unknown-method (the 405).

// docURL names the document inside the schema compiler; it is never fetched.
const docURL = "mem:///openapi.json"

// openAPIDoc is the parsed document, its path templates and a cache of compiled
// schemas keyed by JSON pointer.
type openAPIDoc struct {
	root     map[string]any
	basePath string
	paths    []docPath
	compiler *jsonschema.Compiler

	mu      sync.Mutex
	schemas map[string]*jsonschema.Schema
}

type docPath struct {
	template string // "/sites/{id}"
	re       *regexp.Regexp
	item     map[string]any
}

var loadDoc = sync.OnceValues(func() (*openAPIDoc, error) {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(ingress.OpenAPIDocument()))
	if err != nil {
		return nil, fmt.Errorf("parse openapi.json: %w", err)
	}
	root, _ := v.(map[string]any)
	d := &openAPIDoc{root: root, schemas: map[string]*jsonschema.Schema{}}
	if servers, _ := root["servers"].([]any); len(servers) > 0 {
		s, _ := servers[0].(map[string]any)
		d.basePath, _ = s["url"].(string)
	}
	paths, _ := root["paths"].(map[string]any)
	for tmpl, item := range paths {
		quoted := regexp.QuoteMeta(tmpl)
		// QuoteMeta escapes the braces of "{id}": match the escaped form.
		pattern := regexp.MustCompile(`\\\{[^/]+?\\\}`).ReplaceAllString(quoted, `[^/]+`)
		it, _ := item.(map[string]any)
		d.paths = append(d.paths, docPath{template: tmpl, re: regexp.MustCompile("^" + pattern + "$"), item: it})
	}
	// Literal paths first, so /sites is never taken for a template.
	sort.Slice(d.paths, func(i, j int) bool {
		return !strings.Contains(d.paths[i].template, "{") && strings.Contains(d.paths[j].template, "{")
	})

	d.compiler = jsonschema.NewCompiler()
	d.compiler.DefaultDraft(jsonschema.Draft2020)
	d.compiler.AssertFormat()
	if err := d.compiler.AddResource(docURL, root); err != nil {
		return nil, fmt.Errorf("load openapi.json into the schema compiler: %w", err)
	}
	return d, nil
})

// pointer builds the RFC 6901 JSON pointer of tokens, as a URL fragment.
func pointer(tokens ...string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(t))
	}
	return b.String()
}

// schemaAt compiles (once) the schema at the JSON pointer ptr of the document.
func (d *openAPIDoc) schemaAt(ptr string) (*jsonschema.Schema, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s, ok := d.schemas[ptr]; ok {
		return s, nil
	}
	frag := (&url.URL{Fragment: ptr}).EscapedFragment()
	s, err := d.compiler.Compile(docURL + "#" + frag)
	if err != nil {
		return nil, fmt.Errorf("compile %s: %w", ptr, err)
	}
	d.schemas[ptr] = s
	return s, nil
}

// deref follows a local "$ref" to the object it names, returning that object
// and its JSON pointer; other objects are returned as they are.
func (d *openAPIDoc) deref(obj map[string]any, ptr string) (map[string]any, string, error) {
	ref, ok := obj["$ref"].(string)
	if !ok {
		return obj, ptr, nil
	}
	target, ok := strings.CutPrefix(ref, "#")
	if !ok {
		return nil, "", fmt.Errorf("%s: only local $refs are supported, got %q", ptr, ref)
	}
	var cur any = d.root
	for _, tok := range strings.Split(strings.TrimPrefix(target, "/"), "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		m, _ := cur.(map[string]any)
		if cur = m[tok]; cur == nil {
			return nil, "", fmt.Errorf("%s: $ref %q names nothing", ptr, ref)
		}
	}
	m, ok := cur.(map[string]any)
	if !ok {
		return nil, "", fmt.Errorf("%s: $ref %q is not an object", ptr, ref)
	}
	return m, target, nil
}

// checkOpenAPI reports, as test errors, every way the response to method and
// target (a path with an optional query, as given to stack.do) departs from
// the OpenAPI document.
func checkOpenAPI(t testing.TB, method, target string, r response) {
	t.Helper()
	d, err := loadDoc()
	if err != nil {
		t.Fatal(err)
	}
	path, _, _ := strings.Cut(target, "?")
	if u, err := url.PathUnescape(path); err == nil {
		path = u // the router matches the decoded path
	}
	if path == queue.OpsUIPath || strings.HasPrefix(path, queue.OpsUIPath+"/") {
		return // asynqmon's own UI, outside the document
	}
	for _, err := range d.check(method, path, r) {
		t.Errorf("OpenAPI: %s %s → %d: %v\nbody: %.600s", method, target, r.status, err, r.body)
	}
}

func (d *openAPIDoc) check(method, path string, r response) []error {
	rel, ok := strings.CutPrefix(path, d.basePath)
	if !ok || rel == "" {
		return d.checkResponse(pointer("x-chom-fallback-responses", "unknown-path"), r, "a path outside "+d.basePath)
	}
	for _, p := range d.paths {
		if !p.re.MatchString(rel) {
			continue
		}
		op, ok := p.item[strings.ToLower(method)].(map[string]any)
		if !ok {
			return d.checkResponse(pointer("x-chom-fallback-responses", "unknown-method"), r, "an undocumented method of "+p.template)
		}
		responses, _ := op["responses"].(map[string]any)
		status := strconv.Itoa(r.status)
		key := ""
		for _, k := range []string{status, status[:1] + "XX", "default"} {
			if _, ok := responses[k]; ok {
				key = k
				break
			}
		}
		opPtr := pointer("paths", p.template, strings.ToLower(method))
		if key == "" {
			return []error{fmt.Errorf("status %d is not documented for %s %s (%s)", r.status, method, p.template, opPtr)}
		}
		return d.checkResponse(opPtr+pointer("responses", key), r, method+" "+p.template)
	}
	return d.checkResponse(pointer("x-chom-fallback-responses", "unknown-path"), r, "an undocumented path")
}

// checkResponse validates r against the response object at ptr. what says
// which operation (or which fallback) the response object belongs to.
func (d *openAPIDoc) checkResponse(ptr string, r response, what string) []error {
	obj, err := d.objectAt(ptr)
	if err != nil {
		return []error{err}
	}
	obj, ptr, err = d.deref(obj, ptr)
	if err != nil {
		return []error{err}
	}
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s (%s): %s", what, ptr, fmt.Sprintf(format, args...)))
	}
	// A fallback response object names one status; the operation's are keyed by it.
	if strings.HasPrefix(ptr, "/components/responses/") {
		if want := d.fallbackStatus(obj, ptr); want != 0 && want != r.status {
			fail("status %d, the document says %d", r.status, want)
		}
	}

	content, _ := obj["content"].(map[string]any)
	ct := r.header.Get("Content-Type")
	switch {
	case len(content) == 0:
		if len(r.body) > 0 {
			fail("a body (%d bytes, %q) where the document has none", len(r.body), ct)
		}
	default:
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil {
			fail("Content-Type %q: %v", ct, err)
			break
		}
		if _, ok := content[mt]; !ok {
			fail("Content-Type %q, the document has %v", mt, keys(content))
			break
		}
		if !strings.HasSuffix(mt, "json") {
			break // a binary body (a backup archive): its media type is the check
		}
		sch, err := d.schemaAt(ptr + pointer("content", mt, "schema"))
		if err != nil {
			fail("%v", err)
			break
		}
		body, err := jsonschema.UnmarshalJSON(bytes.NewReader(r.body))
		if err != nil {
			fail("body is not JSON: %v", err)
			break
		}
		if err := sch.Validate(body); err != nil {
			fail("body does not match the schema: %v", err)
		}
	}

	headers, _ := obj["headers"].(map[string]any)
	for _, name := range keys(headers) {
		h, _ := headers[name].(map[string]any)
		h, hptr, err := d.deref(h, ptr+pointer("headers", name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		values := r.header.Values(name)
		if len(values) == 0 {
			if req, _ := h["required"].(bool); req {
				fail("header %s is required but missing", name)
			}
			continue
		}
		if len(values) > 1 {
			fail("header %s sent %d times", name, len(values))
		}
		sch, err := d.schemaAt(hptr + "/schema")
		if err != nil {
			fail("%v", err)
			continue
		}
		if err := sch.Validate(headerValue(h, values[0])); err != nil {
			fail("header %s: %q does not match the schema: %v", name, values[0], err)
		}
	}
	return errs
}

// fallbackStatus reads the status a components/responses problem names in its
// schema (`status: {const: N}`), so a 404 fallback cannot pass with a 500.
func (d *openAPIDoc) fallbackStatus(obj map[string]any, ptr string) int {
	content, _ := obj["content"].(map[string]any)
	for _, mt := range content {
		schema, _ := mt.(map[string]any)["schema"].(map[string]any)
		all, _ := schema["allOf"].([]any)
		for _, s := range all {
			props, _ := s.(map[string]any)["properties"].(map[string]any)
			status, _ := props["status"].(map[string]any)
			if n, ok := status["const"].(json.Number); ok {
				v, _ := n.Int64()
				return int(v)
			}
		}
	}
	return 0
}

// headerValue turns a header's text into the JSON value its schema describes
// (OpenAPI's simple style): an integer schema gets a number.
func headerValue(h map[string]any, v string) any {
	schema, _ := h["schema"].(map[string]any)
	if typ, _ := schema["type"].(string); typ == "integer" || typ == "number" {
		if _, err := strconv.ParseFloat(v, 64); err == nil {
			return json.Number(v)
		}
	}
	return v
}

func (d *openAPIDoc) objectAt(ptr string) (map[string]any, error) {
	var cur any = d.root
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		m, _ := cur.(map[string]any)
		cur = m[tok]
	}
	m, ok := cur.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("the document has no object at %s", ptr)
	}
	return m, nil
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// The checker itself: responses that break the document are caught, with the
// reason, and conforming ones pass. (The integration tests exercise it on real
// responses through stack.do.)
func TestOpenAPICheckerCatchesMismatches(t *testing.T) {
	t.Parallel()
	d, err := loadDoc()
	if err != nil {
		t.Fatal(err)
	}
	hdr := func(kv ...string) map[string][]string {
		h := map[string][]string{"X-Request-Id": {"req_0123456789abcdef01234567"}}
		for i := 0; i+1 < len(kv); i += 2 {
			h[kv[i]] = append(h[kv[i]], kv[i+1])
		}
		return h
	}
	const opID = "op_0123456789abcdef0123456789abcdef"
	opJSON := `{"id":"` + opID + `","type":"site.provision","status":"pending","progress":0,"target_type":"site",` +
		`"target_id":"site_0123456789abcdef0123456789abcdef","result":null,"cancel_requested":false,` +
		`"created_at":"2026-01-02T03:04:05.123456Z","started_at":null,"finished_at":null}`
	accepted := hdr("Content-Type", "application/json; charset=utf-8", "Location", "/api/v1/operations/"+opID,
		"Etag", `"abc123"`, "Retry-After", "1")
	notFound := `{"type":"urn:chom:problem:not-found","title":"Not found","status":404,"instance":"/x"}`
	problemHdr := hdr("Content-Type", "application/problem+json", "Cache-Control", "no-store")
	cases := []struct {
		name, method, path string
		r                  response
		want               string // "" when the response conforms
	}{
		{"accepted", "POST", "/api/v1/sites", response{202, accepted, []byte(opJSON)}, ""},
		{"undocumented status", "POST", "/api/v1/sites", response{201, accepted, []byte(opJSON)}, "not documented"},
		{"missing header", "POST", "/api/v1/sites", response{202, hdr("Content-Type", "application/json"), []byte(opJSON)}, "Location is required"},
		{"bad header", "POST", "/api/v1/sites", response{202, func() map[string][]string {
			h := hdr("Content-Type", "application/json", "Location", "/x", "Etag", `"a"`, "Retry-After", "1")
			return h
		}(), []byte(opJSON)}, "header Location"},
		{"extra member", "POST", "/api/v1/sites", response{202, accepted, []byte(strings.Replace(opJSON, `"progress":0`, `"progress":0,"x":1`, 1))}, "additional"},
		{"null where a string is required", "POST", "/api/v1/sites", response{202, accepted, []byte(strings.Replace(opJSON, `"target_id":"site_0123456789abcdef0123456789abcdef"`, `"target_id":null`, 1))}, "target_id"},
		{"bad date-time", "POST", "/api/v1/sites", response{202, accepted, []byte(strings.Replace(opJSON, "2026-01-02T03:04:05.123456Z", "yesterday", 1))}, "date-time"},
		{"wrong content type", "POST", "/api/v1/sites", response{202, hdr("Content-Type", "text/plain", "Location", "/api/v1/operations/"+opID, "Etag", `"a"`, "Retry-After", "1"), []byte(opJSON)}, "Content-Type"},
		{"problem", "GET", "/api/v1/sites/site_x", response{404, problemHdr, []byte(notFound)}, ""},
		{"problem of another status", "GET", "/api/v1/sites/site_x", response{404, problemHdr, []byte(strings.Replace(notFound, "404", "400", 1))}, "status"},
		{"unknown path", "GET", "/api/v1/nope", response{404, problemHdr, []byte(notFound)}, ""},
		{"unknown path, not a 404", "GET", "/api/v1/nope", response{200, problemHdr, []byte(notFound)}, "status 200"},
		{"undocumented method", "PUT", "/api/v1/sites", response{405, hdr("Content-Type", "application/problem+json", "Cache-Control", "no-store", "Allow", "GET, POST"), []byte(`{"type":"urn:chom:problem:method-not-allowed","title":"Method not allowed","status":405}`)}, ""},
		{"405 without Allow", "PUT", "/api/v1/sites", response{405, problemHdr, []byte(`{"type":"urn:chom:problem:method-not-allowed","title":"Method not allowed","status":405}`)}, "Allow is required"},
		{"304 with a body", "GET", "/api/v1/operations/" + opID, response{304, hdr("Etag", `"a"`, "Cache-Control", "no-cache"), []byte("x")}, "a body"},
		{"304", "GET", "/api/v1/operations/" + opID, response{304, hdr("Etag", `"a"`, "Cache-Control", "no-cache"), nil}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			errs := d.check(tc.method, tc.path, tc.r)
			switch {
			case tc.want == "" && len(errs) > 0:
				t.Errorf("conforming response refused: %v", errs)
			case tc.want != "" && len(errs) == 0:
				t.Errorf("mismatch not caught (want an error mentioning %q)", tc.want)
			case tc.want != "" && !strings.Contains(fmt.Sprint(errs), tc.want):
				t.Errorf("errors %v do not mention %q", errs, tc.want)
			}
		})
	}
}
