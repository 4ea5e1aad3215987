// Command openloop sends requests at a fixed rate (an open-loop load, unlike wrk's
// closed loop, where latency is only concurrency divided by throughput) and prints
// the latency distribution at that rate. It drives one of two routes of a CHOM on
// a loopback address:
//
//	go run ./scripts/load/openloop -mode create -rate 8000 -duration 20s -url http://127.0.0.1:8080 -token chom_…
//	go run ./scripts/load/openloop -mode poll -ids ids.txt -rate 25000 -duration 20s -url … -token …
//
// scripts/load/accept.sh runs it with OPEN_LOOP_RATE set.
//
// Two latencies are printed. vegeta's own runs from the moment a worker sent the
// request; when every connection is busy the next send waits, and that wait is
// missing from it (coordinated omission). The "from schedule" latency runs from
// the moment the request was due at the fixed rate (request n at n/rate after the
// start) to its answer, so a stall of the server shows in full, as a client
// arriving on its own schedule would see it; the goal is judged on that one.
// "late" says how far behind its schedule the worst send went.
//
// With -result FILE it also writes key=value lines there (requests, s202,
// non202, errors, latencies in ms), the form scripts/load/create-site.lua
// writes for accept.sh's ledger.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

type options struct {
	base, token, mode, idsFile, result, runTag string
	rate, conns                                int
	duration                                   time.Duration
	idempotency                                bool
}

func main() {
	var o options
	flag.StringVar(&o.base, "url", "", "CHOM base URL (loopback only)")
	flag.StringVar(&o.token, "token", "", "API token")
	flag.StringVar(&o.mode, "mode", "create", "create (POST /api/v1/sites) or poll (GET /api/v1/operations/{id})")
	flag.StringVar(&o.idsFile, "ids", "", "poll: file of operation IDs, one per line")
	flag.IntVar(&o.rate, "rate", 5000, "requests per second")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "how long to send")
	flag.IntVar(&o.conns, "connections", 200, "most connections (and requests in flight)")
	flag.StringVar(&o.result, "result", "", "write key=value results to this file")
	flag.StringVar(&o.runTag, "run", "", "create: tag put in every domain (default: the start time)")
	flag.BoolVar(&o.idempotency, "idempotency", false, "create: send a unique Idempotency-Key with every request")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "openloop:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	u, err := url.Parse(o.base)
	if err != nil || u.Hostname() == "" {
		return fmt.Errorf("bad -url %q", o.base)
	}
	if ip := net.ParseIP(u.Hostname()); u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("-url must be a loopback address, got %q", u.Hostname())
	}
	if o.rate <= 0 || o.duration <= 0 {
		return fmt.Errorf("-rate and -duration must be positive")
	}
	hdr := http.Header{"Authorization": {"Bearer " + o.token}, "Content-Type": {"application/json"}}
	var n atomic.Int64
	tag := o.runTag
	if tag == "" {
		tag = strconv.FormatInt(time.Now().UnixNano(), 10)
	}
	var targeter vegeta.Targeter
	switch o.mode {
	case "create":
		targeter = func(t *vegeta.Target) error {
			i := n.Add(1)
			domain := fmt.Sprintf("o%d.r%s.openloop.example", i, tag)
			t.Method, t.URL, t.Header = "POST", o.base+"/api/v1/sites", hdr
			if o.idempotency {
				t.Header = hdr.Clone()
				t.Header.Set("Idempotency-Key", "load-"+domain)
			}
			t.Body = []byte(`{"domain":"` + domain + `","site_type":"html"}`)
			return nil
		}
	case "poll":
		list, err := readLines(o.idsFile)
		if err != nil || len(list) == 0 {
			return fmt.Errorf("poll needs -ids with at least one ID: %v", err)
		}
		targeter = func(t *vegeta.Target) error {
			i := n.Add(1)
			t.Method, t.URL, t.Header = "GET", o.base+"/api/v1/operations/"+list[int(i)%len(list)], hdr
			return nil
		}
	default:
		return fmt.Errorf("-mode must be create or poll")
	}
	attacker := vegeta.NewAttacker(vegeta.Connections(o.conns), vegeta.MaxConnections(o.conns),
		vegeta.MaxWorkers(uint64(o.conns)), vegeta.Timeout(10*time.Second), vegeta.KeepAlive(true))
	// vegeta's ConstantPacer sends request seq at began + (seq+1)·interval,
	// began being taken inside Attack, microseconds after this.
	interval := time.Second / time.Duration(o.rate)
	start := time.Now()
	var m vegeta.Metrics
	sched := make([]time.Duration, 0, int(float64(o.rate)*o.duration.Seconds())+1)
	var late time.Duration
	s202 := 0
	for res := range attacker.Attack(targeter, vegeta.Rate{Freq: o.rate, Per: time.Second}, o.duration, o.mode) {
		m.Add(res)
		due := start.Add(time.Duration(res.Seq+1) * interval)
		sched = append(sched, res.Timestamp.Add(res.Latency).Sub(due))
		if d := res.Timestamp.Sub(due); d > late {
			late = d
		}
		if res.Code == 202 {
			s202++
		}
	}
	m.Close()
	slices.Sort(sched)
	pct := func(p float64) time.Duration {
		if len(sched) == 0 {
			return 0
		}
		return max(sched[min(len(sched)-1, int(p*float64(len(sched))))], 0)
	}
	fmt.Printf("open loop %s: target %d req/s, sent %d in %s = %.0f req/s, throughput %.0f/s; success %.4f%%; status %v\n",
		o.mode, o.rate, m.Requests, m.Duration.Round(time.Millisecond), m.Rate, m.Throughput, 100*m.Success, m.StatusCodes)
	fmt.Printf("  from schedule  p50 %.2fms p90 %.2fms p99 %.2fms p99.9 %.2fms max %.2fms  (worst send %.2fms late)\n",
		ms(pct(.50)), ms(pct(.90)), ms(pct(.99)), ms(pct(.999)), ms(pct(1)), ms(late))
	fmt.Printf("  from send      p50 %.2fms p90 %.2fms p99 %.2fms max %.2fms  (vegeta's own)\n",
		ms(m.Latencies.P50), ms(m.Latencies.P90), ms(m.Latencies.P99), ms(m.Latencies.Max))
	if len(m.Errors) > 0 {
		fmt.Printf("errors: %v\n", m.Errors)
	}
	if o.result != "" {
		return writeResult(o.result, &m, s202, pct, late)
	}
	return nil
}

