package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// nginxLine is an access-log line exactly as nginx's default combined format
// writes it.
func nginxLine(at time.Time, path string, status int, bytes int64) string {
	return fmt.Sprintf("127.0.0.1 - - [%s] \"GET %s HTTP/1.1\" %d %d \"-\" \"Mozilla/5.0 (compatible; chom-test)\"\n",
		at.Format("02/Jan/2006:15:04:05 -0700"), path, status, bytes)
}

func appendFile(t *testing.T, path, data string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// treeBytes is what `du --apparent-size -b` would sum: every regular file
// under dir.
func treeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			n += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// usagePage is the body of GET /usage.
type usagePage struct {
	Data       []models.UsageRecord `json:"data"`
	NextCursor string               `json:"next_cursor"`
}

func decodeUsagePage(t *testing.T, r response) usagePage {
	t.Helper()
	var p usagePage
	r.json(t, &p)
	return p
}

type usageRow struct {
	ID        string
	Metric    string
	SiteID    string
	Quantity  int64
	CreatedAt time.Time
	UpdatedAt time.Time
}

func usageRows(t *testing.T, db bun.IDB) []usageRow {
	t.Helper()
	var recs []models.UsageRecord
	if err := db.NewSelect().Model(&recs).OrderExpr("id").Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := make([]usageRow, len(recs))
	for i, r := range recs {
		out[i] = usageRow{r.ID, r.Metric, r.SiteID, r.Quantity, r.CreatedAt, r.UpdatedAt}
	}
	return out
}

// A tenant's records for an hour are what was on disk and in the nginx logs,
// re-running the hour changes nothing, and only the tenant reads them.
func TestUsageMeteringMatchesDiskAndLogs(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		var meterNow atomic.Pointer[time.Time]
		s := newStack(t, db, stackOpts{meterNow: func() time.Time {
			if p := meterNow.Load(); p != nil {
				return *p
			}
			return time.Now()
		}})

		// Two sites of tenant A, provisioned through the API by the worker.
		var sites []models.Site
		for _, domain := range []string{"metered-one.example", "metered-two.example"} {
			op := s.createSite(s.tokenA, domain, "html")
			if done := s.waitOp(s.tokenA, op.ID); done.Status != models.OpSucceeded {
				t.Fatalf("provision %s: %+v", domain, done)
			}
			r := s.do("GET", "/api/v1/sites/"+op.TargetID, s.tokenA, nil)
			var site models.Site
			r.json(t, &site)
			sites = append(sites, site)
		}
		// The hour being metered holds the provisions (they finished before
		// now), and the meter's clock is past its end.
		start := time.Now().UTC().Truncate(time.Hour)
		end := start.Add(time.Hour)
		after := end.Add(time.Minute)
		meterNow.Store(&after)

		// Real bytes in site one's document root.
		root := sites[0].DocumentRoot
		if err := os.MkdirAll(filepath.Join(root, "wp-content", "uploads"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "wp-content", "uploads", "photo.jpg"), make([]byte, 3<<20+17), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "style.css"), []byte("body{margin:0}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		disk := []int64{treeBytes(t, sites[0].DocumentRoot), treeBytes(t, sites[1].DocumentRoot)}
		if disk[0] < 3<<20 || disk[1] == 0 {
			t.Fatalf("document roots hold %v bytes", disk)
		}

		// Access-log lines as nginx writes them: some in the hour, some outside,
		// one garbled; the rotated file holds the hour's first requests.
		logs := filepath.Join(filepath.Dir(root), "logs")
		cet := time.FixedZone("", 3600)
		appendFile(t, filepath.Join(logs, "access.log.1"),
			nginxLine(start.Add(-10*time.Minute), "/before", 200, 99999)+
				nginxLine(start, "/", 200, 1200)+
				nginxLine(start.Add(5*time.Minute), "/photo.jpg", 200, 3<<20+17))
		appendFile(t, filepath.Join(logs, "access.log"),
			nginxLine(start.Add(30*time.Minute).In(cet), "/style.css", 200, 15)+
				nginxLine(start.Add(40*time.Minute), "/missing", 404, 153)+
				"garbled line\n"+
				nginxLine(end.Add(-time.Second), "/", 304, 0)+
				nginxLine(end, "/next-hour", 200, 88888))
		bandwidth := int64(1200 + 3<<20 + 17 + 15 + 153)

		// The scheduler's tick at the end of the hour sweeps it, through Redis
		// and the worker.
		sweep, err := queue.NewUsageMeterSweepTask(end, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := queue.NewEnqueuer(s.workerRedis).Enqueue(context.Background(), sweep); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for s.count("usage_records", "tenant_id = ?", s.tenantA) < 8 {
			if time.Now().After(deadline) {
				t.Fatalf("after 30s %d usage records; stats %+v", s.count("usage_records", ""), s.meter.Stats())
			}
			time.Sleep(20 * time.Millisecond)
		}

		type key struct{ metric, site string }
		got := map[key]int64{}
		for _, r := range usageRows(t, db) {
			got[key{r.Metric, r.SiteID}] = r.Quantity
		}
		want := map[key]int64{
			{jobs.MetricActiveSites, ""}:        2,
			{jobs.MetricDiskBytes, sites[0].ID}: disk[0], {jobs.MetricDiskBytes, sites[1].ID}: disk[1],
			{jobs.MetricDiskBytes, ""}:               disk[0] + disk[1],
			{jobs.MetricBandwidthBytes, sites[0].ID}: bandwidth, {jobs.MetricBandwidthBytes, sites[1].ID}: 0,
			{jobs.MetricBandwidthBytes, ""}:     bandwidth,
			{jobs.MetricBackupStorageBytes, ""}: 0,
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("usage records (-want +got):\n%s", diff)
		}
		if n := s.count("usage_records", "tenant_id <> ?", s.tenantA); n != 0 {
			t.Errorf("%d usage records of other tenants, which have no sites", n)
		}
		for k := range want {
			id := events.UsageRecordID(s.tenantA, k.metric, k.site, start)
			if n := s.count("outbox_events", "event_id = ? AND topic = ?", id, events.TopicUsage); n != 1 {
				t.Errorf("%d outbox events %s for %v, want 1", n, id, k)
			}
		}
		if st := s.meter.Stats(); st.SkippedLogLines != 1 || st.Runs[jobs.MeterRecorded] != 1 {
			t.Errorf("meter stats %+v, want one recorded run and one skipped line", st)
		}

		// Re-running the hour, even after the files changed, changes nothing:
		// the same rows (updated_at included), no new event.
		rows, outbox := usageRows(t, db), s.count("outbox_events", "")
		if err := os.WriteFile(filepath.Join(root, "more.bin"), make([]byte, 4096), 0o644); err != nil {
			t.Fatal(err)
		}
		appendFile(t, filepath.Join(logs, "access.log"), nginxLine(start.Add(time.Minute), "/late", 200, 777))
		task, err := queue.NewUsageMeterTask(queue.UsageMeterPayload{TenantID: s.tenantA, PeriodStart: start, PeriodEnd: end})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.meter.ProcessTask(context.Background(), task); err != nil {
			t.Fatalf("re-run: %v", err)
		}
		if _, err := s.meterSweep.Sweep(context.Background(), start, end); err != nil { // a second sweep: task-ID conflicts
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // time for a (wrongly) enqueued meter to run
		if st := s.meter.Stats(); st.Runs[jobs.MeterRecorded] != 1 || st.Runs[jobs.MeterAlreadyRecorded] != 1 {
			t.Errorf("runs %v: want the sweep's run and the one re-run only (a second sweep enqueues nothing)", st.Runs)
		}
		if diff := cmp.Diff(rows, usageRows(t, db)); diff != "" {
			t.Errorf("re-run changed usage records (-before +after):\n%s", diff)
		}
		if n := s.count("outbox_events", ""); n != outbox {
			t.Errorf("re-run: %d outbox rows, want %d", n, outbox)
		}

		// GET /usage: the tenant's own records, filtered and paged.
		r := s.do("GET", "/api/v1/usage", s.tokenA, nil)
		if r.status != http.StatusOK {
			t.Fatalf("GET /usage: %d %s", r.status, r.body)
		}
		page := decodeUsagePage(t, r)
		if len(page.Data) != 8 || page.NextCursor != "" {
			t.Errorf("GET /usage: %d records, next %q; want 8, none", len(page.Data), page.NextCursor)
		}
		r = s.do("GET", "/api/v1/usage?metric=bandwidth_bytes&from="+start.Format(time.RFC3339)+"&to="+end.Format(time.RFC3339), s.tokenA, nil)
		page = decodeUsagePage(t, r)
		var sum int64
		for _, rec := range page.Data {
			if rec.Metric != jobs.MetricBandwidthBytes {
				t.Errorf("metric filter returned %+v", rec)
			}
			if rec.SiteID == "" {
				sum += rec.Quantity
			}
		}
		if len(page.Data) != 3 || sum != bandwidth {
			t.Errorf("bandwidth records %+v, want 3 with a total of %d", page.Data, bandwidth)
		}
		r = s.do("GET", "/api/v1/usage?from="+end.Format(time.RFC3339), s.tokenA, nil)
		page = decodeUsagePage(t, r)
		if len(page.Data) != 0 {
			t.Errorf("records from the next hour: %+v", page.Data)
		}
		seen := map[string]bool{}
		for cursor, i := "", 0; i < 5; i++ {
			r = s.do("GET", "/api/v1/usage?limit=3&cursor="+cursor, s.tokenA, nil)
			if r.status != http.StatusOK {
				t.Fatalf("GET /usage page: %d %s", r.status, r.body)
			}
			page = decodeUsagePage(t, r)
			for _, rec := range page.Data {
				seen[rec.ID] = true
			}
			if cursor = page.NextCursor; cursor == "" {
				break
			}
		}
		if len(seen) != 8 {
			t.Errorf("paging saw %d records, want 8", len(seen))
		}
		for _, bad := range []struct{ query, field string }{
			{"from=yesterday", "from"}, {"to=2026-13-01T00:00:00Z", "to"},
			{"from=" + end.Format(time.RFC3339) + "&to=" + start.Format(time.RFC3339), "to"},
			{"metric=Disk%20Bytes", "metric"}, {"cursor=site_x", "cursor"}, {"limit=0", "limit"},
		} {
			assertProblem(t, s.do("GET", "/api/v1/usage?"+bad.query, s.tokenA, nil), http.StatusUnprocessableEntity, bad.field)
		}

		// Tenant B sees none of it.
		r = s.do("GET", "/api/v1/usage", s.tokenB, nil)
		page = decodeUsagePage(t, r)
		if r.status != http.StatusOK || len(page.Data) != 0 {
			t.Errorf("tenant B's GET /usage: %d, %d records", r.status, len(page.Data))
		}
		if r := s.do("GET", "/api/v1/usage", "", nil); r.status != http.StatusUnauthorized {
			t.Errorf("GET /usage without a token: %d", r.status)
		}
	})
}
