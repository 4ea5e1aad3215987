package integration

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/domainverify"
	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// createSiteBody posts body to /sites and returns the accepted operation.
func (s *stack) createSiteBody(token string, body any) ingress.OperationView {
	s.t.Helper()
	r := s.do("POST", "/api/v1/sites", token, body)
	if r.status != http.StatusAccepted {
		s.t.Fatalf("POST /sites: %d %s", r.status, r.body)
	}
	var op ingress.OperationView
	r.json(s.t, &op)
	return op
}

// otherDB returns a second, empty database of the same kind as db.
func otherDB(t *testing.T, db *bun.DB) *bun.DB {
	t.Helper()
	if models.IsPostgres(db) {
		return testenv.Postgres(t)
	}
	return testenv.SQLite(t)
}

// masks replace what legitimately differs between two answers: IDs, times,
// tokens, request IDs and the domain probed (ETags are masked by name).
var masks = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`op_[0-9a-f]{32}`), "OP"},
	{regexp.MustCompile(`site_[0-9a-f]{32}`), "SITE"},
	{regexp.MustCompile(`req_[0-9A-Za-z_-]+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`), "REQ"},
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`), "TIME"},
	{regexp.MustCompile(`"[A-Za-z0-9_-]{22}"|/[A-Za-z0-9_-]{22}"`), `"TOKEN"`},
	{regexp.MustCompile(`bigbank\.example|fresh\.example`), "DOMAIN"},
}

func mask(s string) string {
	for _, m := range masks {
		s = m.re.ReplaceAllString(s, m.with)
	}
	return s
}

// probe is what tenant B sees of a site it creates on domain: the create,
// the site, its verification and its operation, masked, with status codes and
// header names and values.
func probe(t *testing.T, s *stack, domain string) []string {
	t.Helper()
	var out []string
	record := func(what string, r response) {
		var hs []string
		for k, v := range r.header {
			switch k {
			case "Date", "Content-Length":
				continue
			case "Etag": // a hash of the operation, IDs included
				v = []string{"ETAG"}
			}
			hs = append(hs, k+": "+mask(strings.Join(v, ",")))
		}
		slices.Sort(hs)
		out = append(out, what+" "+http.StatusText(r.status), strings.Join(hs, "\n"), mask(string(r.body)))
	}
	r := s.do("POST", "/api/v1/sites", s.tokenB, map[string]string{"domain": domain, "site_type": "html"})
	record("POST /sites", r)
	if r.status != http.StatusAccepted {
		t.Fatalf("probe of %s: %d %s", domain, r.status, r.body)
	}
	var op ingress.OperationView
	r.json(t, &op)
	record("GET site", s.do("GET", "/api/v1/sites/"+op.TargetID, s.tokenB, nil))
	record("GET verification", s.do("GET", "/api/v1/sites/"+op.TargetID+"/verification", s.tokenB, nil))
	record("GET operation", s.do("GET", "/api/v1/operations/"+op.ID, s.tokenB, nil))
	record("GET sites?status=pending_verification", s.do("GET", "/api/v1/sites?status=pending_verification", s.tokenB, nil))
	return out
}

// TestDomainProbeRevealsNothing is the attack: tenant B probes
// bigbank.example, which tenant A holds, and gets exactly the answers (IDs,
// times, tokens and the name aside) it gets for a domain nobody holds on a
// platform in strict mode. Before, the first was a 409 and the second a 202.
func TestDomainProbeRevealsNothing(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		contested := newStack(t, db, stackOpts{noWorker: true})
		contested.createSite(contested.tokenA, "bigbank.example", "html")
		held := probe(t, contested, "bigbank.example")

		strict := newStack(t, otherDB(t, db), stackOpts{noWorker: true, env: map[string]string{"CHOM_DOMAIN_VERIFICATION": "strict"}})
		fresh := probe(t, strict, "fresh.example")

		if diff := cmp.Diff(fresh, held); diff != "" {
			t.Fatalf("the answers differ (-free domain, strict +domain held by another tenant):\n%s", diff)
		}
		t.Logf("both probes answered:\n%s", strings.Join(held, "\n"))
		// And the probe changed nothing of tenant A's site.
		var sites ingress.Page[models.Site]
		contested.do("GET", "/api/v1/sites", contested.tokenA, nil).json(t, &sites)
		if len(sites.Data) != 1 || sites.Data[0].Status != models.SiteStatusPending {
			t.Errorf("tenant A's sites after the probe: %+v", sites.Data)
		}
	})
}

