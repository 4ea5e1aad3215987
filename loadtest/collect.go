package loadtest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Route names: the method and path template of each request of the mix, the
// key of the per-route figures.
const (
	RouteCreateSite   = "POST /sites"
	RouteWaitOp       = "GET /operations/{id}?wait"
	RouteListSites    = "GET /sites"
	RouteGetSite      = "GET /sites/{id}"
	RouteCreateBackup = "POST /sites/{id}/backups"
	RouteDeleteSite   = "DELETE /sites/{id}"
)

// heldRoutes are held open on purpose by the server (long polls answer when the
// operation changes or after ?wait), so their latency says how long the work
// took, not how fast the API answered. They count as requests and errors but
// stay out of the latency percentiles; their own route figures still show it.
var heldRoutes = map[string]bool{RouteWaitOp: true}

// Error classes. A request is an error when it got no answer (timeout,
// connection) or a 4xx / 5xx status.
const (
	ClassTimeout    = "timeout"
	ClassConnection = "connection"
	Class4xx        = "4xx"
	Class5xx        = "5xx"
)

// Sample is one request the harness made: vegeta's result (start, latency,
// status, error text) and the route it hit.
type Sample struct {
	vegeta.Result
	Route string
	// Class is the error class ("" for a success); see Classify.
	Class string
}

