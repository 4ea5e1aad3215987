package tlsenv

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// PollOptions configures a Poller.
type PollOptions struct {
	// KeepAlive reuses connections (one HTTP/2 connection, as a browser
	// keeps); false opens a new connection, with a new handshake, for every
	// request. Env.StartPoller reads it; StartPoller takes the client as
	// given.
	KeepAlive bool
	// Interval is the pause between requests; 0 is 5 ms (a steady client,
	// not a CPU hog on a shared machine).
	Interval time.Duration
	// AllowHTTP1 accepts answers over HTTP/1.1; by default a response that
	// is not HTTP/2 is an error, since every HTTPS block serves HTTP/2.
	AllowHTTP1 bool
}

// PollError is one failed request: a transport or TLS error (a handshake
// that does not verify against the client's roots included), a status other
// than 200, a protocol other than HTTP/2, a body cut short.
type PollError struct {
	At  time.Time
	Err string
}

// SerialSeen is one certificate the poller was served, in the order first
// seen.
type SerialSeen struct {
	// Serial is the leaf's serial (LeafSerial).
	Serial string
	// First and Last are when a response first and last carried it.
	First, Last time.Time
	// Responses is how many responses carried it.
	Responses int
}

// PollReport is what a Poller saw.
type PollReport struct {
	URL string
	// Started and Stopped bound the polling.
	Started, Stopped time.Time
	// Requests counts every request sent, failed ones included.
	Requests int
	// Errors are the failed requests, in order.
	Errors []PollError
	// Serials are the distinct serials served, in the order first seen.
	Serials []SerialSeen
	// Switches counts responses whose serial differed from the previous
	// successful response's: 1 for a clean replacement; more when old and
	// new workers took turns answering.
	Switches int
}

// SerialList is the serials of r.Serials, in order.
func (r PollReport) SerialList() []string {
	out := make([]string, len(r.Serials))
	for i, s := range r.Serials {
		out[i] = s.Serial
	}
	return out
}

// Seen returns what r says of serial, or false when it was never served.
func (r PollReport) Seen(serial string) (SerialSeen, bool) {
	for _, s := range r.Serials {
		if s.Serial == serial {
			return s, true
		}
	}
	return SerialSeen{}, false
}

// String summarises r: requests, errors (the first five), serials.
func (r PollReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d requests in %v, %d errors, %d switches", r.URL, r.Requests,
		r.Stopped.Sub(r.Started).Round(time.Millisecond), len(r.Errors), r.Switches)
	for i, e := range r.Errors {
		if i == 5 {
			fmt.Fprintf(&b, "; …")
			break
		}
		fmt.Fprintf(&b, "; error at +%v: %s", e.At.Sub(r.Started).Round(time.Millisecond), e.Err)
	}
	for _, s := range r.Serials {
		fmt.Fprintf(&b, "; serial %s ×%d from +%v to +%v", s.Serial, s.Responses,
			s.First.Sub(r.Started).Round(time.Millisecond), s.Last.Sub(r.Started).Round(time.Millisecond))
	}
	return b.String()
}

// Poller GETs one URL in a loop, one request at a time, until stopped, and
// records every request: errors with their time and text, and the serials
// of the certificates served. A request in flight when Stop is called is
// finished, not cancelled, so stopping never shows up as an error.
type Poller struct {
	client *http.Client
	url    string
	opts   PollOptions

	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu     sync.Mutex
	report PollReport
	lastOK string // serial of the last successful response
	// streak is the serial every response since streakStart carried (""
	// after an error).
	streak      string
	streakStart time.Time
}

// StartPoller polls url with client until Stop, or cleanup. client should
// not follow redirects (a redirect answered is an error, not followed).
func StartPoller(tb testing.TB, client *http.Client, url string, opts PollOptions) *Poller {
	tb.Helper()
	if opts.Interval == 0 {
		opts.Interval = 5 * time.Millisecond
	}
	p := &Poller{client: client, url: url, opts: opts, stop: make(chan struct{}), done: make(chan struct{})}
	p.report = PollReport{URL: url, Started: time.Now()}
	ctx := tb.Context()
	go p.run(ctx)
	tb.Cleanup(func() { p.Stop() })
	return p
}

// run polls until Stop or the end of ctx (the test's).
func (p *Poller) run(ctx context.Context) {
	defer close(p.done)
	defer p.client.CloseIdleConnections()
	for {
		select {
		case <-p.stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		p.poll()
		select {
		case <-p.stop:
			return
		case <-time.After(p.opts.Interval):
		}
	}
}

// poll sends one request and records it. The request is not bound to the
// test's context: Stop lets it finish (the client's timeout bounds it).
func (p *Poller) poll() {
	req, err := http.NewRequest(http.MethodGet, p.url, nil)
	if err != nil {
		p.record("", err)
		return
	}
	resp, err := p.client.Do(req)
	if err != nil {
		p.record("", err)
		return
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	switch {
	case err != nil:
		p.record("", fmt.Errorf("read the body: %w", err))
	case resp.StatusCode != http.StatusOK:
		p.record("", fmt.Errorf("status %s", resp.Status))
	case resp.ProtoMajor != 2 && !p.opts.AllowHTTP1:
		p.record("", fmt.Errorf("served over %s, want HTTP/2.0", resp.Proto))
	default:
		p.record(LeafSerial(resp), nil)
	}
}

func (p *Poller) record(serial string, err error) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	r := &p.report
	r.Requests++
	if err != nil {
		r.Errors = append(r.Errors, PollError{At: now, Err: err.Error()})
		p.streak, p.streakStart = "", time.Time{}
		return
	}
	if p.lastOK != "" && serial != p.lastOK {
		r.Switches++
	}
	p.lastOK = serial
	if serial != p.streak {
		p.streak, p.streakStart = serial, now
	}
	for i := range r.Serials {
		if r.Serials[i].Serial == serial {
			r.Serials[i].Last = now
			r.Serials[i].Responses++
			return
		}
	}
	r.Serials = append(r.Serials, SerialSeen{Serial: serial, First: now, Last: now, Responses: 1})
}

// Report returns what the poller has seen so far.
func (p *Poller) Report() PollReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.report
	r.Errors = append([]PollError(nil), r.Errors...)
	r.Serials = append([]SerialSeen(nil), r.Serials...)
	if r.Stopped.IsZero() {
		r.Stopped = time.Now()
	}
	return r
}

// Stop ends the polling after the request in flight and returns the report;
// later calls return the same report.
func (p *Poller) Stop() PollReport {
	p.once.Do(func() {
		close(p.stop)
		<-p.done
		p.mu.Lock()
		p.report.Stopped = time.Now()
		p.mu.Unlock()
	})
	return p.Report()
}

// WaitServed waits until every response for at least d has carried serial
// (no error, no other serial in between) and fails tb when that has not
// happened within 30 s: the "eventually" of a replacement.
func (p *Poller) WaitServed(tb testing.TB, serial string, d time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		p.mu.Lock()
		ok := p.streak == serial && time.Since(p.streakStart) >= d
		p.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-p.done:
			tb.Fatalf("tlsenv: the poller stopped before serial %s was served for %v: %v", serial, d, p.Report())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("tlsenv: serial %s not served for %v within 30s: %v", serial, d, p.Report())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
