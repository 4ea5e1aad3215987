package metricscheck_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/chomhq/chom/events/billing"
	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// chomBin is the chom binary TestMain builds for every test of the package.
var chomBin string

// TestMain builds cmd/chom once, so the tests scrape the binary that ships.
func TestMain(m *testing.M) { testenv.ChomMain(m, "metricscheck", false, &chomBin) }

// process is one chom subcommand to start and what its /metrics must hold.
type process struct {
	name string
	args []string
	env  []string
	// families are the documented labelled families the process reports.
	families []family
	// busy is set for a process that does work as soon as it starts (chom dev
	// runs its scheduler and worker), so its counters may have left zero by
	// the first scrape: only their presence is checked.
	busy bool
}

// family is a documented labelled family and the label sets it must have.
type family struct {
	name string
	// series are the documented label sets; each must be in the first scrape.
	series []map[string]string
	// zero: no start-up activity feeds it, so each series must read 0 (a
	// histogram: no observation).
	zero bool
}

// TestMetricsFollowConventions starts every CHOM process in turn on one fresh
// schema, Redis database and Kafka topic prefix, and checks the first scrape of
// its /metrics with promtool and against the documented series.
func TestMetricsFollowConventions(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the chom binary on real servers; skipped with -short")
	}
	promtool := promtoolPath(t)
	dsn, rdb, kafka := testenv.PostgresDSN(t), testenv.Redis(t), testenv.Kafka(t)
	if chomBin == "" {
		t.Fatal("chom was not built (TestMain)")
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHOM_") {
			env = append(env, kv)
		}
	}
	env = append(env, "CHOM_DATABASE_URL="+dsn, "CHOM_REDIS_URL="+rdb.URL,
		"CHOM_KAFKA_BROKERS="+strings.Join(kafka.Brokers, ","), "CHOM_KAFKA_TOPIC_PREFIX="+kafka.Prefix,
		"CHOM_KAFKA_REPLICATION=1", "CHOM_KAFKA_PARTITIONS=1",
		"CHOM_LOG_FORMAT=json", "CHOM_DB_MAX_CONNS=4", "CHOM_REDIS_POOL_SIZE=8")
	testenv.RunChom(t, chomBin, env, "migrate", "up")
	// The local driver writes its root into config files, so only plain path
	// characters: not t.TempDir, whose name comes from the test's.
	root, err := os.MkdirTemp("", "chom-metricscheck-vps-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	devDir, err := os.MkdirTemp("", "chom-metricscheck-dev-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(devDir) })

	d := documented(t)
	ingressFams := slices.Concat(d.http, d.db, d.cache, d.queueGauges, d.platform, sourceErrors("sites", "backups", "vps", "sweep"))
	workerFams := slices.Concat(d.db, d.jobs, d.queueGauges, d.platform, sourceErrors("sites", "backups", "vps", "sweep"), d.worker)
	relayFams := slices.Concat(d.db, sourceErrors("outbox_lag"), d.relay)
	for _, p := range []process{
		{name: "ingress", args: []string{"ingress"}, env: []string{"CHOM_LISTEN=127.0.0.1:0"}, families: ingressFams},
		{name: "worker", args: []string{"worker"}, env: []string{"CHOM_METRICS_LISTEN=127.0.0.1:0", "CHOM_LOCAL_ROOT=" + root},
			families: workerFams},
		{name: "scheduler", args: []string{"scheduler"}, env: []string{"CHOM_METRICS_LISTEN=127.0.0.1:0"}},
		{name: "relay", args: []string{"relay"}, env: []string{"CHOM_METRICS_LISTEN=127.0.0.1:0"}, families: relayFams},
		{name: "billing-consumer", args: []string{"billing-consumer"}, env: []string{"CHOM_METRICS_LISTEN=127.0.0.1:0"},
			families: slices.Concat(d.db, d.billing)},
		// chom dev as a newcomer runs it (SQLite and an in-process Redis in its
		// data directory), on the test's Kafka.
		{name: "dev", args: []string{"dev", "--data-dir", devDir, "--listen", "127.0.0.1:0"},
			env:      []string{"CHOM_DATABASE_URL=", "CHOM_REDIS_URL=", "CHOM_LOCAL_ROOT="},
			families: slices.Concat(ingressFams, d.jobs, d.worker, relayFams), busy: true},
	} {
		t.Run(p.name, func(t *testing.T) {
			body := scrapeAtStart(t, slices.Concat(env, p.env), p.args)
			checkPromtool(t, promtool, body)
			checkDocumented(t, body, p)
		})
	}
}

// promtoolPath finds promtool; without it the test skips, or fails under CI.
func promtoolPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv(testenv.EnvCI) != "" {
			t.Fatalf("promtool not on PATH and CI=%q: install the Debian package prometheus (.ci/run does)", os.Getenv(testenv.EnvCI))
		}
		t.Skip("promtool not on PATH; apt-get install prometheus")
	}
	return p
}

