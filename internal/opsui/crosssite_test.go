package opsui_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/queue"
)

// The attack: a page on another site makes the operator's browser, logged in
// to the ops UI with the admin token as Basic credentials, post a form (or a
// fetch) to asynqmon's API. The browser attaches the credentials by itself;
// the ingress must refuse the change (403 problem+json) and the task must stay.
// The same call from the UI's own origin goes through, as does one with a
// Bearer token (no browser attaches those on its own). Every page carries
// X-Frame-Options: DENY and a Content-Security-Policy.
func TestOpsUICrossSite(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	opIDs := s.createSites(3)
	in := s.inspector()
	host := strings.TrimPrefix(s.base, "http://")

	// asynqmon's "delete task" and "archive task" calls.
	del := func(id string) string { return "/ops/queues/api/queues/default/pending_tasks/" + id }
	archive := func(id string) string { return "/ops/queues/api/queues/default/pending_tasks/" + id + ":archive" }
	form := func(h http.Header) http.Header {
		h.Set("Content-Type", "application/x-www-form-urlencoded")
		return h
	}
	refused := []struct {
		name, method, path string
		header             http.Header
	}{
		{"cross-site form post (Sec-Fetch-Site)", "POST", archive(opIDs[0]),
			form(http.Header{"Sec-Fetch-Site": {"cross-site"}, "Origin": {"https://evil.example"}})},
		{"same-site tenant page", "DELETE", del(opIDs[0]),
			http.Header{"Sec-Fetch-Site": {"same-site"}, "Origin": {"https://tenant." + host}}},
		{"foreign Origin, no Sec-Fetch-Site (plain-http browser)", "POST", archive(opIDs[0]),
			form(http.Header{"Origin": {"http://evil.example"}})},
		{"opaque Origin (sandboxed frame)", "DELETE", del(opIDs[0]), http.Header{"Origin": {"null"}}},
		{"Basic credentials and neither header", "POST", archive(opIDs[0]), form(http.Header{})},
	}
	for _, tc := range refused {
		r := s.doWith(tc.method, tc.path, basic(s.admin), tc.header, nil)
		var p struct {
			Type   string `json:"type"`
			Status int    `json:"status"`
			Detail string `json:"detail"`
		}
		if r.status != http.StatusForbidden || !strings.HasPrefix(r.header.Get("Content-Type"), "application/problem+json") ||
			json.Unmarshal(r.body, &p) != nil || p.Type != "urn:chom:problem:forbidden" || !strings.Contains(p.Detail, "cross-site") {
			t.Errorf("%s: %s %s → %d %s %.300s; want a 403 cross-site problem", tc.name, tc.method, tc.path,
				r.status, r.header.Get("Content-Type"), r.body)
		}
	}
	if info, err := in.GetTaskInfo(queue.QueueDefault, opIDs[0]); err != nil || info.State != asynq.TaskStatePending {
		t.Fatalf("after the cross-site calls: %+v, %v; want the task still pending", info, err)
	}
	if qi, err := in.GetQueueInfo(queue.QueueDefault); err != nil || qi.Archived != 0 {
		t.Fatalf("after the cross-site calls: %+v, %v; want nothing archived", qi, err)
	}

	// Reads need no origin: the UI's page and its API, with the headers.
	page := s.do("GET", "/ops/queues", basic(s.admin), nil)
	if page.status != http.StatusOK {
		t.Fatalf("GET /ops/queues: %d", page.status)
	}
	for _, r := range []response{page, s.do("GET", "/ops/queues", "", nil), s.do("GET", "/ops/queues/api/queues", basic(s.admin), nil)} {
		csp := r.header.Get("Content-Security-Policy")
		if r.header.Get("X-Frame-Options") != "DENY" || !strings.Contains(csp, "frame-ancestors 'none'") ||
			!strings.Contains(csp, "script-src 'self' 'sha256-") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("%d answer: X-Frame-Options %q, CSP %q", r.status, r.header.Get("X-Frame-Options"), csp)
		}
	}

	// The UI's own origin: Sec-Fetch-Site same-origin (HTTPS or localhost), or
	// an Origin naming this host (a browser over plain http); a Bearer token.
	allowed := []struct {
		name, method, path, auth string
		header                   http.Header
	}{
		{"same-origin archive", "POST", archive(opIDs[0]), basic(s.admin), http.Header{"Sec-Fetch-Site": {"same-origin"}, "Origin": {s.base}}},
		{"own Origin delete", "DELETE", del(opIDs[1]), basic(s.admin), http.Header{"Origin": {s.base}}},
		{"bearer delete", "DELETE", del(opIDs[2]), bearer(s.admin), nil},
	}
	for _, tc := range allowed {
		if r := s.doWith(tc.method, tc.path, tc.auth, tc.header, nil); r.status/100 != 2 {
			t.Errorf("%s: %s %s → %d %.300s; want 2xx", tc.name, tc.method, tc.path, r.status, r.body)
		}
	}
	if info, err := in.GetTaskInfo(queue.QueueDefault, opIDs[0]); err != nil || info.State != asynq.TaskStateArchived {
		t.Errorf("after the same-origin archive: %+v, %v; want archived", info, err)
	}
	for _, id := range opIDs[1:] {
		if _, err := in.GetTaskInfo(queue.QueueDefault, id); !errors.Is(err, asynq.ErrTaskNotFound) {
			t.Errorf("after the allowed delete of %s: %v, want ErrTaskNotFound", id, err)
		}
	}
}
