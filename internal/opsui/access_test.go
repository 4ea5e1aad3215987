package opsui_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/queue"
)

func basic(token string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte("operator:"+token))
}

// The ops UI's access rules, on the real binary: no or a bad credential is a
// 401 with a Basic challenge; a token with neither ops nor admin is a 403
// problem; ops sees the read-only UI and can change nothing (the ingress
// refuses with 403 before asynqmon sees the call); admin gets the full UI and
// can delete and run tasks. Both UIs are handed CHOM_PROMETHEUS_URL.
func TestOpsUIAccess(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	opIDs := s.createSites(2)
	low := s.enqueueOthers()
	in := s.inspector()

	deletePending := "/ops/queues/api/queues/default/pending_tasks/" + opIDs[0]
	runScheduled := "/ops/queues/api/queues/low/scheduled_tasks/" + low + ":run"
	// asynqmon writes the address into a script of its page, JavaScript-escaped.
	promFlag := `FLAG_PROMETHEUS_SERVER_ADDRESS="` + strings.ReplaceAll(prometheusURL, "/", `\/`) + `"`
	tests := []struct {
		name, method, path, auth string
		status                   int
		// want is what the body must contain; problem is the problem type of
		// an error answer.
		want, problem string
	}{
		{"no credential", "GET", "/ops/queues", "", 401, "", "urn:chom:problem:unauthorized"},
		{"malformed token", "GET", "/ops/queues", basic("hunter2"), 401, "", "urn:chom:problem:unauthorized"},
		{"unknown token", "GET", "/ops/queues/api/queues", bearer("chom_" + strings.Repeat("a", 52)), 401, "", "urn:chom:problem:unauthorized"},
		{"tenant token as basic", "GET", "/ops/queues", basic(s.tenant), 403, "", "urn:chom:problem:forbidden"},
		{"tenant token as bearer", "GET", "/ops/queues/api/queues", bearer(s.tenant), 403, "", "urn:chom:problem:forbidden"},
		{"tenant token deleting", "DELETE", deletePending, bearer(s.tenant), 403, "", "urn:chom:problem:forbidden"},
		{"ops page is read-only", "GET", "/ops/queues", basic(s.ops), 200, `FLAG_READ_ONLY="true"`, ""},
		{"ops page has prometheus", "GET", "/ops/queues", basic(s.ops), 200, promFlag, ""},
		{"ops reads the queues", "GET", "/ops/queues/api/queues", basic(s.ops), 200, `"queue":"default"`, ""},
		{"ops reads a task", "GET", "/ops/queues/api/queues/default/tasks/" + opIDs[0], bearer(s.ops), 200, opIDs[0], ""},
		{"ops cannot delete a task", "DELETE", deletePending, basic(s.ops), 403, "read-only", "urn:chom:problem:forbidden"},
		{"ops cannot run a task", "POST", runScheduled, bearer(s.ops), 403, "read-only", "urn:chom:problem:forbidden"},
		{"ops cannot pause a queue", "POST", "/ops/queues/api/queues/default:pause", basic(s.ops), 403, "read-only", "urn:chom:problem:forbidden"},
		{"admin page is full", "GET", "/ops/queues", basic(s.admin), 200, `FLAG_READ_ONLY="false"`, ""},
		{"admin page has prometheus", "GET", "/ops/queues", bearer(s.admin), 200, promFlag, ""},
	}
	for _, tc := range tests {
		r := s.do(tc.method, tc.path, tc.auth, nil)
		if r.status != tc.status || !strings.Contains(string(r.body), tc.want) {
			t.Errorf("%s: %s %s → %d %.300s; want %d containing %q", tc.name, tc.method, tc.path, r.status, r.body, tc.status, tc.want)
			continue
		}
		if r.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("%s: WWW-Authenticate %q, want a Basic challenge", tc.name, r.header.Get("WWW-Authenticate"))
		}
		if tc.problem != "" {
			var p struct {
				Type   string `json:"type"`
				Status int    `json:"status"`
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
				t.Errorf("%s: Content-Type %q, want application/problem+json", tc.name, ct)
			}
			if err := json.Unmarshal(r.body, &p); err != nil || p.Type != tc.problem || p.Status != tc.status {
				t.Errorf("%s: problem %+v (%v), want type %s status %d", tc.name, p, err, tc.problem, tc.status)
			}
		}
	}

	// Nothing the refused calls asked for happened.
	if info, err := in.GetTaskInfo(queue.QueueDefault, opIDs[0]); err != nil || info.State != asynq.TaskStatePending {
		t.Fatalf("after the refused delete: %+v, %v; want the task still pending", info, err)
	}
	if info, err := in.GetTaskInfo(queue.QueueLow, low); err != nil || info.State != asynq.TaskStateScheduled {
		t.Fatalf("after the refused run: %+v, %v; want the task still scheduled", info, err)
	}
	if qi, err := in.GetQueueInfo(queue.QueueDefault); err != nil || qi.Paused {
		t.Fatalf("after the refused pause: %+v, %v; want the queue running", qi, err)
	}

	// admin: the same calls go through (from the UI's own page: a change with
	// Basic credentials must say where it comes from, see TestOpsUICrossSite).
	if r := s.doWith("DELETE", deletePending, basic(s.admin), http.Header{"Sec-Fetch-Site": {"same-origin"}}, nil); r.status/100 != 2 {
		t.Fatalf("admin DELETE %s: %d %s", deletePending, r.status, r.body)
	}
	if _, err := in.GetTaskInfo(queue.QueueDefault, opIDs[0]); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Errorf("after the admin's delete: %v, want ErrTaskNotFound", err)
	}
	if r := s.do("POST", runScheduled, bearer(s.admin), nil); r.status/100 != 2 {
		t.Fatalf("admin POST %s: %d %s", runScheduled, r.status, r.body)
	}
	if info, err := in.GetTaskInfo(queue.QueueLow, low); err != nil || info.State != asynq.TaskStatePending {
		t.Errorf("after the admin's run: %+v, %v; want the task pending", info, err)
	}
}