// checkPromtool runs `promtool check metrics` on body: it must exit 0 and say
// nothing.
func checkPromtool(t *testing.T, promtool string, body []byte) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// checkDocumented parses body and reports every documented series it lacks,
// and every one that should read zero and does not.
func checkDocumented(t *testing.T, body []byte, p process) {
	t.Helper()
	var parser expfmt.TextParser
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	for _, f := range p.families {
		mf, ok := mfs[f.name]
		if !ok {
			t.Errorf("%s: no %s at all", p.name, f.name)
			continue
		}
		for _, want := range f.series {
			m, ok := find(mf, want)
			if !ok {
				t.Errorf("%s: no %s%v at start-up", p.name, f.name, want)
				continue
			}
			if f.zero && !p.busy && !isZero(m) {
				t.Errorf("%s: %s%v is not 0 before any traffic", p.name, f.name, want)
			}
		}
	}
}

// find returns the series of mf whose labels are exactly want.
func find(mf *dto.MetricFamily, want map[string]string) (*dto.Metric, bool) {
	for _, m := range mf.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		match := true
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; !ok || v != l.GetValue() {
				match = false
				break
			}
		}
		if match {
			return m, true
		}
	}
	return nil, false
}

func isZero(m *dto.Metric) bool {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue() == 0
	case m.Gauge != nil:
		return m.GetGauge().GetValue() == 0
	case m.Histogram != nil:
		return m.GetHistogram().GetSampleCount() == 0
	}
	return false
}

// docs are the documented labelled families, grouped by the part of CHOM that
// reports them.
type docs struct {
	http, db, cache, queueGauges, platform, jobs, worker, relay, billing []family
}

// sourceErrors is chom_metrics_source_errors_total for the scrape-time reads a
// process makes.
func sourceErrors(names ...string) []family {
	return []family{{name: "chom_metrics_source_errors_total", series: each("source", names...), zero: true}}
}

// each is one label set {label: v} per value.
func each(label string, values ...string) []map[string]string {
	out := make([]map[string]string, len(values))
	for i, v := range values {
		out[i] = map[string]string{label: v}
	}
	return out
}

func documented(t *testing.T) docs {
	t.Helper()
	var d docs
	requests, durations := openAPISeries(t)
	d.http = []family{
		{name: "chom_http_requests_total", series: requests, zero: true},
		{name: "chom_http_request_duration_seconds", series: durations, zero: true},
	}
	ops := []string{"SELECT", "INSERT", "UPDATE", "DELETE", "OTHER"}
	d.db = []family{
		{name: "chom_db_queries_total", series: each("operation", ops...)},
		{name: "chom_db_query_errors_total", series: each("operation", ops...)},
		{name: "chom_db_query_duration_seconds", series: each("operation", ops...)},
	}
	d.cache = []family{
		{name: "chom_cache_hits_total", series: each("cache", "token", "operation"), zero: true},
		{name: "chom_cache_misses_total", series: each("cache", "token", "operation"), zero: true},
	}
	var queues []string
	for q := range queue.Weights() {
		queues = append(queues, q)
	}
	slices.Sort(queues)
	for _, n := range []string{"chom_queue_jobs_pending", "chom_queue_jobs_active", "chom_queue_jobs_retry",
		"chom_queue_jobs_archived", "chom_queue_latency_seconds"} {
		d.queueGauges = append(d.queueGauges, family{name: n, series: each("queue", queues...)})
	}
	d.platform = []family{
		{name: "chom_sites", series: each("status", models.SiteStatusPending, models.SiteStatusProvisioning,
			models.SiteStatusActive, models.SiteStatusFailed, models.SiteStatusDeprovisioning, models.SiteStatusDeleted), zero: true},
		{name: "chom_backups", series: each("status", models.BackupStatusPending, models.BackupStatusRunning,
			models.BackupStatusCompleted, models.BackupStatusFailed, models.BackupStatusDeleting, models.BackupStatusDeleted), zero: true},
		{name: "chom_vps_servers", series: each("health", models.HealthHealthy, models.HealthDegraded,
			models.HealthUnhealthy, models.HealthUnknown)},
	}
	var jobSeries, durSeries []map[string]string
	for _, k := range queue.TaskKinds() {
		for _, status := range []string{"succeeded", "failed", "deferred"} {
			jobSeries = append(jobSeries, map[string]string{"queue": k.Queue, "type": k.Type, "status": status})
		}
		durSeries = append(durSeries, map[string]string{"queue": k.Queue, "type": k.Type})
	}
	d.jobs = []family{
		{name: "chom_queue_jobs_total", series: jobSeries, zero: true},
		{name: "chom_queue_jobs_duration_seconds", series: durSeries, zero: true},
		{name: "chom_queue_jobs_failed_total", series: each("queue", queues...), zero: true},
	}
	d.worker = []family{
		{name: "chom_vps_health_checks_total", series: each("result", models.HealthHealthy, models.HealthDegraded,
			models.HealthUnhealthy, "unreachable"), zero: true},
		{name: "chom_usage_records_total", series: each("metric", jobs.MetricActiveSites, jobs.MetricDiskBytes,
			jobs.MetricBackupStorageBytes, jobs.MetricBandwidthBytes), zero: true},
		{name: "chom_usage_meter_runs_total", series: each("result", jobs.MeterRecorded, jobs.MeterAlreadyRecorded,
			jobs.MeterFailed, jobs.MeterRefused), zero: true},
	}
	d.relay = []family{{name: "chom_circuit_breaker_state", series: each("breaker", "kafka"), zero: true}}
	d.billing = []family{{name: "chom_billing_events_total", series: each("result", billing.ResultBilled,
		billing.ResultDuplicate, billing.ResultDeadLettered, billing.ResultIgnored), zero: true}}
	return d
}

