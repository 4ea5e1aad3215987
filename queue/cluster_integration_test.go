package queue_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/queue"
)

// TestRedisClusterClients: on a real Redis Cluster of three masters and three
// replicas, through one redis-cluster:// URL, the enqueuer, the inspector
// (task states, queue depths across queues on different slots, the ping) and
// asynqmon (queue list, tasks, the cluster's Redis info page) all work.
func TestRedisClusterClients(t *testing.T) {
	t.Parallel()
	c := testenv.StartRedisCluster(t, testenv.RedisClusterConfig{Password: "queue-pw"})
	rc, err := queue.NewRedisClient(c.URL, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	ctx := t.Context()
	enq := queue.NewEnqueuer(rc)
	for _, tk := range []struct{ id, q string }{{"op_a", queue.QueueDefault}, {"op_b", queue.QueueDefault}, {"op_c", queue.QueueLow}, {"op_d", queue.QueueCritical}} {
		if err := enq.Enqueue(ctx, asynq.NewTask("test:noop", nil), asynq.TaskID(tk.id), asynq.Queue(tk.q)); err != nil {
			t.Fatal(err)
		}
	}
	// The same task ID again is a conflict, which Enqueue treats as done.
	if err := enq.Enqueue(ctx, asynq.NewTask("test:noop", nil), asynq.TaskID("op_a"), asynq.Queue(queue.QueueDefault)); err != nil {
		t.Errorf("enqueue of a task ID already queued: %v", err)
	}
	in := queue.NewInspector(rc)
	if err := in.Ping(ctx); err != nil {
		t.Errorf("ping: %v", err)
	}
	if st, err := in.TaskState(ctx, queue.QueueDefault, "op_a"); err != nil || st != queue.TaskLive {
		t.Errorf("state of op_a = %q, %v; want live", st, err)
	}
	if st, err := in.TaskState(ctx, queue.QueueDefault, "op_z"); err != nil || st != queue.TaskMissing {
		t.Errorf("state of op_z = %q, %v; want missing", st, err)
	}
	depths, err := in.Depths(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{queue.QueueDefault: 2, queue.QueueLow: 1, queue.QueueCritical: 1}
	for _, d := range depths {
		if d.Pending != want[d.Queue] {
			t.Errorf("queue %s: %d pending, want %d", d.Queue, d.Pending, want[d.Queue])
		}
	}

	opt, err := queue.RedisOptions(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(queue.NewOpsUI(opt, true, ""))
	t.Cleanup(srv.Close)
	get := func(path string) string {
		t.Helper()
		hc := &http.Client{Timeout: 10 * time.Second}
		res, err := hc.Get(srv.URL + queue.OpsUIPath + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("asynqmon GET %s: %d %s", path, res.StatusCode, b)
		}
		return string(b)
	}
	var queues struct {
		Queues []struct {
			Queue string `json:"queue"`
			Size  int    `json:"size"`
		} `json:"queues"`
	}
	if err := json.Unmarshal([]byte(get("/api/queues")), &queues); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, q := range queues.Queues {
		got[q.Queue] = q.Size
	}
	for q, n := range want {
		if got[q] != n {
			t.Errorf("asynqmon: queue %s of size %d, want %d (all: %v)", q, got[q], n, got)
		}
	}
	if body := get("/api/queues/default/pending_tasks"); !strings.Contains(body, "op_a") || !strings.Contains(body, "op_b") {
		t.Errorf("asynqmon's pending tasks of default lack op_a or op_b: %s", body)
	}
	var info struct {
		Cluster   bool   `json:"cluster"`
		Nodes     string `json:"raw_cluster_nodes"`
		Locations []struct {
			Queue string   `json:"queue"`
			Nodes []string `json:"nodes"`
		} `json:"queue_locations"`
	}
	if err := json.Unmarshal([]byte(get("/api/redis_info")), &info); err != nil {
		t.Fatal(err)
	}
	if !info.Cluster || strings.Count(strings.TrimSpace(info.Nodes), "\n") != 5 || len(info.Locations) != 3 {
		t.Errorf("asynqmon's Redis info: cluster %v, %d node lines, %d queue locations; want a cluster of 6 nodes holding 3 queues",
			info.Cluster, strings.Count(strings.TrimSpace(info.Nodes), "\n")+1, len(info.Locations))
	}
	t.Logf("asynqmon places the queues: %+v", info.Locations)
}
