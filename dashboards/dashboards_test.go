package dashboards

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"github.com/chomhq/chom/metrics"
)

// grafanaVars replaces Grafana's built-in interval variables by durations so
// an expression parses as plain PromQL. Longest names first: $__range_ms
// must not become "1h_ms".
var grafanaVars = strings.NewReplacer(
	"${__rate_interval}", "5m", "$__rate_interval", "5m",
	"${__interval}", "1m", "$__interval", "1m",
	"${__range}", "1h", "$__range", "1h",
)

// prometheusOwn are series Prometheus itself produces, not CHOM.
var prometheusOwn = []string{"up", "ALERTS", "ALERTS_FOR_STATE"}

// histogramSuffixes are the series suffixes of a histogram (or summary) family.
var histogramSuffixes = []string{"_bucket", "_sum", "_count"}

// metricNames returns the sorted, distinct metric names that expr selects,
// walking the AST of Prometheus' own parser. Grafana's interval variables are
// substituted first; any other `$var` outside a string is a parse error. A
// selector without a metric name ({job="x"}) is an error: it cannot be
// checked against the code.
func metricNames(expr string) ([]string, error) {
	ast, err := parser.ParseExpr(grafanaVars.Replace(expr))
	if err != nil {
		return nil, fmt.Errorf("parse %q: %w", expr, err)
	}
	seen := map[string]bool{}
	var errs []error
	parser.Inspect(ast, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
		}
		if name == "" {
			errs = append(errs, fmt.Errorf("selector %s in %q names no metric", vs, expr))
			return nil
		}
		seen[name] = true
		return nil
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// family returns the registered family that series name belongs to: name
// itself, or name less a histogram suffix. A counter (_total) has no
// histogram series, so x_total_bucket is not x_total's. ok is false for an
// unknown name.
func family(registered map[string]bool, name string) (string, bool) {
	if registered[name] || slices.Contains(prometheusOwn, name) {
		return name, true
	}
	for _, s := range histogramSuffixes {
		if base, cut := strings.CutSuffix(name, s); cut && registered[base] && !strings.HasSuffix(base, "_total") {
			return base, true
		}
	}
	return "", false
}

// labelContract is the label set of every chom_* family: the metrics
// package's contract. Expressions may match and group only on these, plus the
// target labels Prometheus adds and `le` on a histogram's _bucket series.
// TestLabelContractMatchesCode checks it against the registry wherever the
// code has series to show.
var labelContract = map[string][]string{
	"chom_http_requests_total":                  {"method", "route", "status"},
	"chom_http_request_duration_seconds":        {"method", "route"},
	"chom_http_requests_in_flight":              {},
	"chom_queue_jobs_total":                     {"queue", "type", "status"},
	"chom_queue_jobs_duration_seconds":          {"queue", "type"},
	"chom_queue_jobs_failed_total":              {"queue"},
	"chom_queue_jobs_pending":                   {"queue"},
	"chom_queue_jobs_active":                    {"queue"},
	"chom_queue_jobs_retry":                     {"queue"},
	"chom_queue_jobs_archived":                  {"queue"},
	"chom_queue_latency_seconds":                {"queue"},
	"chom_queue_inspect_errors_total":           {},
	"chom_db_queries_total":                     {"operation"},
	"chom_db_query_errors_total":                {"operation"},
	"chom_db_query_duration_seconds":            {"operation"},
	"chom_cache_hits_total":                     {"cache"},
	"chom_cache_misses_total":                   {"cache"},
	"chom_sites":                                {"status"},
	"chom_certificate_expiry_timestamp_seconds": {"site_id", "source"},
	"chom_backups":                              {"status"},
	"chom_outbox_lag_seconds":                   {},
	"chom_events_published_total":               {},
	"chom_events_publish_failed_total":          {},
	"chom_relay_leader":                         {},
	"chom_circuit_breaker_state":                {"breaker"},
	"chom_rate_limited_total":                   {},
	"chom_auth_failures_total":                  {"reason"},
	"chom_auth_rate_limited_total":              {},
	"chom_ops_cross_site_refused_total":         {},
	"chom_security_refusals_total":              {"reason"},
	"chom_metrics_source_errors_total":          {"source"},
	"chom_vps_servers":                          {"health"},
	"chom_vps_health_checks_total":              {"result"},
	"chom_vps_health_sweep_duration_seconds":    {},
	"chom_vps_health_sweep_servers":             {},
	"chom_usage_records_total":                  {"metric"},
	"chom_usage_meter_runs_total":               {"result"},
	"chom_billing_events_total":                 {"result"},
}

// targetLabels are added by Prometheus to every scraped series.
var targetLabels = []string{"job", "instance"}

// seriesLabels returns the labels a series called name may carry, and false
// when name is not a chom_* family of the contract (go_*, process_*, up),
// whose labels are not checked.
func seriesLabels(name string) ([]string, bool) {
	if ls, ok := labelContract[name]; ok {
		return append(slices.Clone(targetLabels), ls...), true
	}
	if base, cut := strings.CutSuffix(name, "_bucket"); cut {
		if ls, ok := labelContract[base]; ok {
			return append(append(slices.Clone(targetLabels), ls...), "le"), true
		}
	}
	for _, s := range []string{"_sum", "_count"} {
		if base, cut := strings.CutSuffix(name, s); cut {
			if ls, ok := labelContract[base]; ok {
				return append(slices.Clone(targetLabels), ls...), true
			}
		}
	}
	return nil, false
}

// labelErrors reports every label that expr matches on or groups by (by,
// on, group_left) that the series beneath cannot carry. A label in a
// grouping must exist on at least one series under it.
func labelErrors(expr string) []error {
	ast, err := parser.ParseExpr(grafanaVars.Replace(expr))
	if err != nil {
		return []error{err}
	}
	// available returns the union of labels of the series under n, and false
	// when one of them is outside the contract.
	available := func(n parser.Node) ([]string, bool) {
		var out []string
		checked := true
		parser.Inspect(n, func(c parser.Node, _ []parser.Node) error {
			if vs, ok := c.(*parser.VectorSelector); ok {
				ls, ok := seriesLabels(vs.Name)
				checked = checked && ok
				out = append(out, ls...)
			}
			return nil
		})
		return out, checked
	}
	var errs []error
	check := func(what string, want []string, n parser.Node) {
		have, ok := available(n)
		if !ok {
			return
		}
		for _, l := range want {
			if !slices.Contains(have, l) {
				errs = append(errs, fmt.Errorf("%s label %q: no series under %s has it", what, l, n))
			}
		}
	}
	parser.Inspect(ast, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			var names []string
			for _, m := range n.LabelMatchers {
				if m.Name != labels.MetricName {
					names = append(names, m.Name)
				}
			}
			check("matcher", names, n)
		case *parser.AggregateExpr:
			if !n.Without {
				check("by", n.Grouping, n.Expr)
			}
		case *parser.BinaryExpr:
			if vm := n.VectorMatching; vm != nil && vm.On {
				check("on", vm.MatchingLabels, n.LHS)
				check("on", vm.MatchingLabels, n.RHS)
			}
			if vm := n.VectorMatching; vm != nil && len(vm.Include) > 0 {
				if vm.Card == parser.CardManyToOne {
					check("group_left", vm.Include, n.RHS)
				} else {
					check("group_right", vm.Include, n.LHS)
				}
			}
		}
		return nil
	})
	return errs
}

func TestLabelErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		expr string
		want int
	}{
		{expr: `sum by (route, status) (rate(chom_http_requests_total{status=~"5..", method="GET"}[5m]))`, want: 0},
		{expr: `histogram_quantile(0.9, sum by (le, route) (rate(chom_http_request_duration_seconds_bucket[5m])))`, want: 0},
		{expr: `max by (queue, instance) (chom_queue_jobs_pending{queue=~"$queue", job="chom"})`, want: 0},
		{expr: `sum(max by (queue) (chom_queue_jobs_pending)) / on () group_left () vector(1)`, want: 0},
		{expr: `sum by (queue) (chom_outbox_lag_seconds)`, want: 1},
		{expr: `chom_http_request_duration_seconds_count{status="500"}`, want: 1},
		{expr: `sum by (le) (rate(chom_http_request_duration_seconds_sum[5m]))`, want: 1},
		{expr: `chom_http_requests_total{route="/x", tenant="t"} / on (tenant) chom_http_requests_total`, want: 3},
		{expr: `sum by (quantile) (go_gc_duration_seconds)`, want: 0}, // outside the contract: unchecked
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			t.Parallel()
			if errs := labelErrors(tt.expr); len(errs) != tt.want {
				t.Errorf("labelErrors(%q) = %v, want %d errors", tt.expr, errs, tt.want)
			}
		})
	}
}