// openAPISeries reads the OpenAPI document and returns the label sets of
// chom_http_requests_total (each operation's documented status codes) and of
// chom_http_request_duration_seconds (each operation).
func openAPISeries(t *testing.T) (requests, durations []map[string]string) {
	t.Helper()
	var doc struct {
		Servers []struct {
			URL string `json:"url"`
		} `json:"servers"`
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(ingress.OpenAPIDocument(), &doc); err != nil {
		t.Fatal(err)
	}
	param := regexp.MustCompile(`\{([a-z_]+)\}`)
	for path, ops := range doc.Paths {
		route := doc.Servers[0].URL + param.ReplaceAllString(path, ":$1")
		for method, raw := range ops {
			if !slices.Contains([]string{"get", "put", "post", "delete", "patch"}, method) {
				continue
			}
			var op struct {
				Responses map[string]json.RawMessage `json:"responses"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			m := strings.ToUpper(method)
			durations = append(durations, map[string]string{"method": m, "route": route})
			for code := range op.Responses {
				if _, err := strconv.Atoi(code); err == nil {
					requests = append(requests, map[string]string{"method": m, "route": route, "status": code})
				}
			}
		}
	}
	if len(requests) < 100 {
		t.Fatalf("only %d documented route statuses in the OpenAPI document", len(requests))
	}
	return requests, durations
}

// devAPI is the line `chom dev` prints with its API's address.
var devAPI = regexp.MustCompile(`API\s+(http://\S+)/api/v1`)

// scrapeAtStart runs `chom args…` with env, waits until it says where it
// serves /metrics, scrapes it once and stops the process with SIGINT (which
// must end it cleanly within 20s).
func scrapeAtStart(t *testing.T, env, args []string) []byte {
	t.Helper()
	cmd := exec.Command(chomBin, args...)
	cmd.Env = env
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var logMu sync.Mutex
	var log bytes.Buffer
	exited, scanned := make(chan struct{}), make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); _ = pw.Close(); close(exited) }()
	base := make(chan string, 1)
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			logMu.Lock()
			log.Write(append(sc.Bytes(), '\n'))
			logMu.Unlock()
			if sent {
				continue
			}
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil &&
				(line["msg"] == "ingress listening" || line["msg"] == "metrics listening") {
				a, _ := line["addr"].(string)
				base <- "http://" + a
				sent = true
			} else if m := devAPI.FindSubmatch(sc.Bytes()); m != nil {
				base <- string(m[1])
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	logs := func() string { logMu.Lock(); defer logMu.Unlock(); return log.String() }
	stop := func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("chom %s did not stop within 20s of SIGINT", args[0])
		}
		<-scanned
		var ee *exec.ExitError
		if waitErr != nil && !errors.As(waitErr, &ee) {
			t.Errorf("chom %s: %v", args[0], waitErr)
		} else if waitErr != nil {
			t.Errorf("chom %s exited with %v", args[0], waitErr)
		}
		if t.Failed() {
			t.Logf("chom %s log:\n%s", args[0], logs())
		}
	}
	var url string
	select {
	case url = <-base:
	case <-exited:
		<-scanned
		t.Fatalf("chom %s exited before serving /metrics:\n%s", args[0], logs())
	case <-time.After(60 * time.Second):
		stop()
		t.Fatalf("chom %s did not serve /metrics within 60s", args[0])
	}
	defer stop()
	body, err := get(t, url+"/metrics")
	if err != nil {
		t.Fatalf("scrape chom %s: %v", args[0], err)
	}
	return body
}

func get(t *testing.T, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	res, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d %s", url, res.StatusCode, body)
	}
	return body, nil
}
