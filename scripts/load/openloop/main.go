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
// Request n (from 0) is due at start + n/rate, whatever the answers do. Due
// requests wait in one queue for the first free connection (at most
// -connections, each a keep-alive HTTP/1.1 connection opened before the start),
// so a server that stalls makes them wait and the wait counts: latency runs from
// the moment a request was due to its answer, as a client arriving on its own
// schedule would see it (no coordinated omission). "from send" is the part
// after the request was written, and "late" how far behind its schedule the
// worst send went. A request that could not be sent within -timeout of its due
// time is given up, as a client would, and counted as a timeout: a server that
// cannot keep up makes the run fail instead of making it last for ever.
//
// It is written for a low cost per request, since on a small machine it shares
// the cores with the server it measures: one goroutine per connection writing
// pre-built request bytes and reading the answer with net/http's parser, the
// schedule released about once a millisecond, latencies kept in per-connection
// slices. (vegeta, used before, cost about three times as much CPU per request
// as wrk; this about as much as wrk.)
//
// With -result FILE it also writes key=value lines there (requests, s202,
// non202, errors, latencies in ms), the keys scripts/load/create-site.lua
// writes, for accept.sh's ledger.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

type options struct {
	base, token, mode, idsFile, result, runTag string
	rate, conns                                int
	duration, timeout                          time.Duration
	idempotency                                bool
	timeline                                   string
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
	flag.DurationVar(&o.timeout, "timeout", 10*time.Second, "per-request timeout")
	flag.StringVar(&o.result, "result", "", "write key=value results to this file")
	flag.StringVar(&o.runTag, "run", "", "create: tag put in every domain (default: the start time)")
	flag.BoolVar(&o.idempotency, "idempotency", false, "create: send a unique Idempotency-Key with every request")
	flag.StringVar(&o.timeline, "timeline", "", "write one CSV line per answered request (due, written, answered: ms from the start) to this file")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "openloop:", err)
		os.Exit(1)
	}
}

// conn is one connection's worker and what it measured.
type conn struct {
	addr  string
	c     net.Conn
	br    *bufio.Reader
	buf   []byte
	sched []time.Duration // due → answered, per answered request
	sent  []time.Duration // written → answered
	late  time.Duration   // the worst due → written
	times []requestTimes  // per answered request, with -timeline
	start time.Time       // the schedule's start, with -timeline
	codes map[int]int     // status → count; 0 = no answer (error or timeout)
	errs  map[string]int
}

