package faults

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/chomhq/chom/queue"
)

// Event types of site operations (events.TypeSite*; spelled out here so the
// ledger checks the wire names, not whatever the package says today).
const (
	evProvisioned     = "site.provisioned.v1"
	evProvisionFailed = "site.provision_failed.v1"
	evDeleted         = "site.deleted.v1"
)

// ledgerOp, ledgerSite and ledgerEvent are rows of the database as the ledger sees them.
type ledgerOp struct {
	ID, Type, Status, TargetID string
	Attempts                   int
}

type ledgerSite struct {
	ID, Domain, Status string
	VPSID              *string
}

type ledgerEvent struct {
	EventID, Type, OperationID, SiteID string
}

// ledger is the whole state of a stack once every operation has finished.
type ledger struct {
	ops    []ledgerOp
	sites  []ledgerSite
	events []ledgerEvent
	vps    map[string]int // site_count by server
	nginx  map[string]int // server blocks by server/domain
}

// readLedger reads the ledger from the database and the local driver's root.
func (s *stack) readLedger() ledger {
	s.t.Helper()
	ctx := s.t.Context()
	var l ledger
	rows, err := s.db.QueryContext(ctx, "SELECT id, op_type, status, target_id, attempts FROM operations")
	if err != nil {
		s.t.Fatalf("ledger: %v", err)
	}
	for rows.Next() {
		var o ledgerOp
		if err := rows.Scan(&o.ID, &o.Type, &o.Status, &o.TargetID, &o.Attempts); err != nil {
			s.t.Fatal(err)
		}
		l.ops = append(l.ops, o)
	}
	rows.Close()
	rows, err = s.db.QueryContext(ctx, "SELECT id, domain, status, vps_id FROM sites")
	if err != nil {
		s.t.Fatalf("ledger: %v", err)
	}
	for rows.Next() {
		var st ledgerSite
		if err := rows.Scan(&st.ID, &st.Domain, &st.Status, &st.VPSID); err != nil {
			s.t.Fatal(err)
		}
		l.sites = append(l.sites, st)
	}
	rows.Close()
	rows, err = s.db.QueryContext(ctx, "SELECT event_id, event_type, data FROM outbox_events")
	if err != nil {
		s.t.Fatalf("ledger: %v", err)
	}
	for rows.Next() {
		var e ledgerEvent
		var data string
		if err := rows.Scan(&e.EventID, &e.Type, &data); err != nil {
			s.t.Fatal(err)
		}
		var d struct {
			OperationID string `json:"operation_id"`
			SiteID      string `json:"site_id"`
		}
		if err := json.Unmarshal([]byte(data), &d); err != nil {
			s.t.Errorf("ledger: outbox event %s has undecodable data %q: %v", e.EventID, data, err)
		}
		e.OperationID, e.SiteID = d.OperationID, d.SiteID
		l.events = append(l.events, e)
	}
	rows.Close()
	l.vps = map[string]int{}
	rows, err = s.db.QueryContext(ctx, "SELECT id, site_count FROM vps_servers")
	if err != nil {
		s.t.Fatalf("ledger: %v", err)
	}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			s.t.Fatal(err)
		}
		l.vps[id] = n
	}
	rows.Close()
	l.nginx = map[string]int{}
	confs, err := filepath.Glob(filepath.Join(s.root, "*", "nginx", "sites-enabled", "*.conf"))
	if err != nil {
		s.t.Fatal(err)
	}
	for _, c := range confs {
		rel, _ := filepath.Rel(s.root, c)
		parts := strings.Split(rel, string(filepath.Separator))
		l.nginx[parts[0]+"/"+strings.TrimSuffix(parts[len(parts)-1], ".conf")]++
	}
	return l
}