// TestLabelContractMatchesCode gives every family the code can show without
// wiring a series, then compares each gathered chom_* family's labels with
// labelContract, and requires a contract entry for every registered chom_*
// family.
func TestLabelContractMatchesCode(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	m.ObserveHTTP("GET", "/api/v1/sites/:id", 200, time.Millisecond)
	m.ObserveJob("default", "site:provision", time.Second, errors.New("boom"))
	m.Cache("token").Hit()
	m.Cache("token").Miss()
	m.RateLimited()
	for _, n := range m.Names() {
		if _, ok := labelContract[n]; strings.HasPrefix(n, "chom_") && !ok {
			t.Errorf("registered family %s has no labelContract entry", n)
		}
	}
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var compared int
	for _, mf := range mfs {
		want, ok := labelContract[mf.GetName()]
		if !ok || len(mf.GetMetric()) == 0 {
			continue
		}
		compared++
		var got []string
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			got = append(got, lp.GetName())
		}
		if diff := cmp.Diff(sorted(want), sorted(got)); diff != "" {
			t.Errorf("%s labels (-contract +code):\n%s", mf.GetName(), diff)
		}
	}
	if compared < 10 {
		t.Errorf("compared only %d families with the code; want at least 10", compared)
	}
}

func sorted(s []string) []string {
	out := append([]string{}, s...)
	sort.Strings(out)
	return out
}

func TestExpressionLabels(t *testing.T) {
	t.Parallel()
	var exprs []expression
	for _, f := range loadDashboards(t) {
		exprs = append(exprs, dashboardExprs(t, f)...)
		for _, v := range f.d.Templating.List {
			if v.Type != "query" {
				continue
			}
			q, _ := v.query()
			m := labelValues.FindStringSubmatch(strings.TrimSpace(q))
			if m == nil {
				continue // reported by dashboardExprs
			}
			names, err := metricNames(m[1])
			if err != nil || len(names) != 1 {
				t.Errorf("%s variable %s: %q must select one metric", f.path, v.Name, m[1])
				continue
			}
			if ls, ok := seriesLabels(names[0]); ok && !slices.Contains(ls, m[2]) {
				t.Errorf("%s variable %s: %s has no label %q", f.path, v.Name, names[0], m[2])
			}
		}
	}
	exprs = append(exprs, ruleExprs(loadRules(t))...)
	for _, e := range exprs {
		for _, err := range labelErrors(e.expr) {
			t.Errorf("%s: %v (expr %q)", e.where, err, e.expr)
		}
	}
}

func registeredNames(t *testing.T) map[string]bool {
	t.Helper()
	names := metrics.New().Names()
	if len(names) == 0 {
		t.Fatal("metrics.New().Names() is empty")
	}
	set := make(map[string]bool, len(names))
	for _, n := range names {
		set[n] = true
	}
	return set
}

func TestMetricNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		expr    string
		want    []string
		wantErr bool
	}{
		{expr: "up == 0", want: []string{"up"}},
		{expr: `sum by (route) (rate(chom_http_requests_total{status=~"5.."}[$__rate_interval]))`, want: []string{"chom_http_requests_total"}},
		{expr: `histogram_quantile(0.95, sum by (le) (rate(chom_http_request_duration_seconds_bucket[5m])))`, want: []string{"chom_http_request_duration_seconds_bucket"}},
		{expr: `{__name__="chom_relay_leader", job="chom"}`, want: []string{"chom_relay_leader"}},
		// Label values, strings and label names that look like metrics are not metrics.
		{expr: `sum without (chom_fake) (chom_sites{status="chom_fake_total"})`, want: []string{"chom_sites"}},
		{expr: `label_replace(chom_vps_servers, "x", "$1", "health", "(.*)")`, want: []string{"chom_vps_servers"}},
		// Binary operators with vector matching, keywords, offsets, subqueries, @.
		{expr: `a / on (queue) group_left (type) b`, want: []string{"a", "b"}},
		{expr: `a and ignoring (x) b or c unless d`, want: []string{"a", "b", "c", "d"}},
		{expr: `max_over_time(deriv(chom_queue_jobs_pending[10m])[1h:1m] offset 5m)`, want: []string{"chom_queue_jobs_pending"}},
		{expr: `rate(x_total[$__range] @ 1700000000)`, want: []string{"x_total"}},
		{expr: `rate(x_total[${__rate_interval}]) / rate(y_total[$__interval])`, want: []string{"x_total", "y_total"}},
		{expr: `(sum(chom_relay_leader) or vector(0)) < 1`, want: []string{"chom_relay_leader"}},
		{expr: `topk(3, b) + topk(3, a) + a`, want: []string{"a", "b"}},
		{expr: `time() - 1`, want: []string{}},
		{expr: `{job="chom"}`, wantErr: true},
		{expr: `rate(x[$window])`, wantErr: true},
		{expr: `sum(rate(x[5m])`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			t.Parallel()
			got, err := metricNames(tt.expr)
			if (err != nil) != tt.wantErr {
				t.Fatalf("metricNames(%q) error = %v, want error %v", tt.expr, err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("metricNames(%q) (-want +got):\n%s", tt.expr, diff)
			}
		})
	}
}