// TestDomainAliasesBadInput: every bad alias is named in the problem; an alias
// the tenant already uses is a 409 naming it; nothing is written.
func TestDomainAliasesBadInput(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true})
		s.createSite(s.tokenA, "mine.example", "html")
		before := s.snapshot()
		r := s.do("POST", "/api/v1/sites", s.tokenA, map[string]any{"domain": "new.example", "site_type": "html",
			"aliases": []string{"www.new.example", "bad;name.example", "NEW.example", "www.new.example"}})
		p := assertProblem(t, r, http.StatusUnprocessableEntity, "aliases[1]")
		var fields []string
		for _, e := range p.Errors {
			fields = append(fields, e.Field)
		}
		if diff := cmp.Diff([]string{"aliases[1]", "aliases[2]", "aliases[3]"}, fields); diff != "" {
			t.Errorf("fields named (-want +got):\n%s", diff)
		}
		r = s.do("POST", "/api/v1/sites", s.tokenA, map[string]any{"domain": "new.example", "site_type": "html",
			"aliases": []string{"www.new.example", "mine.example"}})
		assertProblem(t, r, http.StatusConflict, "aliases[1]")
		if after := s.snapshot(); after != before {
			t.Errorf("bad aliases changed the database: before %v, after %v", before, after)
		}
		op := s.createSiteBody(s.tokenA, map[string]any{"domain": "new.example", "site_type": "html", "aliases": []string{"WWW.new.example"}})
		var site models.Site
		s.do("GET", "/api/v1/sites/"+op.TargetID, s.tokenA, nil).json(t, &site)
		if !cmp.Equal([]string(site.Aliases), []string{"www.new.example"}) {
			t.Errorf("aliases = %v", site.Aliases)
		}
		// The provision job hands the aliases to the driver: the site's
		// server block answers to them too.
		payload, _ := json.Marshal(queue.OperationPayload{OperationID: op.ID, TenantID: s.tenantA})
		if err := s.provision.ProcessTask(t.Context(), asynq.NewTask(queue.TypeSiteProvision, payload)); err != nil {
			t.Fatalf("provision of a site with aliases: %v", err)
		}
		confs, _ := filepath.Glob(filepath.Join(s.root, "*", "nginx", "sites-enabled", "new.example.conf"))
		if len(confs) != 1 {
			t.Fatalf("server blocks of new.example: %v", confs)
		}
		if conf, err := os.ReadFile(confs[0]); err != nil || !strings.Contains(string(conf), "server_name new.example www.new.example;") {
			t.Errorf("server block of a site with aliases (%v):\n%s", err, conf)
		}
	})
}

// TestDomainVerificationOverAPI runs the whole flow through the API and a
// worker resolving through a real DNS server: tenant A serves bigbank.example
// unproven; tenant B, its owner, creates a site on it (held), publishes the
// TXT record from GET …/verification and verifies: B's site is provisioned,
// A's is taken off the server and waits pending_verification.
func TestDomainVerificationOverAPI(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		dns := testenv.StartChallTestSrv(t)
		s := newStack(t, db, stackOpts{env: map[string]string{"CHOM_DNS_RESOLVER": dns.DNSAddr, "CHOM_DOMAIN_VERIFY_TIMEOUT": "20s"}})
		squat := s.createSite(s.tokenA, "bigbank.example", "html")
		if op := s.waitOp(s.tokenA, squat.ID); op.Status != models.OpSucceeded {
			t.Fatalf("squatter provision %s", op.Status)
		}
		own := s.createSite(s.tokenB, "bigbank.example", "html")
		var v ingress.VerificationView
		s.do("GET", "/api/v1/sites/"+own.TargetID+"/verification", s.tokenB, nil).json(t, &v)
		if v.Status != models.SiteStatusPendingVerification || len(v.Domains) != 1 || v.Domains[0].DNS == nil || !v.Domains[0].Required {
			t.Fatalf("verification view %+v", v)
		}
		if v.Domains[0].DNS.Name != domainverify.RecordName("bigbank.example") {
			t.Errorf("record name %q", v.Domains[0].DNS.Name)
		}
		if err := dns.SetTXT(ctx, v.Domains[0].DNS.Name, v.Domains[0].DNS.Value); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		r := s.do("POST", "/api/v1/sites/"+own.TargetID+"/verification", s.tokenB, nil)
		if r.status != http.StatusAccepted {
			t.Fatalf("POST verification: %d %s", r.status, r.body)
		}
		var vop ingress.OperationView
		r.json(t, &vop)
		if op := s.waitOp(s.tokenB, vop.ID); op.Status != models.OpSucceeded {
			t.Fatalf("verification %s %+v", op.Status, op.Error)
		}
		if op := s.waitOp(s.tokenB, own.ID); op.Status != models.OpSucceeded {
			t.Fatalf("owner provision %s", op.Status)
		}
		t.Logf("verified and provisioned in %v", time.Since(start).Round(time.Millisecond))
		deadline := time.Now().Add(30 * time.Second)
		for {
			var site models.Site
			s.do("GET", "/api/v1/sites/"+squat.TargetID, s.tokenA, nil).json(t, &site)
			if site.Status == models.SiteStatusPendingVerification && site.VPSID == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("squatter site still %s on %v", site.Status, site.VPSID)
			}
			time.Sleep(50 * time.Millisecond)
		}
		// The squatter's verification cannot take it back, even with its own
		// token in the DNS.
		var sv ingress.VerificationView
		s.do("GET", "/api/v1/sites/"+squat.TargetID+"/verification", s.tokenA, nil).json(t, &sv)
		if err := dns.SetTXT(ctx, sv.Domains[0].DNS.Name, sv.Domains[0].DNS.Value); err != nil {
			t.Fatal(err)
		}
		r = s.do("POST", "/api/v1/sites/"+squat.TargetID+"/verification", s.tokenA, nil)
		var sop ingress.OperationView
		r.json(t, &sop)
		if op := s.waitOp(s.tokenA, sop.ID); op.Status != models.OpFailed || op.Error == nil || op.Error.Code != "domain_not_verified" {
			t.Fatalf("squatter verification %s %+v", op.Status, op.Error)
		}
	})
}