// asynqmon's ReadOnly mode (what ops tokens are served) refuses mutating calls
// on the server side too, not only by hiding buttons: the second lock behind
// the ingress's own refusal, checked here without the ingress in front.
func TestReadOnlyAsynqmonRefusesChanges(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	opIDs := s.createSites(1)
	low := s.enqueueOthers()
	in := s.inspector()
	opt, err := queue.RedisOptions(s.redisURL)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(queue.NewOpsUI(opt, true, ""))
	t.Cleanup(srv.Close)

	for _, c := range []struct{ method, path string }{
		{"DELETE", "/ops/queues/api/queues/default/pending_tasks/" + opIDs[0]},
		{"POST", "/ops/queues/api/queues/low/scheduled_tasks/" + low + ":run"},
		{"POST", "/ops/queues/api/queues/default:pause"},
		{"DELETE", "/ops/queues/api/queues/low/scheduled_tasks:delete_all"},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), c.method, srv.URL+c.path, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("read-only asynqmon %s %s: %d, want 405", c.method, c.path, res.StatusCode)
		}
	}
	res, err := http.Get(srv.URL + "/ops/queues/api/queues")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("read-only asynqmon GET queues: %d, want 200", res.StatusCode)
	}
	if info, err := in.GetTaskInfo(queue.QueueDefault, opIDs[0]); err != nil || info.State != asynq.TaskStatePending {
		t.Errorf("pending task after the refused calls: %+v, %v", info, err)
	}
	if info, err := in.GetTaskInfo(queue.QueueLow, low); err != nil || info.State != asynq.TaskStateScheduled {
		t.Errorf("scheduled task after the refused calls: %+v, %v", info, err)
	}
	if qi, err := in.GetQueueInfo(queue.QueueDefault); err != nil || qi.Paused {
		t.Errorf("default queue after the refused pause: %+v, %v", qi, err)
	}
}
