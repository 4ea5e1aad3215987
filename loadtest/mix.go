package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Mix is what each virtual user does in its loop.
type Mix string

const (
	// MixUser is the user mix of a real API caller: create a site (with an
	// Idempotency-Key), wait for its operation, list sites, read the site,
	// create a backup when the API has backups, delete the site and wait for
	// that operation too.
	MixUser Mix = "user"
	// MixAccept sends only POST /sites, each with a unique domain and
	// Idempotency-Key, and never waits for the work: the accept path alone.
	MixAccept Mix = "accept"
)

// siteTypes rotate over the created sites, so every template of the local
// driver is exercised.
var siteTypes = []string{"html", "php", "wordpress", "laravel"}

// maxBody is the most of a response body the harness reads; the API's pages
// are far smaller.
const maxBody = 1 << 20

// opView is the part of an operation the harness reads.
type opView struct {
	ID         string `json:"id"`
	Type       string `json:"type"`
	Status     string `json:"status"`
	TargetType string `json:"target_type"`
	TargetID   string `json:"target_id"`
}

func terminal(status string) bool {
	return status == "succeeded" || status == "failed" || status == "cancelled"
}

// response is one request's outcome as the mix sees it.
type response struct {
	sample Sample
	status int
	body   []byte
	err    error
	// cut is true when the harness itself cancelled the request (a user
	// stopped); such a request is not recorded.
	cut bool
}

// session is one Runner.Run: the scenario's users share it.
type session struct {
	r     *Runner
	name  string
	mix   Mix
	col   *collector
	stage atomic.Int32
	seq   atomic.Uint64
	wait  time.Duration
	// accepted counts 202s of MixAccept, whose operation IDs are not kept.
	accepted atomic.Uint64
	ledger   ledger
}

// call sends one request and times it until its body is read. It does not
// record it: see send.
func (s *session) call(ctx context.Context, token, route, method, path string, body []byte, idemKey string) response {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.r.base+path, rd)
	if err != nil {
		// Only an ID the server sent could make the URL unparseable: count it.
		err = fmt.Errorf("build request %s: %w", route, err)
		return response{err: err, sample: Sample{Route: route, Class: ClassConnection, Result: vegeta.Result{
			Attack: s.name, Seq: s.seq.Add(1), Timestamp: time.Now(), Method: method, URL: route, Error: err.Error()}}}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	start := time.Now()
	res, err := s.r.client.Do(req)
	var raw []byte
	if err == nil {
		raw, err = io.ReadAll(io.LimitReader(res.Body, maxBody))
		_ = res.Body.Close()
	}
	lat := time.Since(start)
	out := response{body: raw, err: err}
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		out.cut = true
		return out
	}
	smp := Sample{Route: route, Result: vegeta.Result{
		Attack: s.name, Seq: s.seq.Add(1), Timestamp: start, Latency: lat, Method: method, URL: route,
		BytesOut: uint64(len(body)), BytesIn: uint64(len(raw)),
	}}
	if err != nil {
		smp.Error = err.Error()
	} else {
		out.status = res.StatusCode
		smp.Code = uint16(res.StatusCode)
		if res.StatusCode >= 400 {
			smp.Error = fmt.Sprintf("HTTP %d %s", res.StatusCode, problemTitle(raw))
		}
	}
	smp.Class = Classify(out.status, err)
	out.sample = smp
	return out
}

// problemTitle is the title and detail of a problem+json body, or "".
func problemTitle(raw []byte) string {
	var p struct {
		Title  string `json:"title"`
		Detail string `json:"detail"`
	}
	if json.Unmarshal(raw, &p) != nil || p.Title == "" {
		return ""
	}
	if p.Detail == "" {
		return p.Title
	}
	return p.Title + ": " + p.Detail
}

// record adds a response to the figures unless the harness cut it.
func (s *session) record(stage int, res response) {
	if !res.cut {
		s.col.add(stage, &res.sample)
	}
}