// writeResult writes the figures accept.sh reads, in create-site.lua's keys.
func writeResult(path string, m *vegeta.Metrics, s202 int, pct func(float64) time.Duration, late time.Duration) error {
	errs := 0 // requests without an HTTP answer (timeout, connection error)
	var non202 []string
	for code, c := range m.StatusCodes {
		if code == "0" {
			errs += c
		} else if code != "202" {
			non202 = append(non202, code+"="+strconv.Itoa(c))
		}
	}
	sort.Strings(non202)
	var b strings.Builder
	kv := func(k string, v any) { fmt.Fprintf(&b, "%s=%v\n", k, v) }
	kv("requests", int(m.Requests)-errs) // answered, as wrk counts them
	kv("sent", m.Requests)
	kv("offered_rps", fmt.Sprintf("%.0f", m.Rate))
	kv("rps", fmt.Sprintf("%.0f", m.Throughput))
	kv("s202", s202)
	kv("non202", int(m.Requests)-errs-s202)
	kv("non202_by_status", strings.Join(non202, ","))
	kv("err_connect", 0)
	kv("err_read", 0)
	kv("err_write", 0)
	kv("err_timeout", errs)
	for _, p := range []struct {
		k string
		q float64
	}{{"p50_ms", .50}, {"p90_ms", .90}, {"p99_ms", .99}, {"p999_ms", .999}, {"max_ms", 1}} {
		kv(p.k, fmt.Sprintf("%.1f", ms(pct(p.q))))
	}
	kv("send_p99_ms", fmt.Sprintf("%.1f", ms(m.Latencies.P99)))
	kv("late_ms", fmt.Sprintf("%.1f", ms(late)))
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); l != "" {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}