// checkLedger checks that every accepted operation finished and that each of
// its side effects happened exactly once, and prints the ledger.
func (s *stack) checkLedger() ledger {
	s.t.Helper()
	l := s.readLedger()
	s.mu.Lock()
	acc := make(map[string]accepted, len(s.accepted))
	for id, a := range s.accepted {
		acc[id] = a
	}
	s.mu.Unlock()
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	ops := map[string]ledgerOp{}
	provisionOf := map[string][]ledgerOp{}   // site ID -> its provision operations
	deprovisionOf := map[string][]ledgerOp{} // site ID -> its deprovision operations
	for _, o := range l.ops {
		ops[o.ID] = o
		switch o.Type {
		case "site.provision":
			provisionOf[o.TargetID] = append(provisionOf[o.TargetID], o)
		case "site.deprovision":
			deprovisionOf[o.TargetID] = append(deprovisionOf[o.TargetID], o)
		}
		if _, ok := acc[o.ID]; !ok {
			bad("operation %s (%s, %s) exists but the API never accepted it", o.ID, o.Type, o.Status)
		}
	}
	// Every accepted operation exists and reached a final state.
	for id, a := range acc {
		o, ok := ops[id]
		switch {
		case !ok:
			bad("accepted operation %s (%s %s) is missing", id, a.Type, a.Domain)
		case o.Status != "succeeded" && o.Status != "failed" && o.Status != "cancelled":
			bad("accepted operation %s (%s %s) is %s after %d attempts", id, a.Type, a.Domain, o.Status, o.Attempts)
		}
	}
	// One site row per accepted create, and no site without its create.
	sites := map[string]ledgerSite{}
	liveDomains := map[string]int{}
	for _, st := range l.sites {
		sites[st.ID] = st
		if n := len(provisionOf[st.ID]); n != 1 {
			bad("site %s (%s) has %d provision operations, want 1", st.ID, st.Domain, n)
		}
		if st.Status != "deleted" {
			liveDomains[st.Domain]++
		}
	}
	for domain, n := range liveDomains {
		if n > 1 {
			bad("domain %s has %d live sites", domain, n)
		}
	}
	for id, a := range acc {
		if a.Type != "site.provision" {
			continue
		}
		st, ok := sites[a.SiteID]
		if !ok {
			bad("accepted create %s (%s) has no site row", id, a.Domain)
		} else if st.Domain != a.Domain {
			bad("accepted create %s of %s made site %s with domain %s", id, a.Domain, st.ID, st.Domain)
		}
	}
	// Each site ends as its operations say, bound to a server only while live.
	bound := map[string]int{}
	for _, st := range l.sites {
		want := ""
		if p := provisionOf[st.ID]; len(p) == 1 {
			switch p[0].Status {
			case "succeeded":
				want = "active"
				for _, d := range deprovisionOf[st.ID] {
					switch d.Status {
					case "succeeded":
						want = "deleted"
					case "failed":
						want = "failed"
					}
				}
			case "failed":
				want = "failed"
			case "cancelled":
				want = "deleted"
			}
		}
		if want != "" && st.Status != want {
			bad("site %s (%s) is %s, want %s from its operations", st.ID, st.Domain, st.Status, want)
		}
		if st.VPSID != nil {
			if st.Status == "deleted" || (st.Status == "failed" && len(deprovisionOf[st.ID]) == 0) {
				bad("site %s (%s) is %s but still bound to server %s", st.ID, st.Domain, st.Status, *st.VPSID)
			}
			bound[*st.VPSID]++
		} else if st.Status == "active" {
			bad("site %s (%s) is active on no server", st.ID, st.Domain)
		}
		// Exactly one nginx server block per active site, none for a removed one.
		blocks := 0
		if st.VPSID != nil {
			blocks = l.nginx[*st.VPSID+"/"+st.Domain]
		}
		switch {
		case st.Status == "active" && blocks != 1:
			bad("active site %s (%s) has %d nginx server blocks, want 1", st.ID, st.Domain, blocks)
		case st.Status != "active" && blocks != 0:
			bad("%s site %s (%s) still has %d nginx server blocks", st.Status, st.ID, st.Domain, blocks)
		}
	}
	active := 0
	for _, st := range l.sites {
		if st.Status == "active" {
			active++
		}
	}
	blocksTotal := 0
	for _, n := range l.nginx {
		blocksTotal += n
	}
	if blocksTotal != active {
		bad("%d nginx server blocks under the driver root for %d active sites", blocksTotal, active)
	}
	for id, n := range l.vps {
		if n != bound[id] {
			bad("vps %s: site_count = %d, but %d sites are bound to it", id, n, bound[id])
		}
	}
	// Exactly one event per finished operation that must have one, no other.
	wantEvent := func(o ledgerOp) string {
		switch {
		case o.Type == "site.provision" && o.Status == "succeeded":
			return evProvisioned
		case o.Type == "site.provision" && o.Status == "failed":
			return evProvisionFailed
		case o.Type == "site.deprovision" && o.Status == "succeeded":
			return evDeleted
		}
		return ""
	}
	got := map[string][]ledgerEvent{} // by operation ID
	for _, e := range l.events {
		if !strings.HasPrefix(e.Type, "site.") {
			// Not an operation's event: the health sweep's vps.health_changed
			// (a server's first check turns it from unknown to healthy). The
			// summary line counts them; they name no operation.
			continue
		}
		got[e.OperationID] = append(got[e.OperationID], e)
	}
	for _, o := range l.ops {
		want := wantEvent(o)
		evs := got[o.ID]
		switch {
		case want == "" && len(evs) > 0:
			bad("%s operation %s (%s) has %d events, want none", o.Status, o.ID, o.Type, len(evs))
		case want != "" && len(evs) != 1:
			bad("%s operation %s (%s) has %d events, want one %s", o.Status, o.ID, o.Type, len(evs), want)
		case want != "" && evs[0].Type != want:
			bad("%s operation %s (%s) has event %s, want %s", o.Status, o.ID, o.Type, evs[0].Type, want)
		case want != "" && evs[0].SiteID != o.TargetID:
			bad("event %s of operation %s names site %s, want %s", evs[0].EventID, o.ID, evs[0].SiteID, o.TargetID)
		}
	}
	for opID, evs := range got {
		if _, ok := ops[opID]; !ok {
			bad("%d events name operation %q, which does not exist", len(evs), opID)
		}
	}
	s.logLedger(l)
	if len(problems) > 0 {
		sort.Strings(problems)
		if len(problems) > 40 {
			problems = append(problems[:40], fmt.Sprintf("… and %d more", len(problems)-40))
		}
		s.t.Errorf("ledger does not hold:\n  %s", strings.Join(problems, "\n  "))
	}
	return l
}