// Classify names the error class of a request that got status code (0 when no
// answer came) or failed with err: "" for success, ClassTimeout,
// ClassConnection, Class4xx or Class5xx.
func Classify(code int, err error) string {
	switch {
	case err != nil && isTimeout(err):
		return ClassTimeout
	case err != nil:
		return ClassConnection
	case code >= 500:
		return Class5xx
	case code >= 400:
		return Class4xx
	case code < 100:
		return ClassConnection
	}
	return ""
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ErrorCounts counts failed requests by class; 4xx and 5xx also by status.
type ErrorCounts struct {
	Total      uint64            `json:"total"`
	Timeouts   uint64            `json:"timeouts"`
	Connection uint64            `json:"connection"`
	Status4xx  map[string]uint64 `json:"4xx_by_status"`
	Status5xx  map[string]uint64 `json:"5xx_by_status"`
}

// Server5xx is the number of 5xx answers.
func (e ErrorCounts) Server5xx() uint64 { return sum(e.Status5xx) }

// Client4xx is the number of 4xx answers.
func (e ErrorCounts) Client4xx() uint64 { return sum(e.Status4xx) }

func sum(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

func (e *ErrorCounts) add(class string, code uint16) {
	switch class {
	case "":
		return
	case ClassTimeout:
		e.Timeouts++
	case ClassConnection:
		e.Connection++
	case Class4xx:
		if e.Status4xx == nil {
			e.Status4xx = map[string]uint64{}
		}
		e.Status4xx[strconv.Itoa(int(code))]++
	case Class5xx:
		if e.Status5xx == nil {
			e.Status5xx = map[string]uint64{}
		}
		e.Status5xx[strconv.Itoa(int(code))]++
	}
	e.Total++
}

// String lists the non-zero classes, largest first: "5xx 503 ×12, timeout ×3".
func (e ErrorCounts) String() string {
	type kv struct {
		k string
		n uint64
	}
	var all []kv
	for _, s := range slices.Sorted(maps.Keys(e.Status5xx)) {
		all = append(all, kv{"5xx " + s, e.Status5xx[s]})
	}
	for _, s := range slices.Sorted(maps.Keys(e.Status4xx)) {
		all = append(all, kv{"4xx " + s, e.Status4xx[s]})
	}
	if e.Timeouts > 0 {
		all = append(all, kv{"timeout", e.Timeouts})
	}
	if e.Connection > 0 {
		all = append(all, kv{"connection", e.Connection})
	}
	if len(all) == 0 {
		return "none"
	}
	slices.SortStableFunc(all, func(a, b kv) int { return cmp.Compare(b.n, a.n) })
	out := ""
	for i, x := range all {
		if i > 0 {
			out += ", "
		}
		out += fmt.Sprintf("%s ×%d", x.k, x.n)
	}
	return out
}

// Latency is a latency summary in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Mean float64 `json:"mean"`
	Max  float64 `json:"max"`
}

// Figures summarise a set of requests over a stretch of wall time.
type Figures struct {
	// Requests is every request that got an answer or failed (requests the
	// harness cut off itself, at the end of a stage, are not counted).
	Requests uint64 `json:"requests"`
	// Seconds is the wall time the figures cover.
	Seconds float64 `json:"seconds"`
	// Throughput is Requests / Seconds.
	Throughput float64 `json:"throughput_rps"`
	// LatencyRequests is how many requests the latency percentiles cover: all
	// but the held long polls.
	LatencyRequests uint64  `json:"latency_requests"`
	LatencyMS       Latency `json:"latency_ms"`
	// ErrorRate is Errors.Total / Requests.
	ErrorRate float64     `json:"error_rate"`
	Errors    ErrorCounts `json:"errors"`
	// Status counts every answer by HTTP status ("0" for no answer).
	Status map[string]uint64 `json:"status"`
}

// agg accumulates samples; vegeta's Metrics holds the latency digest.
type agg struct {
	requests uint64
	lat      vegeta.Metrics
	errs     ErrorCounts
	status   map[string]uint64
	messages map[string]uint64
}

// maxMessages bounds the distinct error messages an agg keeps.
const maxMessages = 64

func (a *agg) add(s *Sample, held bool) {
	a.requests++
	if a.status == nil {
		a.status = map[string]uint64{}
	}
	a.status[strconv.Itoa(int(s.Code))]++
	if !held {
		a.lat.Add(&s.Result)
	}
	a.errs.add(s.Class, s.Code)
	if s.Class != "" {
		if a.messages == nil {
			a.messages = map[string]uint64{}
		}
		msg := s.Route + ": " + normaliseError(s.Error)
		if _, ok := a.messages[msg]; ok || len(a.messages) < maxMessages {
			a.messages[msg]++
		}
	}
}

// figures summarises a over wall time d.
func (a *agg) figures(d time.Duration) Figures {
	f := Figures{Requests: a.requests, Seconds: d.Seconds(), Errors: a.errs, Status: maps.Clone(a.status)}
	if f.Errors.Status4xx != nil {
		f.Errors.Status4xx = maps.Clone(f.Errors.Status4xx)
	}
	if f.Errors.Status5xx != nil {
		f.Errors.Status5xx = maps.Clone(f.Errors.Status5xx)
	}
	if d > 0 {
		f.Throughput = float64(a.requests) / d.Seconds()
	}
	if a.requests > 0 {
		f.ErrorRate = float64(a.errs.Total) / float64(a.requests)
	}
	if a.lat.Requests > 0 {
		a.lat.Close()
		l := a.lat.Latencies
		f.LatencyRequests = a.lat.Requests
		f.LatencyMS = Latency{P50: ms(l.P50), P95: ms(l.P95), P99: ms(l.P99), P999: ms(l.Quantile(0.999)),
			Mean: ms(l.Mean), Max: ms(l.Max)}
	}
	return f
}

// topMessages returns up to n error messages, most frequent first.
func (a *agg) topMessages(n int) []MessageCount {
	out := make([]MessageCount, 0, len(a.messages))
	for m, c := range a.messages {
		out = append(out, MessageCount{Message: m, Count: c})
	}
	slices.SortFunc(out, func(x, y MessageCount) int {
		if c := cmp.Compare(y.Count, x.Count); c != 0 {
			return c
		}
		return cmp.Compare(x.Message, y.Message)
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// MessageCount is an error message (addresses and IDs blanked) and how often
// it was seen.
type MessageCount struct {
	Message string `json:"message"`
	Count   uint64 `json:"count"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

var (
	reAddr = regexp.MustCompile(`\[?[0-9a-fA-F:.]+\]?:\d+`)
	reID   = regexp.MustCompile(`\b(op|site|vps|tok|ten)_[0-9A-Za-z]+`)
)

// normaliseError blanks addresses, ports and resource IDs so that the same
// failure on different connections counts as one message.
func normaliseError(s string) string {
	s = reAddr.ReplaceAllString(s, "ADDR")
	s = reID.ReplaceAllString(s, "${1}_ID")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// collector aggregates the samples of one scenario run: overall, per route,
// per stage, per stage and route, and per second of the run.
type collector struct {
	start time.Time

	mu         sync.Mutex
	overall    agg
	routes     map[string]*agg
	stages     []*agg
	stageRoute []map[string]*agg
	seconds    []*second
	// ops and stageOps time operations from their 202 to the poll that saw
	// them finished.
	ops      opTimes
	stageOps []opTimes
}

// opTimes is a digest of operation durations.
type opTimes struct {
	lat vegeta.LatencyMetrics
	n   uint64
}

func (o *opTimes) add(d time.Duration) {
	o.lat.Add(d)
	o.n++
}

// summary is the digest in milliseconds; zero when empty.
func (o *opTimes) summary() OperationTimes {
	if o.n == 0 {
		return OperationTimes{}
	}
	l := &o.lat
	return OperationTimes{Count: o.n, MS: Latency{P50: ms(l.Quantile(0.50)), P95: ms(l.Quantile(0.95)), P99: ms(l.Quantile(0.99)),
		P999: ms(l.Quantile(0.999)), Mean: ms(l.Total / time.Duration(o.n)), Max: ms(l.Max)}}
}

// OperationTimes is how long operations took from their 202 to the poll that
// saw them finished: the time a user waits for the work, which the held long
// polls leave out of the request latency.
type OperationTimes struct {
	Count uint64  `json:"count"`
	MS    Latency `json:"ms"`
}

// opDone records an operation, accepted during stage, that took d.
func (c *collector) opDone(stage int, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ops.add(d)
	if stage >= 0 && stage < len(c.stageOps) {
		c.stageOps[stage].add(d)
	}
}

// opSummary returns the operation times of stage i, or of the whole run when i < 0.
func (c *collector) opSummary(i int) OperationTimes {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 0 {
		return c.ops.summary()
	}
	return c.stageOps[i].summary()
}

// second is the aggregate of the requests that ended in one second of a run.
type second struct {
	requests, errors uint64
	lat              vegeta.LatencyMetrics
	latN             uint64
	heapMB           float64
}

func newCollector(start time.Time, stages int) *collector {
	c := &collector{start: start, routes: map[string]*agg{}, stages: make([]*agg, stages),
		stageRoute: make([]map[string]*agg, stages), stageOps: make([]opTimes, stages)}
	for i := range c.stages {
		c.stages[i] = &agg{}
		c.stageRoute[i] = map[string]*agg{}
	}
	return c
}

// add records s, started during stage.
func (c *collector) add(stage int, s *Sample) {
	held := heldRoutes[s.Route]
	sec := int(s.End().Sub(c.start) / time.Second)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.overall.add(s, held)
	// A route's own figures include its latency even when held: for the long
	// poll it is how long operations took to change.
	c.routeAgg(c.routes, s.Route).add(s, false)
	if stage >= 0 && stage < len(c.stages) {
		c.stages[stage].add(s, held)
		c.routeAgg(c.stageRoute[stage], s.Route).add(s, false)
	}
	if sec >= 0 {
		sc := c.second(sec)
		sc.requests++
		if s.Class != "" {
			sc.errors++
		}
		if !held {
			sc.lat.Add(s.Latency)
			sc.latN++
		}
	}
}

func (c *collector) routeAgg(m map[string]*agg, route string) *agg {
	a, ok := m[route]
	if !ok {
		a = &agg{}
		m[route] = a
	}
	return a
}

// second returns the aggregate of second sec, growing the series. Call with mu held.
func (c *collector) second(sec int) *second {
	for len(c.seconds) <= sec {
		c.seconds = append(c.seconds, &second{})
	}
	return c.seconds[sec]
}

// heap records the Go heap in use at second sec.
func (c *collector) heap(sec int, mb float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.second(sec).heapMB = mb
}

// stageFigures summarises stage i over wall time d (safe during the run).
func (c *collector) stageFigures(i int, d time.Duration) (Figures, []RouteFigures, []MessageCount) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stages[i].figures(d), routeFigures(c.stageRoute[i], d), c.stages[i].topMessages(5)
}

func routeFigures(m map[string]*agg, d time.Duration) []RouteFigures {
	out := make([]RouteFigures, 0, len(m))
	for _, r := range routeOrder(m) {
		out = append(out, RouteFigures{Route: r, Held: heldRoutes[r], Figures: m[r].figures(d)})
	}
	return out
}

// routeOrder is the mix's order, then any other route by name.
func routeOrder(m map[string]*agg) []string {
	known := []string{RouteCreateSite, RouteWaitOp, RouteListSites, RouteGetSite, RouteCreateBackup, RouteDeleteSite}
	var out []string
	for _, r := range known {
		if _, ok := m[r]; ok {
			out = append(out, r)
		}
	}
	for _, r := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(known, r) {
			out = append(out, r)
		}
	}
	return out
}

// series returns the per-second figures; users gives the user count at a second.
func (c *collector) series(users func(sec int) int) []Second {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Second, len(c.seconds))
	for i, s := range c.seconds {
		out[i] = Second{T: i, Users: users(i), Requests: s.requests, Errors: s.errors, HeapMB: s.heapMB}
		if s.latN > 0 {
			out[i].P50 = ms(s.lat.Quantile(0.50))
			out[i].P95 = ms(s.lat.Quantile(0.95))
			out[i].P99 = ms(s.lat.Quantile(0.99))
		}
	}
	return out
}

// Second is what happened in one second of a scenario: requests that ended in
// it, their errors, latency percentiles (held long polls excluded), the users
// running and the Go heap in use (of the whole process, the stack included
// when it runs in-process).
type Second struct {
	T        int     `json:"t"`
	Users    int     `json:"users"`
	Requests uint64  `json:"requests"`
	Errors   uint64  `json:"errors"`
	P50      float64 `json:"p50_ms"`
	P95      float64 `json:"p95_ms"`
	P99      float64 `json:"p99_ms"`
	HeapMB   float64 `json:"heap_mb,omitempty"`
}

// RouteFigures are the figures of one route.
type RouteFigures struct {
	Route string `json:"route"`
	// Held marks a long-poll route, left out of the scenario's latency.
	Held    bool    `json:"held,omitempty"`
	Figures Figures `json:"figures"`
}