// send is call then record.
func (s *session) send(ctx context.Context, token, route, method, path string, body []byte, idemKey string) response {
	stage := int(s.stage.Load())
	res := s.call(ctx, token, route, method, path, body, idemKey)
	s.record(stage, res)
	return res
}

// user runs one virtual user until stop ends (at the next request boundary) or
// hard ends (at once). Long polls run under stop, so a stopping user does not
// hold the end of a stage for the length of a poll.
func (s *session) user(stop, hard context.Context, id int) {
	token := s.r.token(id)
	for stop.Err() == nil {
		n := s.r.seq.Add(1)
		var ok bool
		switch s.mix {
		case MixAccept:
			ok = s.acceptOnce(stop, hard, token, n)
		default:
			ok = s.iteration(stop, hard, token, n)
		}
		pause := s.r.cfg.Think
		if !ok {
			// A failed step (most often a refused connection) would otherwise
			// spin; real clients back off too.
			pause = max(pause, 50*time.Millisecond)
		}
		if pause > 0 {
			sleep(stop, pause)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// domain is the domain of the n-th site of the run.
func (s *session) domain(n uint64) string { return fmt.Sprintf("n%d.r%s.lt.example", n, s.r.runID) }

// createBody is the POST /sites body of the n-th site of the run.
func (s *session) createBody(n uint64) ([]byte, string) {
	body, _ := json.Marshal(map[string]string{"domain": s.domain(n), "site_type": siteTypes[n%uint64(len(siteTypes))]})
	return body, fmt.Sprintf("lt-%s-%d", s.r.runID, n)
}

// accept puts an operation answered 202 in the ledger and, when the runner
// keeps a journal, in the journal.
func (s *session) accept(op opView, domain string) {
	s.ledger.accepted(op.ID)
	s.r.journal(AcceptedOp{ID: op.ID, Type: op.Type, TargetID: op.TargetID, Domain: domain})
}

// resendPause is how long a request whose answer was lost waits before it is
// sent again.
const resendPause = 200 * time.Millisecond

// sendIdempotent sends a request that carries an Idempotency-Key and sends it
// again, with the same key, while its answer is lost (see answerLost), as a
// careful API client does: the key makes the resend of a request that had
// committed answer that same operation, so nothing is done twice and no
// operation exists that the client was not told about. Every attempt is a
// sample of its own. It gives up once the operation timeout has passed since
// the first attempt, or when ctx ends.
func (s *session) sendIdempotent(ctx context.Context, token, route, method, path string, body []byte, idemKey string) response {
	res := s.send(ctx, token, route, method, path, body, idemKey)
	return s.untilAnswered(ctx, res, func() response { return s.send(ctx, token, route, method, path, body, idemKey) })
}

// untilAnswered calls resend while res's answer is lost, pausing resendPause
// between attempts, for at most the operation timeout.
func (s *session) untilAnswered(ctx context.Context, res response, resend func() response) response {
	deadline := time.Now().Add(s.r.cfg.OpTimeout)
	for !res.cut && answerLost(res) && time.Now().Before(deadline) {
		if sleep(ctx, resendPause); ctx.Err() != nil {
			return response{cut: true}
		}
		res = resend()
	}
	return res
}

// answerLost reports whether a response leaves the request's outcome unknown
// or says to come back: a transport error (a connection refused or reset, a
// timeout), 429, or a 5xx (a balancer's 502/503/504 when an ingress died
// mid-request, or a server error after the request may have committed).
func answerLost(res response) bool {
	return res.err != nil || res.status == http.StatusTooManyRequests || res.status >= 500
}

// acceptOnce sends one POST /sites; it reports whether it got a 202.
func (s *session) acceptOnce(stop, hard context.Context, token string, n uint64) bool {
	if stop.Err() != nil {
		return true
	}
	body, key := s.createBody(n)
	res := s.sendIdempotent(hard, token, RouteCreateSite, http.MethodPost, "/api/v1/sites", body, key)
	if res.status == http.StatusAccepted {
		s.accepted.Add(1)
		return true
	}
	return res.cut
}

// iteration runs the user mix once; it reports whether every step succeeded.
func (s *session) iteration(stop, hard context.Context, token string, n uint64) bool {
	body, key := s.createBody(n)
	res := s.sendIdempotent(hard, token, RouteCreateSite, http.MethodPost, "/api/v1/sites", body, key)
	if res.status != http.StatusAccepted {
		return res.cut
	}
	var op opView
	if err := json.Unmarshal(res.body, &op); err != nil || op.ID == "" {
		return false
	}
	s.accept(op, s.domain(n))
	done, ok := s.await(stop, token, op.ID)
	if !ok {
		return stop.Err() != nil
	}
	siteID := done.TargetID
	if stop.Err() != nil {
		return true
	}
	if res := s.send(hard, token, RouteListSites, http.MethodGet, "/api/v1/sites?limit=20", nil, ""); res.status != http.StatusOK {
		return res.cut
	}
	if siteID == "" || stop.Err() != nil {
		return true
	}
	if res := s.send(hard, token, RouteGetSite, http.MethodGet, "/api/v1/sites/"+siteID, nil, ""); res.status != http.StatusOK {
		return res.cut
	}
	if done.Status != "succeeded" {
		return true // nothing to back up or delete: the provision failed
	}
	if !s.backup(stop, hard, token, siteID, n) {
		return false
	}
	if stop.Err() != nil {
		return true
	}
	res = s.sendIdempotent(hard, token, RouteDeleteSite, http.MethodDelete, "/api/v1/sites/"+siteID, nil, key+"-delete")
	if res.status != http.StatusAccepted {
		return res.cut
	}
	if err := json.Unmarshal(res.body, &op); err != nil || op.ID == "" {
		return false
	}
	s.accept(op, s.domain(n))
	_, ok = s.await(stop, token, op.ID)
	return ok || stop.Err() != nil
}

// await long-polls operation id until it reaches a terminal state, the
// operation deadline passes or stop ends. Answers other than 200 are retried
// after a short pause, except 4xx, which no retry would change.
func (s *session) await(stop context.Context, token, id string) (opView, bool) {
	stage, accepted := int(s.stage.Load()), time.Now()
	deadline := accepted.Add(s.r.cfg.OpTimeout)
	path := fmt.Sprintf("/api/v1/operations/%s?wait=%s", id, s.wait)
	for stop.Err() == nil && time.Now().Before(deadline) {
		res := s.send(stop, token, RouteWaitOp, http.MethodGet, path, nil, "")
		switch {
		case res.cut:
			return opView{}, false
		case res.status == http.StatusOK:
			var op opView
			if err := json.Unmarshal(res.body, &op); err != nil {
				return opView{}, false
			}
			if terminal(op.Status) {
				s.ledger.terminal(id, op.Status)
				s.col.opDone(stage, time.Since(accepted))
				return op, true
			}
		case res.status >= 400 && res.status < 500:
			return opView{}, false
		default:
			sleep(stop, 100*time.Millisecond)
		}
	}
	return opView{}, false
}

// backupHook is the mix's "create backup when available" step. The backup API
// (POST /sites/{id}/backups, issue 4) may not exist on the CHOM under test: the
// first 404 or 405 on a site the user owns means the route is missing, and the
// step is skipped from then on, for the rest of the Runner's life. Those probe
// answers are not counted as errors; the report says the step was skipped.
type backupHook struct {
	missing atomic.Bool
	tried   atomic.Uint64
	// accepted gets a token (dropped when one is pending) for every backup
	// accepted: Config.UntilBackups wakes on it.
	accepted chan struct{}
	mu       sync.Mutex
	note     string
}

// status says what the hook did, for the report.
func (b *backupHook) status() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.note != "":
		return b.note
	case b.tried.Load() > 0:
		return fmt.Sprintf("available: %d backups requested", b.tried.Load())
	}
	return "not reached"
}

// backup runs the backup step; it reports whether the step succeeded or was
// skipped.
func (s *session) backup(stop, hard context.Context, token, siteID string, n uint64) bool {
	b := &s.r.backups
	if b.missing.Load() || stop.Err() != nil {
		return true
	}
	stage := int(s.stage.Load())
	body := []byte(`{"type":"full","retention_days":1}`)
	path, key := "/api/v1/sites/"+siteID+"/backups", fmt.Sprintf("lt-%s-%d-backup", s.r.runID, n)
	res := s.call(hard, token, RouteCreateBackup, http.MethodPost, path, body, key)
	if !res.cut && (res.status == http.StatusNotFound || res.status == http.StatusMethodNotAllowed) {
		b.mu.Lock()
		if b.note == "" {
			b.note = fmt.Sprintf("skipped: POST /sites/{id}/backups answered %d on a live site (the backup API is not there yet)", res.status)
		}
		b.mu.Unlock()
		b.missing.Store(true)
		return true
	}
	s.record(stage, res)
	res = s.untilAnswered(hard, res, func() response {
		return s.send(hard, token, RouteCreateBackup, http.MethodPost, path, body, key)
	})
	if res.status != http.StatusAccepted {
		return res.cut
	}
	b.tried.Add(1)
	select {
	case b.accepted <- struct{}{}:
	default:
	}
	var op opView
	if err := json.Unmarshal(res.body, &op); err != nil || op.ID == "" {
		return false
	}
	s.accept(op, s.domain(n))
	_, ok := s.await(stop, token, op.ID)
	return ok || stop.Err() != nil
}

// ledger tracks every operation answered 202 and whether it was seen
// finished through the API.
type ledger struct {
	mu  sync.Mutex
	ops map[string]string // operation ID → terminal status, "" while unseen
}

func (l *ledger) accepted(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ops == nil {
		l.ops = map[string]string{}
	}
	if _, ok := l.ops[id]; !ok {
		l.ops[id] = ""
	}
}

func (l *ledger) terminal(id, status string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ops == nil {
		l.ops = map[string]string{}
	}
	l.ops[id] = status
}

// unfinished lists the operations not yet seen finished.
func (l *ledger) unfinished() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for id, st := range l.ops {
		if st == "" {
			out = append(out, id)
		}
	}
	return out
}