// logLedger prints the ledger's counts.
func (s *stack) logLedger(l ledger) {
	s.t.Helper()
	ops := map[string]int{}
	for _, o := range l.ops {
		ops[o.Type+" "+o.Status]++
	}
	sites := map[string]int{}
	for _, st := range l.sites {
		sites[st.Status]++
	}
	evs := map[string]int{}
	for _, e := range l.events {
		evs[e.Type]++
	}
	blocks := 0
	for _, n := range l.nginx {
		blocks += n
	}
	var vps []string
	for id, n := range l.vps {
		vps = append(vps, fmt.Sprintf("%s=%d", id, n))
	}
	slices.Sort(vps)
	s.mu.Lock()
	nAcc := len(s.accepted)
	s.mu.Unlock()
	s.t.Logf("ledger: %d accepted, %d operations {%s}; sites {%s}; outbox {%s}; nginx server blocks %d; vps site_count {%s}",
		nAcc, len(l.ops), counts(ops), counts(sites), counts(evs), blocks, strings.Join(vps, " "))
}

// counts formats a map of counts in key order.
func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// describeUnfinished lists the unfinished operations with their attempts and
// the state of their task in Redis, for a failure message.
func (s *stack) describeUnfinished() string {
	ctx := s.t.Context()
	rows, err := s.db.QueryContext(ctx, `SELECT id, op_type, status, attempts, progress, updated_at
		FROM operations WHERE status IN ('pending', 'running') ORDER BY created_at`)
	if err != nil {
		return fmt.Sprintf("(list unfinished operations: %v)", err)
	}
	defer rows.Close()
	rc, err := queue.NewRedisClient(s.redisURL, 2)
	if err != nil {
		return fmt.Sprintf("(redis: %v)", err)
	}
	defer rc.Close()
	in := queue.NewInspector(rc)
	var b strings.Builder
	n := 0
	for rows.Next() {
		var id, typ, status string
		var attempts, progress int
		var updated time.Time
		if err := rows.Scan(&id, &typ, &status, &attempts, &progress, &updated); err != nil {
			return err.Error()
		}
		n++
		if n > 30 {
			continue
		}
		state, err := in.TaskState(ctx, queue.QueueDefault, id)
		if err != nil {
			state = queue.TaskState("error: " + err.Error())
		}
		fmt.Fprintf(&b, "  %s %s %s attempts=%d progress=%d updated %s ago; task %s\n",
			id, typ, status, attempts, progress, time.Since(updated).Round(time.Second), state)
	}
	if n > 30 {
		fmt.Fprintf(&b, "  … %d in all\n", n)
	}
	if dirs, err := os.ReadDir(s.root); err == nil {
		fmt.Fprintf(&b, "  (%d server directories under the driver root)\n", len(dirs))
	}
	return b.String()
}
