// Command openloop sends requests at a fixed rate (an open-loop load, unlike wrk's
// closed loop, where latency is only concurrency divided by throughput) and prints
// the latency distribution at that rate. It drives one of two routes of a CHOM on
// a loopback address:
//
//	go run ./scripts/load/openloop -mode create -rate 5000 -duration 20s -url http://127.0.0.1:8080 -token chom_…
//	go run ./scripts/load/openloop -mode poll -ids ids.txt -rate 25000 -duration 20s -url … -token …
//
// scripts/load/accept.sh and poll.sh call it with OPEN_LOOP_RATE set.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

func main() {
	base := flag.String("url", "", "CHOM base URL (loopback only)")
	token := flag.String("token", "", "API token")
	mode := flag.String("mode", "create", "create (POST /api/v1/sites) or poll (GET /api/v1/operations/{id})")
	ids := flag.String("ids", "", "poll: file of operation IDs, one per line")
	rate := flag.Int("rate", 5000, "requests per second")
	duration := flag.Duration("duration", 20*time.Second, "how long to send")
	conns := flag.Int("connections", 200, "most connections (and requests in flight)")
	flag.Parse()
	if err := run(*base, *token, *mode, *ids, *rate, *duration, *conns); err != nil {
		fmt.Fprintln(os.Stderr, "openloop:", err)
		os.Exit(1)
	}
}

func run(base, token, mode, idsFile string, rate int, duration time.Duration, conns int) error {
	u, err := url.Parse(base)
	if err != nil || u.Hostname() == "" {
		return fmt.Errorf("bad -url %q", base)
	}
	if ip := net.ParseIP(u.Hostname()); u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("-url must be a loopback address, got %q", u.Hostname())
	}
	hdr := http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"application/json"}}
	var n atomic.Int64
	stamp := time.Now().UnixNano()
	var targeter vegeta.Targeter
	switch mode {
	case "create":
		targeter = func(t *vegeta.Target) error {
			i := n.Add(1)
			t.Method, t.URL, t.Header = "POST", base+"/api/v1/sites", hdr
			t.Body = []byte(fmt.Sprintf(`{"domain":"o%d-%d.openloop.example","site_type":"html"}`, stamp, i))
			return nil
		}
	case "poll":
		list, err := readLines(idsFile)
		if err != nil || len(list) == 0 {
			return fmt.Errorf("poll needs -ids with at least one ID: %v", err)
		}
		targeter = func(t *vegeta.Target) error {
			i := n.Add(1)
			t.Method, t.URL, t.Header = "GET", base+"/api/v1/operations/"+list[int(i)%len(list)], hdr
			return nil
		}
	default:
		return fmt.Errorf("-mode must be create or poll")
	}
	attacker := vegeta.NewAttacker(vegeta.Connections(conns), vegeta.MaxConnections(conns),
		vegeta.MaxWorkers(uint64(conns)), vegeta.Timeout(10*time.Second), vegeta.KeepAlive(true))
	var m vegeta.Metrics
	for res := range attacker.Attack(targeter, vegeta.Rate{Freq: rate, Per: time.Second}, duration, mode) {
		m.Add(res)
	}
	m.Close()
	fmt.Printf("open loop %s: target %d req/s, sent %d in %s = %.0f req/s, throughput %.0f/s; p50 %.2fms p90 %.2fms p99 %.2fms max %.2fms; success %.4f%%; status %v\n",
		mode, rate, m.Requests, m.Duration.Round(time.Millisecond), m.Rate, m.Throughput,
		ms(m.Latencies.P50), ms(m.Latencies.P90), ms(m.Latencies.P99), ms(m.Latencies.Max), 100*m.Success, m.StatusCodes)
	if len(m.Errors) > 0 {
		fmt.Printf("errors: %v\n", m.Errors)
	}
	return nil
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