func run(o options) error {
	u, err := url.Parse(o.base)
	if err != nil || u.Hostname() == "" || u.Scheme != "http" {
		return fmt.Errorf("bad -url %q (http://host:port)", o.base)
	}
	if ip := net.ParseIP(u.Hostname()); u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("-url must be a loopback address, got %q", u.Hostname())
	}
	if o.rate <= 0 || o.duration <= 0 || o.conns <= 0 {
		return errors.New("-rate, -duration and -connections must be positive")
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	tag := o.runTag
	if tag == "" {
		tag = strconv.FormatInt(time.Now().UnixNano(), 10)
	}
	var build func(buf []byte, n int64) []byte
	switch o.mode {
	case "create":
		head := "POST /api/v1/sites HTTP/1.1\r\nHost: " + u.Host + "\r\nAuthorization: Bearer " + o.token +
			"\r\nContent-Type: application/json\r\n"
		build = func(buf []byte, n int64) []byte {
			domain := "o" + strconv.FormatInt(n, 10) + ".r" + tag + ".openloop.example"
			body := `{"domain":"` + domain + `","site_type":"html"}`
			buf = append(buf, head...)
			if o.idempotency {
				buf = append(buf, "Idempotency-Key: load-"+domain+"\r\n"...)
			}
			buf = append(buf, "Content-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"...)
			return append(buf, body...)
		}
	case "poll":
		list, err := readLines(o.idsFile)
		if err != nil || len(list) == 0 {
			return fmt.Errorf("poll needs -ids with at least one ID: %v", err)
		}
		build = func(buf []byte, n int64) []byte {
			return append(buf, "GET /api/v1/operations/"+list[int(n)%len(list)]+" HTTP/1.1\r\nHost: "+u.Host+
				"\r\nAuthorization: Bearer "+o.token+"\r\n\r\n"...)
		}
	default:
		return errors.New("-mode must be create or poll")
	}

	total := int64(float64(o.rate) * o.duration.Seconds())
	conns := make([]*conn, o.conns)
	for i := range conns {
		c := &conn{addr: addr, codes: map[int]int{}, errs: map[string]int{},
			sched: make([]time.Duration, 0, total/int64(o.conns)+16)}
		if err := c.dial(); err != nil {
			return fmt.Errorf("connect %s: %w", addr, err)
		}
		conns[i] = c
	}
	// The whole run's requests fit in the queue: the schedule never waits.
	due := make(chan int64, total)
	interval := float64(time.Second) / float64(o.rate)
	at := func(n int64) time.Duration { return time.Duration(float64(n) * interval) }
	start := time.Now().Add(10 * time.Millisecond)
	var wg sync.WaitGroup
	for _, c := range conns {
		if o.timeline != "" {
			c.start = start
			c.times = make([]requestTimes, 0, cap(c.sched))
		}
		wg.Go(func() {
			for n := range due {
				c.do(build, n, start.Add(at(n)), o.timeout)
			}
		})
	}
	// Release every request due by now, then sleep until the next one is due
	// (at least about a millisecond: the timer's resolution).
	for n := int64(0); n < total; {
		now := time.Since(start)
		for ; n < total && at(n) <= now; n++ {
			due <- n
		}
		if n < total {
			time.Sleep(max(at(n)-now, 500*time.Microsecond))
		}
	}
	close(due)
	wg.Wait()
	elapsed := time.Since(start)
	for _, c := range conns {
		if c.c != nil {
			c.c.Close()
		}
	}
	if o.timeline != "" {
		if err := writeTimeline(o.timeline, start, conns); err != nil {
			return err
		}
	}
	return report(o, conns, total, elapsed)
}

// requestTimes is when one answered request was due, written and answered,
// from the schedule's start.
type requestTimes struct{ due, wrote, answered time.Duration }

// writeTimeline writes every answered request's times as CSV, in due order, so
// a stall can be placed in time and matched with the server's own logs.
func writeTimeline(path string, start time.Time, conns []*conn) error {
	var all []requestTimes
	for _, c := range conns {
		all = append(all, c.times...)
	}
	slices.SortFunc(all, func(a, b requestTimes) int { return int(a.due - b.due) })
	var b strings.Builder
	fmt.Fprintf(&b, "# start %s\ndue_ms,written_ms,answered_ms\n", start.UTC().Format(time.RFC3339Nano))
	for _, t := range all {
		fmt.Fprintf(&b, "%.3f,%.3f,%.3f\n", ms(t.due), ms(t.wrote), ms(t.answered))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write timeline: %w", err)
	}
	return nil
}

func (c *conn) dial() error {
	nc, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
	if err != nil {
		return err
	}
	c.c, c.br = nc, bufio.NewReaderSize(nc, 4096)
	return nil
}

// do sends request n, due at due, and records its answer.
func (c *conn) do(build func([]byte, int64) []byte, n int64, due time.Time, timeout time.Duration) {
	fail := func(what string, err error) {
		c.codes[0]++
		c.errs[what+": "+err.Error()]++
		if c.c != nil {
			c.c.Close()
			c.c = nil
		}
	}
	if behind := time.Since(due); behind > timeout {
		// A client would have given up by now: count it as a timeout, unsent.
		// This also bounds a run against a server that cannot keep up to
		// about -duration + -timeout.
		c.codes[0]++
		c.errs[fmt.Sprintf("not sent: more than %s behind schedule", timeout)]++
		return
	}
	if c.c == nil {
		if err := c.dial(); err != nil {
			fail("connect", err)
			return
		}
	}
	c.buf = build(c.buf[:0], n)
	wrote := time.Now()
	c.late = max(c.late, wrote.Sub(due))
	_ = c.c.SetDeadline(wrote.Add(timeout))
	if _, err := c.c.Write(c.buf); err != nil {
		fail("write", err)
		return
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		fail("read", err)
		return
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		fail("read body", err)
		return
	}
	end := time.Now()
	c.codes[resp.StatusCode]++
	c.sched = append(c.sched, end.Sub(due))
	c.sent = append(c.sent, end.Sub(wrote))
	if c.times != nil {
		c.times = append(c.times, requestTimes{due.Sub(c.start), wrote.Sub(c.start), end.Sub(c.start)})
	}
	if resp.Close {
		c.c.Close()
		c.c = nil
	}
}

