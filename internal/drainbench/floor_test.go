package drainbench

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/workers"
)

// The floor passes measure what PostgreSQL alone costs for the rows a
// provision must change, written as cheaply as SQL can write them: no
// worker, no queue, no reads, no placement choice, no lock taken before the
// write; only the updates and the insert the invariants need (the
// operation running, then succeeded; the site placed, then active; the
// server's site count; one outbox event and the relay's wake-up), each
// commit made durable as the workers' are. A pass with batch 1 writes each
// provision's start and finish as one statement each, as the workers do for
// the start; batch b writes b provisions per statement (group commit of
// both). The CPU PostgreSQL spends per provision in these passes is a floor
// under any worker that keeps the invariants on this database, so
// floorCeiling turns it into the most a chom pass could reach against bare
// asynq on the same cores.

// floorBatch is how many provisions the batched floor pass writes per
// statement: about what the accept path's batches hold at a few thousand
// requests per second.
const floorBatch = 10

// floorStartSQL is a batch's start: $1 operation IDs, $2 their sites, $3 the
// server each site goes to, $4 the time. Each batch puts its sites on one
// server (floorPass), so concurrent statements lock one server row each and
// cannot deadlock over them.
var floorStartSQL = fmt.Sprintf(`WITH i AS (
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) AS i(op_id, site_id, vps_id)
), o AS (
	UPDATE operations AS o SET status = '%s', attempts = o.attempts + 1, started_at = $4, progress = GREATEST(o.progress, 5),
		server_touched_at = COALESCE(o.server_touched_at, $4), updated_at = $4
	FROM i WHERE o.id = i.op_id RETURNING o.id
), v AS (
	UPDATE vps_servers AS v SET site_count = v.site_count + c.k, updated_at = $4
	FROM (SELECT vps_id, count(*) AS k FROM i GROUP BY vps_id) AS c WHERE v.id = c.vps_id RETURNING v.id
), s AS (
	UPDATE sites AS s SET vps_id = i.vps_id, status = '%s', updated_at = $4
	FROM i WHERE s.id = i.site_id RETURNING s.id
)
SELECT (SELECT count(*) FROM o), (SELECT count(*) FROM s)`, models.OpRunning, models.SiteStatusProvisioning)

// floorFinishSQL is a batch's finish: $1 operation IDs, $2 their sites, $3
// the document roots, $4 the system users, $5..$12 the outbox rows' columns,
// $13 the time.
var floorFinishSQL = fmt.Sprintf(`WITH i AS (
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS i(op_id, site_id, document_root, system_user)
), d AS (
	UPDATE operations AS o SET status = '%s', progress = 100, finished_at = $13, updated_at = $13
	FROM i WHERE o.id = i.op_id RETURNING o.id
), a AS (
	UPDATE sites AS s SET status = '%s', document_root = i.document_root, system_user = i.system_user,
		operation_id = NULL, updated_at = $13
	FROM i WHERE s.id = i.site_id RETURNING s.id
), ev AS (
	INSERT INTO outbox_events (event_id, tenant_id, topic, event_type, source, subject, data, occurred_at, created_at)
	SELECT e.*, $13 FROM unnest($5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::timestamptz[])
		AS e(event_id, tenant_id, topic, event_type, source, subject, data, occurred_at)
	ON CONFLICT DO NOTHING RETURNING id
)
SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM a), (SELECT count(*) FROM ev), pg_notify('%s', current_schema())`,
	models.OpSucceeded, models.SiteStatusActive, models.OutboxChannel)

// floorItem is one provision of a floor pass, its values built before the
// clock starts.
type floorItem struct {
	opID, siteID, vpsID, root, user string
	event                           models.OutboxEvent
}

