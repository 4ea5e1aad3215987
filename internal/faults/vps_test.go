package faults

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// Injected: the VPS that sites are placed on stops answering. Ten sites are
// provisioned first; then the server is taken down (the local driver's
// DownMarker, which it answers with drivers.ErrUnreachable, as an SSH dial to
// a dead host would) while 40 creates and 5 deletes arrive; after the breaker
// has opened and the tasks have been rescheduled through it for a while, the
// server comes back.
//
// Must hold: the server's breaker opens and the jobs then fail fast (few calls
// reach the server: the few that opened it and one half-open probe per
// CHOM_HEALTH_BREAKER_OPEN); no operation fails during the outage; tasks met
// the open breaker many times without their retry count running out; once
// the server is back every accepted operation succeeded and the ledger holds:
// each site provisioned exactly once, one event per operation.
func TestVPSUnreachable(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackConfig{Servers: 1})
	const open = time.Second
	s.env = append(s.env,
		"CHOM_HEALTH_BREAKER_FAILURES=3",
		"CHOM_HEALTH_BREAKER_OPEN="+open.String(),
		"CHOM_JOB_DEFER_DELAY=200ms",
		// No health sweep during the test: a server found unhealthy takes no
		// new sites, and this test is about the jobs meeting the dead server.
		"CHOM_HEALTH_INTERVAL=1h",
	)
	s.startScheduler()
	w := s.startWorker()
	s.createSites("vps-up", 10)
	s.waitSettled(60 * time.Second)
	olds := s.acceptedSites()

	// The scheduler's first tick checks the server once (the next is an hour
	// away). That check must find the server up: had it run after the marker,
	// it would mark the server unhealthy and placements would rightly refuse
	// it, which is another test. Provisions can settle before that first
	// check runs, so wait for its result before the fault.
	if !waitFor(60*time.Second, func() bool { h := s.vpsHealth(s.vps[0]); return h != "" && h != models.HealthUnknown }) {
		t.Fatalf("the scheduler's first health check of %s was not recorded within 60s", s.vps[0])
	}
	if h := s.vpsHealth(s.vps[0]); h == models.HealthUnhealthy {
		t.Fatalf("the first health check found %s %s before the fault", s.vps[0], h)
	}

	marker := filepath.Join(s.root, s.vps[0], "down")
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	downAt := time.Now()
	s.createSites("vps-down", 40)
	for _, id := range olds[:5] {
		r, err := s.deleteSite(id)
		if err != nil || r.status != http.StatusAccepted {
			t.Fatalf("DELETE /sites/%s: %v %d %s", id, err, r.status, r.body)
		}
	}
	openDeferrals := func() int {
		n := 0
		for _, l := range w.logLines() {
			if e, _ := l["error"].(string); l["msg"] == "task deferred" && strings.Contains(e, "circuit breaker is open") {
				n++
			}
		}
		return n
	}
	if !waitFor(60*time.Second, func() bool { return openDeferrals() >= 100 && time.Since(downAt) > 5*open }) {
		t.Fatalf("tasks did not meet the open breaker 100 times within 60s (%d); ops %v", openDeferrals(), s.opCounts())
	}
	during := s.opCounts()
	if during["failed"] > 0 || during["succeeded"] != 10 {
		t.Errorf("during the outage: %v; want the 10 earlier creates succeeded and nothing failed", during)
	}
	opened := w.logValues("vps circuit breaker", "to")
	if !opened["open"] {
		t.Errorf("the worker never logged its breaker opening: %v", opened)
	}
	// Calls that reached the down server: what opened the breaker, and one
	// half-open probe per open period (each of those a real failure).
	var reached int
	for _, l := range w.logLines() {
		if e, _ := l["error"].(string); l["msg"] == "task failed" && strings.Contains(e, "marked down") {
			reached++
		}
	}
	outage := time.Since(downAt)
	t.Logf("outage %s: %d deferrals through the open breaker, %d calls reached the down server; ops %v",
		outage.Round(100*time.Millisecond), openDeferrals(), reached, during)
	if limit := 20 + 2*int(outage/open); reached > limit {
		t.Errorf("%d calls reached the down server in %s, want at most %d: the breaker did not stop them", reached, outage, limit)
	}

	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}
	took := s.waitSettled(90 * time.Second)
	t.Logf("every operation finished %s after the server came back", took.Round(100*time.Millisecond))
	l := s.checkLedger()
	for _, o := range l.ops {
		if o.Status != "succeeded" {
			t.Errorf("operation %s (%s) is %s, want succeeded", o.ID, o.Type, o.Status)
		}
	}
	// Retry counts, as asynq kept them on the completed tasks.
	rc, err := queue.NewRedisClient(s.redisURL, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	insp := asynq.NewInspectorFromRedisClient(rc)
	hist := map[int]int{}
	maxRetried := 0
	for _, id := range s.acceptedIDs() {
		info, err := insp.GetTaskInfo(queue.QueueDefault, id)
		if err != nil {
			t.Errorf("task of %s: %v", id, err)
			continue
		}
		hist[info.Retried]++
		maxRetried = max(maxRetried, info.Retried)
		if info.Retried >= info.MaxRetry {
			t.Errorf("task %s used %d of its %d retries", id, info.Retried, info.MaxRetry)
		}
	}
	t.Logf("retry counts of the %d tasks (retried: tasks): %s; most %d", len(s.acceptedIDs()), fmtHist(hist), maxRetried)
	s.assertRunning(w)
}

func fmtHist(h map[int]int) string {
	m := make(map[string]int, len(h))
	for k, v := range h {
		m[fmt.Sprintf("%d", k)] = v
	}
	return counts(m)
}