func TestFamily(t *testing.T) {
	t.Parallel()
	registered := map[string]bool{"chom_http_request_duration_seconds": true, "chom_http_requests_total": true}
	tests := []struct {
		name   string
		want   string
		wantOK bool
	}{
		{name: "chom_http_requests_total", want: "chom_http_requests_total", wantOK: true},
		{name: "chom_http_request_duration_seconds_bucket", want: "chom_http_request_duration_seconds", wantOK: true},
		{name: "chom_http_request_duration_seconds_sum", want: "chom_http_request_duration_seconds", wantOK: true},
		{name: "chom_http_request_duration_seconds_count", want: "chom_http_request_duration_seconds", wantOK: true},
		{name: "up", want: "up", wantOK: true},
		{name: "ALERTS", want: "ALERTS", wantOK: true},
		{name: "chom_http_requests", wantOK: false},
		{name: "chom_http_requests_total_bucket", wantOK: false},
		{name: "chom_http_request_duration_seconds_max", wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := family(registered, tt.name)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("family(%q) = %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// dashboard is the part of Grafana's JSON model the tests check.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID          int            `json:"id"`
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Datasource  *datasourceRef `json:"datasource"`
	Targets     []panelTarget  `json:"targets"`
	Panels      []panel        `json:"panels"` // a collapsed row's panels
	GridPos     struct{ H, W, X, Y int }
	FieldConfig struct {
		Defaults struct {
			Thresholds struct {
				Steps []struct {
					Color string   `json:"color"`
					Value *float64 `json:"value"`
				} `json:"steps"`
			} `json:"thresholds"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
}

type panelTarget struct {
	Expr       string         `json:"expr"`
	RefID      string         `json:"refId"`
	Datasource *datasourceRef `json:"datasource"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *datasourceRef  `json:"datasource"`
}

// query returns a variable's query, which Grafana stores as a string or as
// an object with a "query" field.
func (v variable) query() (string, error) {
	var s string
	if err := json.Unmarshal(v.Query, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(v.Query, &obj); err != nil {
		return "", fmt.Errorf("variable %s: query is neither a string nor an object: %w", v.Name, err)
	}
	return obj.Query, nil
}

// labelValues matches Grafana's label_values(selector, label) variable query.
var labelValues = regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// variableExpr returns the PromQL inside a query variable.
func variableExpr(q string) (string, error) {
	m := labelValues.FindStringSubmatch(strings.TrimSpace(q))
	if m == nil {
		return "", fmt.Errorf("query %q is not label_values(selector, label)", q)
	}
	return m[1], nil
}

func (p panel) leaves() []panel {
	if p.Type != "row" {
		return []panel{p}
	}
	var out []panel
	for _, c := range p.Panels {
		out = append(out, c.leaves()...)
	}
	return out
}

type dashboardFile struct {
	path string
	d    dashboard
}

func loadDashboards(t *testing.T) []dashboardFile {
	t.Helper()
	paths, err := filepath.Glob("*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("no dashboards (*.json) found")
	}
	var out []dashboardFile
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out = append(out, dashboardFile{path: p, d: d})
	}
	return out
}

// expression is one PromQL expression and where it was found.
type expression struct {
	where string
	expr  string
}

// dashboardExprs returns every target expression and every query variable's
// selector of d.
func dashboardExprs(t *testing.T, f dashboardFile) []expression {
	t.Helper()
	var out []expression
	for _, top := range f.d.Panels {
		for _, p := range top.leaves() {
			for _, tg := range p.Targets {
				out = append(out, expression{where: fmt.Sprintf("%s panel %d %q target %s", f.path, p.ID, p.Title, tg.RefID), expr: tg.Expr})
			}
		}
	}
	for _, v := range f.d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, err := v.query()
		if err != nil {
			t.Errorf("%s: %v", f.path, err)
			continue
		}
		e, err := variableExpr(q)
		if err != nil {
			t.Errorf("%s variable %s: %v", f.path, v.Name, err)
			continue
		}
		out = append(out, expression{where: fmt.Sprintf("%s variable %s", f.path, v.Name), expr: e})
	}
	return out
}

// ruleFile is a Prometheus rule file.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type ruleFileAt struct {
	path string
	f    ruleFile
}

func loadRules(t *testing.T) []ruleFileAt {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("alerts", "*.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("no rule files (alerts/*.yml) found")
	}
	var out []ruleFileAt
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var f ruleFile
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&f); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out = append(out, ruleFileAt{path: p, f: f})
	}
	return out
}

func ruleExprs(files []ruleFileAt) []expression {
	var out []expression
	for _, f := range files {
		for _, g := range f.f.Groups {
			for _, r := range g.Rules {
				out = append(out, expression{where: fmt.Sprintf("%s group %s rule %s%s", f.path, g.Name, r.Alert, r.Record), expr: r.Expr})
			}
		}
	}
	return out
}

// TestExpressionsNameRegisteredMetrics is the point of the package: a
// dashboard or alert on a metric the code does not register shows nothing
// and never fires.
func TestExpressionsNameRegisteredMetrics(t *testing.T) {
	t.Parallel()
	registered := registeredNames(t)
	var exprs []expression
	for _, f := range loadDashboards(t) {
		exprs = append(exprs, dashboardExprs(t, f)...)
	}
	exprs = append(exprs, ruleExprs(loadRules(t))...)
	if len(exprs) < 50 {
		t.Fatalf("found only %d expressions; the loaders lost some", len(exprs))
	}
	for _, e := range exprs {
		names, err := metricNames(e.expr)
		if err != nil {
			t.Errorf("%s: %v", e.where, err)
			continue
		}
		if len(names) == 0 {
			t.Errorf("%s: %q selects no metric", e.where, e.expr)
		}
		for _, n := range names {
			if _, ok := family(registered, n); !ok {
				t.Errorf("%s: metric %s is not registered by metrics.New() (expr %q)", e.where, n, e.expr)
			}
		}
	}
}

// TestEveryChomMetricIsOnADashboard fails when the code registers a chom_*
// metric that no dashboard shows, so a new metric comes with its panel.
func TestEveryChomMetricIsOnADashboard(t *testing.T) {
	t.Parallel()
	registered := registeredNames(t)
	shown := map[string]bool{}
	for _, f := range loadDashboards(t) {
		for _, e := range dashboardExprs(t, f) {
			names, err := metricNames(e.expr)
			if err != nil {
				continue // reported by TestExpressionsNameRegisteredMetrics
			}
			for _, n := range names {
				if fam, ok := family(registered, n); ok {
					shown[fam] = true
				}
			}
		}
	}
	for n := range registered {
		if strings.HasPrefix(n, "chom_") && !shown[n] {
			t.Errorf("metric %s is registered but on no dashboard", n)
		}
	}
}

func TestDashboards(t *testing.T) {
	t.Parallel()
	allowed := []string{"timeseries", "stat", "gauge", "table"}
	uids := map[string]string{}
	titles := map[string]string{}
	for _, f := range loadDashboards(t) {
		d := f.d
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: uid %q, title %q: both must be set", f.path, d.UID, d.Title)
		}
		if prev, dup := uids[d.UID]; dup {
			t.Errorf("%s: uid %q already used by %s", f.path, d.UID, prev)
		}
		uids[d.UID] = f.path
		if prev, dup := titles[d.Title]; dup {
			t.Errorf("%s: title %q already used by %s", f.path, d.Title, prev)
		}
		titles[d.Title] = f.path
		if d.SchemaVersion < 39 {
			t.Errorf("%s: schemaVersion %d, want >= 39", f.path, d.SchemaVersion)
		}
		var hasDS bool
		for _, v := range d.Templating.List {
			if v.Name == "datasource" && v.Type == "datasource" {
				q, err := v.query()
				hasDS = err == nil && q == "prometheus"
			}
		}
		if !hasDS {
			t.Errorf("%s: no templated variable `datasource` of type datasource with query prometheus", f.path)
		}
		ids := map[int]bool{}
		var leaves int
		for i, a := range d.Panels {
			for _, b := range d.Panels[:i] {
				ga, gb := a.GridPos, b.GridPos
				if ga.X < gb.X+gb.W && gb.X < ga.X+ga.W && ga.Y < gb.Y+gb.H && gb.Y < ga.Y+ga.H {
					t.Errorf("%s: panels %d %q and %d %q overlap", f.path, a.ID, a.Title, b.ID, b.Title)
				}
			}
		}
		for _, top := range d.Panels {
			if ids[top.ID] {
				t.Errorf("%s: panel id %d used twice", f.path, top.ID)
			}
			ids[top.ID] = true
			if top.GridPos.X+top.GridPos.W > 24 || top.GridPos.W <= 0 || top.GridPos.H <= 0 {
				t.Errorf("%s panel %d %q: gridPos %+v outside the 24-column grid", f.path, top.ID, top.Title, top.GridPos)
			}
			for _, p := range top.leaves() {
				leaves++
				where := fmt.Sprintf("%s panel %d %q", f.path, p.ID, p.Title)
				if p.Title == "" {
					t.Errorf("%s: no title", where)
				}
				if !slices.Contains(allowed, p.Type) {
					t.Errorf("%s: type %q, want one of %v", where, p.Type, allowed)
				}
				if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
					t.Errorf("%s: datasource %+v, want prometheus ${datasource}", where, p.Datasource)
				}
				if len(p.Targets) == 0 {
					t.Errorf("%s: no targets", where)
				}
				refs := map[string]bool{}
				for _, tg := range p.Targets {
					if tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] {
						t.Errorf("%s: target %q has no expr or a missing or repeated refId", where, tg.RefID)
					}
					refs[tg.RefID] = true
					if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
						t.Errorf("%s target %s: datasource %+v, want ${datasource}", where, tg.RefID, tg.Datasource)
					}
				}
				steps := p.FieldConfig.Defaults.Thresholds.Steps
				for i, s := range steps {
					if (i == 0) != (s.Value == nil) || (i > 1 && *s.Value <= *steps[i-1].Value) {
						t.Errorf("%s: threshold steps must start with a null base and then rise", where)
						break
					}
				}
			}
		}
		if leaves == 0 {
			t.Errorf("%s: no panels", f.path)
		}
	}
}

// TestDashboardTargets checks that the old report's targets are drawn where
// they apply: a panel whose expression contains the fragment carries a
// threshold step at the value.
func TestDashboardTargets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file     string
		fragment string
		value    float64
	}{
		{file: "api.json", fragment: "histogram_quantile(0.95, sum by (le) (rate(chom_http_request_duration_seconds_bucket", value: 0.5},
		{file: "api.json", fragment: "histogram_quantile(0.99, sum by (le) (rate(chom_http_request_duration_seconds_bucket", value: 1},
		{file: "api.json", fragment: `chom_http_requests_total{status=~"5.."}`, value: 0.001},
		{file: "api.json", fragment: "chom_cache_hits_total", value: 0.9},
		{file: "api.json", fragment: "chom_db_query_duration_seconds_sum", value: 0.2},
		{file: "queues.json", fragment: "chom_queue_latency_seconds", value: 60},
		{file: "fleet.json", fragment: "chom_vps_health_sweep_duration_seconds", value: 60},
		{file: "billing.json", fragment: "chom_outbox_lag_seconds", value: 60},
	}
	byFile := map[string]dashboard{}
	for _, f := range loadDashboards(t) {
		byFile[f.path] = f.d
	}
	for _, tt := range tests {
		t.Run(tt.file+" "+tt.fragment, func(t *testing.T) {
			t.Parallel()
			d, ok := byFile[tt.file]
			if !ok {
				t.Fatalf("no dashboard %s", tt.file)
			}
			var found, withThreshold int
			for _, top := range d.Panels {
				for _, p := range top.leaves() {
					if !slices.ContainsFunc(p.Targets, func(tg panelTarget) bool { return strings.Contains(tg.Expr, tt.fragment) }) {
						continue
					}
					found++
					for _, s := range p.FieldConfig.Defaults.Thresholds.Steps {
						if s.Value != nil && *s.Value == tt.value {
							withThreshold++
							break
						}
					}
				}
			}
			if found == 0 || withThreshold == 0 {
				t.Errorf("%s: %d panels query %q, %d of them have a threshold at %g; want at least one", tt.file, found, tt.fragment, withThreshold, tt.value)
			}
		})
	}
}

func TestAlertRules(t *testing.T) {
	t.Parallel()
	files := loadRules(t)
	seen := map[string]bool{}
	for _, f := range files {
		for _, g := range f.f.Groups {
			if g.Name == "" || len(g.Rules) == 0 {
				t.Errorf("%s: group %q must have a name and rules", f.path, g.Name)
			}
			for _, r := range g.Rules {
				where := fmt.Sprintf("%s group %s rule %q", f.path, g.Name, r.Alert)
				if r.Record != "" {
					t.Errorf("%s: recording rule %s: only alerts are expected here", where, r.Record)
					continue
				}
				if r.Alert == "" || seen[r.Alert] {
					t.Errorf("%s: alert name empty or repeated", where)
				}
				seen[r.Alert] = true
				if _, err := model.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", where, r.For, err)
				}
				if sev := r.Labels["severity"]; sev != "critical" && sev != "warning" {
					t.Errorf("%s: labels.severity %q, want critical or warning", where, sev)
				}
				if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
					t.Errorf("%s: annotations.summary and annotations.description must be set", where)
				}
			}
		}
	}
	// The alerts this package promises (docs/operations.md, "Dashboards and alerts").
	want := []string{
		"ApiLatencyP95High", "ApiLatencyP95Critical", "ApiLatencyP99High", "ApiErrorRatioHigh", "ApiErrorBudgetBurn",
		"TokenCacheHitRatioLow", "QueueLatencyHigh", "QueueBacklogGrowing", "QueueDeadTasks", "QueueJobFailureRatioHigh",
		"QueueInspectorFailing", "DatabaseQueryErrors", "DatabaseQueriesSlow", "OutboxLagHigh", "EventsPublishFailing",
		"KafkaBreakerOpen", "RelayNoLeader", "VpsUnhealthy", "VpsBreakerOpen", "HealthSweepSlow", "TargetDown",
		"BillingDeadLetters", "AuthFailuresHigh", "AuthFailLimitActive", "OpsCrossSiteRefused",
		"CertificateExpiringSoon", "CertificateExpiryCritical",
	}
	var got []string
	for n := range seen {
		got = append(got, n)
	}
	sort.Strings(got)
	sort.Strings(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("alerts (-want +got):\n%s", diff)
	}
}

func TestProvisioning(t *testing.T) {
	t.Parallel()
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name string `yaml:"name"`
			Type string `yaml:"type"`
			URL  string `yaml:"url"`
		} `yaml:"datasources"`
	}
	readYAML(t, filepath.Join("provisioning", "datasources.yml"), &ds)
	if ds.APIVersion != 1 || len(ds.Datasources) == 0 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL == "" {
		t.Errorf("datasources.yml: %+v, want apiVersion 1 and a prometheus data source with a url", ds)
	}
	var dash struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name    string `yaml:"name"`
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, filepath.Join("provisioning", "dashboards.yml"), &dash)
	if dash.APIVersion != 1 || len(dash.Providers) == 0 || dash.Providers[0].Type != "file" || dash.Providers[0].Options.Path == "" {
		t.Errorf("dashboards.yml: %+v, want apiVersion 1 and a file provider with options.path", dash)
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestPromtool runs Prometheus' own checks: the rule files load, the unit
// tests in testdata pass, the example configuration (and the rules it names)
// is valid. Without promtool the test is skipped, or fails when CI is set.
func TestPromtool(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("promtool not on PATH and CI=%q: install the Debian package prometheus (.ci/run does)", os.Getenv("CI"))
		}
		t.Skip("promtool not on PATH; apt-get install prometheus")
	}
	rules, err := filepath.Glob(filepath.Join("alerts", "*.yml"))
	if err != nil || len(rules) == 0 {
		t.Fatalf("no rule files: %v", err)
	}
	tests := []struct {
		name string
		args []string
	}{
		{name: "check rules", args: append([]string{"check", "rules"}, rules...)},
		{name: "test rules", args: []string{"test", "rules", filepath.Join("testdata", "chom.rules.test.yml")}},
		{name: "check config", args: []string{"check", "config", "prometheus.yml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := exec.CommandContext(t.Context(), promtool, tt.args...).CombinedOutput()
			if err != nil {
				t.Fatalf("promtool %s: %v\n%s", strings.Join(tt.args, " "), err, out)
			}
		})
	}
}
