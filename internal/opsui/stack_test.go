package opsui_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/queue"
)

// chomBin is the chom binary TestMain builds for every test of the package.
var chomBin string

// prometheusURL is given to the ingress as CHOM_PROMETHEUS_URL; nothing listens
// there (the tests only check that the UI is handed the address).
const prometheusURL = "http://127.0.0.1:9/prometheus"

// TestMain builds cmd/chom once, so the tests run the binary an operator runs.
func TestMain(m *testing.M) { testenv.ChomMain(m, "opsui", false, &chomBin) }

// stack is `chom ingress` (no worker, so accepted work stays queued) on a fresh
// schema and Redis database, with one token per kind of caller.
type stack struct {
	t        *testing.T
	base     string // http://127.0.0.1:PORT
	redisURL string
	env      []string
	log      *bytes.Buffer // the ingress's JSON log

	admin  string // tenant "platform", scope admin
	ops    string // tenant "platform", scope ops (made by `chom token create --scope ops`)
	tenant string // tenant "acme", scopes read and write
}

func newStack(t *testing.T) *stack {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the chom binary on real servers; skipped with -short")
	}
	dsn, rdb := testenv.PostgresDSN(t), testenv.Redis(t)
	if chomBin == "" {
		t.Fatal("chom was not built (TestMain)")
	}
	s := &stack{t: t, redisURL: rdb.URL, log: new(bytes.Buffer)}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHOM_") {
			s.env = append(s.env, kv)
		}
	}
	s.env = append(s.env, "CHOM_DATABASE_URL="+dsn, "CHOM_REDIS_URL="+rdb.URL, "CHOM_LISTEN=127.0.0.1:0",
		"CHOM_LOG_FORMAT=json", "CHOM_LOG_LEVEL=debug", "CHOM_DB_MAX_CONNS=4", "CHOM_REDIS_POOL_SIZE=8",
		"CHOM_RATE_LIMIT=0", "CHOM_PROMETHEUS_URL="+prometheusURL)
	s.run("migrate", "up")
	s.tenant = strings.TrimSpace(s.run("token", "create", "--tenant", "acme", "--scope", "read,write"))
	s.admin = strings.TrimSpace(s.run("token", "create", "--tenant", "platform", "--scope", "admin"))
	s.ops = strings.TrimSpace(s.run("token", "create", "--tenant", "platform", "--scope", "ops", "--name", "oncall"))
	s.startIngress()
	return s
}

// run runs a chom command to completion and returns its standard output.
func (s *stack) run(args ...string) string {
	s.t.Helper()
	return testenv.RunChom(s.t, chomBin, s.env, args...)
}

// startIngress runs `chom ingress` until the test ends and waits for its address.
func (s *stack) startIngress() {
	s.t.Helper()
	cmd := exec.Command(chomBin, "ingress")
	cmd.Env = s.env
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	exited, scanned := make(chan struct{}), make(chan struct{})
	go func() { _ = cmd.Wait(); _ = pw.Close(); close(exited) }()
	s.t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		<-scanned
		if s.t.Failed() {
			s.t.Logf("ingress log:\n%s", s.log)
		}
	})
	addr := make(chan string, 1)
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			s.log.Write(append(sc.Bytes(), '\n')) // read only once scanned is closed
			var line map[string]any
			if !sent && json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "ingress listening" {
				a, _ := line["addr"].(string)
				addr <- a
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case a := <-addr:
		s.base = "http://" + a
	case <-exited:
		<-scanned
		s.t.Fatalf("chom ingress exited before listening:\n%s", s.log)
	case <-time.After(30 * time.Second):
		s.t.Fatal("chom ingress did not listen within 30s")
	}
}

// response is an HTTP answer read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends method path with the Authorization header auth (none when empty).
func (s *stack) do(method, path, auth string, body any) response {
	s.t.Helper()
	return s.doWith(method, path, auth, nil, body)
}

// doWith is do with extra request headers (Origin, Sec-Fetch-Site, Content-Type).
func (s *stack) doWith(method, path, auth string, header http.Header, body any) response {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(s.t.Context(), method, s.base+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: raw}
}

func bearer(token string) string { return "Bearer " + token }

// createSites posts n sites as the tenant; with no worker running their
// site:provision tasks stay pending in the default queue. It returns the
// operation (= task) IDs.
func (s *stack) createSites(n int) []string {
	s.t.Helper()
	var ids []string
	for i := range n {
		r := s.do("POST", "/api/v1/sites", bearer(s.tenant), map[string]string{
			"domain": fmt.Sprintf("site%d.opsui.example", i), "site_type": "html"})
		if r.status != http.StatusAccepted {
			s.t.Fatalf("POST /sites: %d %s", r.status, r.body)
		}
		var op struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(r.body, &op); err != nil {
			s.t.Fatal(err)
		}
		ids = append(ids, op.ID)
	}
	return ids
}

// enqueueOthers puts a reconcile task in critical and a task scheduled an hour
// ahead in low, so every queue exists and has something for the UI to show.
// It returns the low task's ID.
func (s *stack) enqueueOthers() string {
	s.t.Helper()
	opt, err := queue.RedisOptions(s.redisURL)
	if err != nil {
		s.t.Fatal(err)
	}
	c := asynq.NewClient(opt)
	defer c.Close()
	if _, err := c.EnqueueContext(s.t.Context(), queue.NewReconcileTask()); err != nil {
		s.t.Fatal(err)
	}
	info, err := c.EnqueueContext(s.t.Context(), asynq.NewTask("opsui:probe", []byte(`{}`)),
		asynq.Queue(queue.QueueLow), asynq.ProcessIn(time.Hour), asynq.TaskID("probe-low"))
	if err != nil {
		s.t.Fatal(err)
	}
	return info.ID
}

// inspector reads the queues directly, to see what the UI's calls changed.
func (s *stack) inspector() *asynq.Inspector {
	s.t.Helper()
	opt, err := queue.RedisOptions(s.redisURL)
	if err != nil {
		s.t.Fatal(err)
	}
	in := asynq.NewInspector(opt)
	s.t.Cleanup(func() { _ = in.Close() })
	return in
}