// floorPass accepts n provisions as chomPass does, then writes their starts
// and finishes with floorStartSQL and floorFinishSQL, batch provisions per
// statement, from as many goroutines as keep the workers' number of
// provisions in flight (2 workers x their concurrency), and checks the rows
// it leaves. Its CPU split has no "workers": this harness is the client.
func (h *harness) floorPass(n, batch int) pass {
	t := h.t
	ctx := t.Context()
	dsn, _, store, rdb, _ := h.setup()
	// Prepared statements (the workers' hot statements are too), on the
	// generic plans models.Open asks for.
	db, err := models.Open(ctx, withParam(t, dsn, "default_query_exec_mode", "cache_statement"),
		models.PoolConfig{MaxOpenConns: 2 * workers.DefaultConcurrency})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	tenantIDs, serverIDs := h.seed(ctx, store, n)
	ops := h.accept(ctx, store, rdb, tenantIDs, n)
	items := h.floorItems(ctx, db, ops, serverIDs, batch)

	goroutines := max(1, 2*workers.DefaultConcurrency/batch)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	cpu0, err := SampleCPU()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range goroutines {
		wg.Go(func() {
			for {
				lo := int(next.Add(int64(batch))) - batch
				if lo >= n {
					return
				}
				if err := floorWrite(ctx, db, items[lo:min(lo+batch, n)]); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	p := pass{kind: fmt.Sprintf("floor%d", batch), n: n, elapsed: time.Since(start), cpu: h.cpuSince(cpu0, nil)}
	close(errs)
	for err := range errs {
		t.Fatalf("floor pass: %v", err)
	}
	h.checkFloorLedger(ctx, db, n)
	return p
}

// withParam sets a connection parameter in dsn (URL or key=value form).
func withParam(t testing.TB, dsn, key, value string) string {
	t.Helper()
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return dsn + " " + key + "=" + value
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// seed creates chomPass's tenants and servers and returns their IDs.
func (h *harness) seed(ctx context.Context, store *models.Store, n int) (tenantIDs, serverIDs []string) {
	t := h.t
	for i := range tenants {
		ten, err := store.EnsureTenant(ctx, fmt.Sprintf("drain-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		tenantIDs = append(tenantIDs, ten.ID)
	}
	for i := range servers {
		v, _, err := store.RegisterVPS(ctx, models.Accept{TenantID: tenantIDs[0], Actor: "drainbench"}, models.RegisterVPSParams{
			Hostname: fmt.Sprintf("vps%d.drain.example", i), IPAddress: fmt.Sprintf("192.0.2.%d", i+1), SSHPort: 22,
			Allocation: models.AllocationShared, SiteCapacity: n,
		})
		if err != nil {
			t.Fatal(err)
		}
		serverIDs = append(serverIDs, v.ID)
	}
	return tenantIDs, serverIDs
}

// floorItems reads the accepted operations' sites and builds each
// provision's values: batch k goes to server k mod servers, and its outbox
// event is the one the worker writes (events.SiteOutbox).
func (h *harness) floorItems(ctx context.Context, db *bun.DB, ops, serverIDs []string, batch int) []floorItem {
	t := h.t
	var rows []struct {
		OpID     string `bun:"op_id"`
		SiteID   string `bun:"site_id"`
		TenantID string `bun:"tenant_id"`
		Domain   string `bun:"domain"`
		SiteType string `bun:"site_type"`
		PHP      string `bun:"php_version"`
	}
	if err := db.NewRaw(`SELECT o.id AS op_id, s.id AS site_id, s.tenant_id, s.domain, s.site_type, s.php_version
		FROM operations AS o JOIN sites AS s ON s.id = o.target_id WHERE o.id IN (?)`, bun.In(ops)).Scan(ctx, &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(ops) {
		t.Fatalf("floor pass: %d of %d accepted operations found", len(rows), len(ops))
	}
	now := time.Now()
	items := make([]floorItem, len(rows))
	for i, r := range rows {
		vps := serverIDs[(i/batch)%len(serverIDs)]
		ev, err := events.SiteOutbox(events.TypeSiteProvisioned, events.SiteEvent{
			SiteID: r.SiteID, TenantID: r.TenantID, Domain: r.Domain, SiteType: r.SiteType, PHPVersion: r.PHP,
			VPSID: vps, OperationID: r.OpID, Status: models.SiteStatusActive, OccurredAt: now,
		})
		if err != nil {
			t.Fatal(err)
		}
		items[i] = floorItem{opID: r.OpID, siteID: r.SiteID, vpsID: vps,
			root: "/srv/sites/" + r.SiteID + "/public", user: "s" + strings.ReplaceAll(r.SiteID, "-", "")[:12], event: ev}
	}
	return items
}

// floorWrite starts and then finishes items, one statement each.
func floorWrite(ctx context.Context, db *bun.DB, items []floorItem) error {
	var ops, sites, vps, roots, users []string
	var ev [7][]string
	var occurred []time.Time
	for _, it := range items {
		ops, sites, vps = append(ops, it.opID), append(sites, it.siteID), append(vps, it.vpsID)
		roots, users = append(roots, it.root), append(users, it.user)
		e := it.event
		for c, v := range []string{e.EventID, e.TenantID, e.Topic, e.Type, e.Source, e.Subject, e.Data} {
			ev[c] = append(ev[c], v)
		}
		occurred = append(occurred, e.OccurredAt)
	}
	now := time.Now()
	var started, placed int
	// db.DB: past bun, whose formatter would take the arguments for its own
	// placeholders; these statements number theirs.
	if err := db.DB.QueryRowContext(ctx, floorStartSQL, ops, sites, vps, now).Scan(&started, &placed); err != nil {
		return fmt.Errorf("start %d: %w", len(items), err)
	}
	if started != len(items) || placed != len(items) {
		return fmt.Errorf("start %d: %d operations and %d sites updated", len(items), started, placed)
	}
	var done, active, written int
	var notified string
	if err := db.DB.QueryRowContext(ctx, floorFinishSQL, ops, sites, roots, users,
		ev[0], ev[1], ev[2], ev[3], ev[4], ev[5], ev[6], occurred, now).Scan(&done, &active, &written, &notified); err != nil {
		return fmt.Errorf("finish %d: %w", len(items), err)
	}
	if done != len(items) || active != len(items) || written != len(items) {
		return fmt.Errorf("finish %d: %d operations, %d sites, %d events written", len(items), done, active, written)
	}
	return nil
}

// checkFloorLedger checks the rows a floor pass must leave: the database half
// of checkLedger (the queue keeps its tasks: no worker ran).
func (h *harness) checkFloorLedger(ctx context.Context, db *bun.DB, n int) {
	t := h.t
	var got struct {
		Succeeded, Active, Placed, Events int
	}
	if err := db.NewRaw(`SELECT
		(SELECT count(*) FROM operations WHERE status = ? AND progress = 100) AS succeeded,
		(SELECT count(*) FROM sites WHERE status = ? AND vps_id IS NOT NULL AND document_root <> '' AND operation_id IS NULL) AS active,
		(SELECT coalesce(sum(site_count), 0) FROM vps_servers) AS placed,
		(SELECT count(*) FROM outbox_events WHERE event_type = ?) AS events`,
		models.OpSucceeded, models.SiteStatusActive, events.TypeSiteProvisioned).Scan(ctx, &got); err != nil {
		t.Fatal(err)
	}
	if got.Succeeded != n || got.Active != n || got.Placed != n || got.Events != n {
		t.Errorf("floor ledger: %d operations succeeded, %d sites active and placed, servers count %d, %d events; want %d each",
			got.Succeeded, got.Active, got.Placed, got.Events, n)
	}
}

// floorCeiling is the most a chom pass could reach, as a share of bare
// asynq's rate, were the workers to cost nothing beyond what bare asynq's
// do and PostgreSQL as little as in the floor pass: on cores the whole
// machine shares, rates go as the inverse of the CPU each operation takes,
// so it is bare's CPU per task (bareMS, all processes) against bare's plus
// the floor's PostgreSQL CPU per provision.
func floorCeiling(bareMS float64, floor pass) float64 {
	return bareMS / (bareMS + floor.msPerOp("postgres"))
}