func report(o options, conns []*conn, total int64, elapsed time.Duration) error {
	var sched, sent []time.Duration
	var late time.Duration
	codes := map[int]int{}
	errs := map[string]int{}
	for _, c := range conns {
		sched = append(sched, c.sched...)
		sent = append(sent, c.sent...)
		late = max(late, c.late)
		for k, v := range c.codes {
			codes[k] += v
		}
		for k, v := range c.errs {
			errs[k] += v
		}
	}
	slices.Sort(sched)
	slices.Sort(sent)
	pct := func(d []time.Duration, p float64) time.Duration {
		if len(d) == 0 {
			return 0
		}
		return d[min(len(d)-1, int(p*float64(len(d))))]
	}
	answered := len(sched)
	var statuses []string
	for k, v := range codes {
		statuses = append(statuses, fmt.Sprintf("%d:%d", k, v))
	}
	sort.Strings(statuses)
	fmt.Printf("open loop %s: target %d req/s for %s, scheduled %d, answered %d in %s = %.0f/s; status %s (0: not answered)\n",
		o.mode, o.rate, o.duration, total, answered, elapsed.Round(time.Millisecond),
		float64(answered)/elapsed.Seconds(), strings.Join(statuses, " "))
	fmt.Printf("  from schedule  p50 %.2fms p90 %.2fms p99 %.2fms p99.9 %.2fms max %.2fms  (worst send %.2fms late)\n",
		ms(pct(sched, .50)), ms(pct(sched, .90)), ms(pct(sched, .99)), ms(pct(sched, .999)), ms(pct(sched, 1)), ms(late))
	fmt.Printf("  from send      p50 %.2fms p90 %.2fms p99 %.2fms max %.2fms\n",
		ms(pct(sent, .50)), ms(pct(sent, .90)), ms(pct(sent, .99)), ms(pct(sent, 1)))
	for e, n := range errs {
		fmt.Printf("  error ×%d: %s\n", n, e)
	}
	if o.result == "" {
		return nil
	}
	var non202 []string
	for code, n := range codes {
		if code != 0 && code != 202 {
			non202 = append(non202, strconv.Itoa(code)+"="+strconv.Itoa(n))
		}
	}
	sort.Strings(non202)
	var b strings.Builder
	kv := func(k string, v any) { fmt.Fprintf(&b, "%s=%v\n", k, v) }
	kv("requests", answered) // answered, as wrk counts them
	kv("sent", total)
	kv("offered_rps", fmt.Sprintf("%.0f", float64(total)/o.duration.Seconds()))
	kv("rps", fmt.Sprintf("%.0f", float64(answered)/elapsed.Seconds()))
	kv("s202", codes[202])
	kv("non202", answered-codes[202])
	kv("non202_by_status", strings.Join(non202, ","))
	kv("err_connect", 0)
	kv("err_read", 0)
	kv("err_write", 0)
	kv("err_timeout", codes[0])
	for _, p := range []struct {
		k string
		q float64
	}{{"p50_ms", .50}, {"p90_ms", .90}, {"p99_ms", .99}, {"p999_ms", .999}, {"max_ms", 1}} {
		kv(p.k, fmt.Sprintf("%.1f", ms(pct(sched, p.q))))
	}
	kv("send_p99_ms", fmt.Sprintf("%.1f", ms(pct(sent, .99))))
	kv("late_ms", fmt.Sprintf("%.1f", ms(late)))
	return os.WriteFile(o.result, []byte(b.String()), 0o644)
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