// Ledger is the account of a scenario's accepted operations.
type Ledger struct {
	// Tracked is false for MixAccept runs, which count 202s but keep no IDs.
	Tracked bool `json:"tracked"`
	// Accepted is the number of distinct operations answered 202.
	Accepted uint64 `json:"accepted"`
	// Completed is how many of them were seen in a terminal state through the
	// API, during the run or by the check at its end.
	Completed uint64 `json:"completed"`
	// CheckedAtEnd is how many were still unseen when the users stopped and
	// were polled by the final check.
	CheckedAtEnd uint64 `json:"checked_at_end"`
	// ByStatus counts the completed ones by terminal status.
	ByStatus map[string]uint64 `json:"by_status"`
	// Unfinished lists (up to 20) operations not finished within the drain time.
	Unfinished []string `json:"unfinished,omitempty"`
	// DrainSeconds is how long the final check took.
	DrainSeconds float64 `json:"drain_seconds"`
}

// OK reports whether every accepted operation was seen finished.
func (l Ledger) OK() bool { return !l.Tracked || l.Completed == l.Accepted }

func (l *ledger) summary() Ledger {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := Ledger{Tracked: true, Accepted: uint64(len(l.ops)), ByStatus: map[string]uint64{}}
	for id, st := range l.ops {
		if st == "" {
			if len(out.Unfinished) < 20 {
				out.Unfinished = append(out.Unfinished, id)
			}
			continue
		}
		out.Completed++
		out.ByStatus[st]++
	}
	return out
}
