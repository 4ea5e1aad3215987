package billing_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/events/billing"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

var base = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func testLogger() *slog.Logger {
	if os.Getenv("CHOM_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newStore(t testing.TB, db *bun.DB) *models.Store {
	t.Helper()
	if _, err := models.MigrateUp(t.Context(), db); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	s, err := models.New(models.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// usage builds the outbox row of tenant's metric for the hour starting at start.
func usage(t testing.TB, tenant string, start time.Time, qty int64) models.OutboxEvent {
	t.Helper()
	row, err := events.UsageOutbox(events.UsageEvent{TenantID: tenant, Metric: "bandwidth_bytes", Quantity: qty,
		Unit: "byte", PeriodStart: start, PeriodEnd: start.Add(time.Hour), OccurredAt: start.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return row
}

// runConsumer starts a consumer and returns it with a function that stops it.
func runConsumer(t testing.TB, cfg billing.Config) (*billing.Consumer, func()) {
	t.Helper()
	cfg.Logger = testLogger()
	if cfg.Topics.Partitions == 0 {
		cfg.Topics = events.TopicSpec{Partitions: 3, ReplicationFactor: 1}
	}
	if cfg.SessionTimeout == 0 {
		cfg.SessionTimeout = 6 * time.Second
	}
	c, err := billing.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, testenv.RunInBackground(t, "consumer", c.Run)
}

// billedByTenant sums the invoice lines of every tenant.
func billedByTenant(t testing.TB, db *bun.DB) map[string]int64 {
	t.Helper()
	var rows []struct {
		TenantID string `bun:"tenant_id"`
		Total    int64  `bun:"total"`
	}
	err := db.NewSelect().Table("invoice_lines").ColumnExpr("tenant_id, SUM(quantity) AS total").
		GroupExpr("tenant_id").Scan(t.Context(), &rows)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, r := range rows {
		out[r.TenantID] = r.Total
	}
	return out
}

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	_, err := billing.New(billing.Config{TopicPrefix: "a b", MaxBatch: -1})
	for _, want := range []string{"Store is required", "Brokers is required", "Logger is required", "topic prefix", "MaxBatch"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
	}
}

// Records that are not valid events go to the dead-letter topic with the reason,
// and the consumer carries on with the good ones around them.
func TestConsumerDeadLettersAndKeepsGoing(t *testing.T) {
	t.Parallel()
	k := testenv.Kafka(t)
	db := testenv.SQLite(t)
	s := newStore(t, db)
	ten := models.NewID(models.PrefixTenant)
	spec := events.TopicSpec{Partitions: 1, ReplicationFactor: 1}
	usageTopic := events.FullTopic(k.Prefix, events.TopicUsage)
	admin := &kafka.Client{Addr: kafka.TCP(k.Brokers...)}
	if err := events.EnsureTopics(t.Context(), admin, spec, usageTopic); err != nil {
		t.Fatal(err)
	}

	good1 := events.Message(k.Prefix, usage(t, ten, base, 100))
	good2 := events.Message(k.Prefix, usage(t, ten, base.Add(time.Hour), 23))
	forged := events.Message(k.Prefix, usage(t, ten, base.Add(2*time.Hour), 1000))
	forged.Headers[0].Value = []byte("00000000-0000-5000-8000-000000000000") // ce_id
	negative := events.Message(k.Prefix, usage(t, ten, base.Add(3*time.Hour), 1))
	negative.Value = []byte(strings.Replace(string(negative.Value), `"quantity":1`, `"quantity":-1`, 1))
	unknown := events.Message(k.Prefix, usage(t, ten, base.Add(4*time.Hour), 1))
	unknown.Headers[2].Value = []byte("usage.corrected.v2") // ce_type: not ours to bill
	// A site's share of a total: valid, and not billed (the total is).
	share, err := events.UsageOutbox(events.UsageEvent{TenantID: ten, Metric: "bandwidth_bytes",
		SiteID: models.NewID(models.PrefixSite), Quantity: 5000, Unit: "byte",
		PeriodStart: base, PeriodEnd: base.Add(time.Hour), OccurredAt: base.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	perSite := events.Message(k.Prefix, share)
	malformed := []kafka.Message{
		{Key: []byte(ten), Value: []byte(`{"tenant_id":"` + ten + `","quantity":5}`)}, // no headers at all
		{Key: []byte(ten), Value: []byte(`not json`), Headers: good1.Headers},
		forged,
		negative,
	}
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Topic: usageTopic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	var all []kafka.Message
	all = append(all, good1)
	all = append(all, malformed...)
	all = append(all, unknown, perSite, good2)
	for i := range all {
		all[i].Topic = ""
	}
	if err := w.WriteMessages(t.Context(), all...); err != nil {
		t.Fatal(err)
	}

	c, _ := runConsumer(t, billing.Config{Store: s, Brokers: k.Brokers, TopicPrefix: k.Prefix, GroupID: "billing-" + k.Prefix, Topics: spec})
	waitFor(t, "good records billed", 60*time.Second, func() bool { return c.Stats().Billed == 2 })
	dlq := testenv.WaitRecords(t, k.Brokers, c.DLQTopic(), len(malformed), 30*time.Second)
	if len(dlq) != len(malformed) {
		t.Fatalf("%d records on %s, want %d", len(dlq), c.DLQTopic(), len(malformed))
	}
	reasons := []string{"ce_id is missing", "not a JSON object", "stable ID", "quantity"}
	for i, m := range dlq {
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
		}
		if !strings.Contains(h[billing.HeaderDLQReason], reasons[i]) {
			t.Errorf("dead letter %d: reason %q, want it to mention %q", i, h[billing.HeaderDLQReason], reasons[i])
		}
		if h[billing.HeaderDLQTopic] != usageTopic || h[billing.HeaderDLQOffset] != []string{"1", "2", "3", "4"}[i] {
			t.Errorf("dead letter %d: from %s@%s, want %s@%d", i, h[billing.HeaderDLQTopic], h[billing.HeaderDLQOffset], usageTopic, i+1)
		}
		if string(m.Value) != string(malformed[i].Value) || string(m.Key) != ten {
			t.Errorf("dead letter %d does not carry the original record", i)
		}
	}
	if got := billedByTenant(t, db)[ten]; got != 123 {
		t.Errorf("billed %d, want 123", got)
	}
	if st := c.Stats(); st.DeadLettered != 4 || st.Ignored != 2 || st.Duplicates != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

// Kafka stopped for a while and started again, rows republished as after a relay
// crash: the outbox drains, and the invoices bill every usage record exactly
// once, to the unit.
func TestKafkaOutageBillsExactlyOnce(t *testing.T) {
	t.Parallel()
	srv := testenv.StartKafkaServer(t)
	db := testenv.Postgres(t)
	s := newStore(t, db)
	tenants := []string{models.NewID(models.PrefixTenant), models.NewID(models.PrefixTenant), models.NewID(models.PrefixTenant)}
	want := map[string]int64{}
	insert := func(from, hours int) []models.OutboxEvent { return insertUsage(t, db, tenants, from, hours, want) }
	spec := events.TopicSpec{Partitions: 3, ReplicationFactor: 1}
	first := insert(0, 40)
	relay, err := events.NewRelay(events.RelayConfig{Store: s, Brokers: srv.Brokers(), Logger: testLogger(), Topics: spec,
		PollInterval: 20 * time.Millisecond, BreakerFailures: 2, BreakerTimeout: time.Second, WriteTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stopRelay := context.WithCancel(context.WithoutCancel(t.Context()))
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(ctx) }()
	defer func() { stopRelay(); <-relayDone }()
	c, _ := runConsumer(t, billing.Config{Store: s, Brokers: srv.Brokers(), Topics: spec})

	waitFor(t, "first rows published", 60*time.Second, func() bool { n, _ := s.CountUnpublished(t.Context()); return n == 0 })

	srv.Stop()
	// 120 hours from hour 100: the last ones fall in December, a second invoice.
	insert(100, 120)
	waitFor(t, "relay failing while Kafka is down", 60*time.Second, func() bool { return relay.Stats().Failed > 0 })
	time.Sleep(2 * time.Second)
	if n, _ := s.CountUnpublished(t.Context()); n != 360 {
		t.Errorf("%d rows unpublished while Kafka is down, want 360", n)
	}
	// A relay that crashed after publishing and before marking: these rows go out again.
	republish := make([]int64, 0, 60)
	for _, r := range first[:60] {
		republish = append(republish, r.ID)
	}
	if _, err := db.NewUpdate().Model((*models.OutboxEvent)(nil)).Set("published_at = NULL").
		Where("id IN (?)", bun.In(republish)).Exec(t.Context()); err != nil {
		t.Fatal(err)
	}

	srv.Start()
	waitFor(t, "outbox drained after Kafka came back", 120*time.Second, func() bool {
		n, _ := s.CountUnpublished(t.Context())
		return n == 0
	})
	waitFor(t, "every usage record billed", 120*time.Second, func() bool {
		got := billedByTenant(t, db)
		for ten, q := range want {
			if got[ten] != q {
				return false
			}
		}
		return true
	})
	waitFor(t, "duplicates seen by the consumer", 60*time.Second, func() bool { return c.Stats().Duplicates >= 60 })
	time.Sleep(time.Second) // anything still in flight would overshoot now
	got := billedByTenant(t, db)
	for ten, q := range want {
		if got[ten] != q {
			t.Errorf("tenant %s billed %d, want exactly %d", ten, got[ten], q)
		}
	}
	n, err := db.NewSelect().Table("invoice_lines").Count(t.Context())
	if err != nil || n != 3*160 {
		t.Errorf("%d invoice lines (%v), want one per usage record: %d", n, err, 3*160)
	}
	dec, err := s.GetInvoice(t.Context(), tenants[0], time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatalf("December invoice: %v", err)
	}
	if totals, err := s.InvoiceTotals(t.Context(), dec.ID); err != nil || len(totals) != 1 || totals[0].Lines == 0 {
		t.Errorf("December totals = %+v, %v", totals, err)
	}
	st := c.Stats()
	t.Logf("relay %+v; consumer %+v", relay.Stats(), st)
	if st.Billed != 3*160 || st.DeadLettered != 0 {
		t.Errorf("consumer Stats = %+v, want %d billed, none dead-lettered", st, 3*160)
	}
}

// insertUsage writes to db's outbox one usage.recorded.v1 row per tenant for
// each hour in [from, from+hours) after base, each a distinct quantity, and
// adds every quantity to want (by tenant): the ledger the invoices must match.
func insertUsage(t *testing.T, db *bun.DB, tenants []string, from, hours int, want map[string]int64) []models.OutboxEvent {
	t.Helper()
	var rows []models.OutboxEvent
	for h := from; h < from+hours; h++ {
		for i, ten := range tenants {
			q := int64(1_000_003*(i+1) + h)
			rows = append(rows, usage(t, ten, base.Add(time.Duration(h)*time.Hour), q))
			want[ten] += q
		}
	}
	now := time.Now().UTC()
	for i := range rows {
		rows[i].CreatedAt = now
	}
	if _, err := db.NewInsert().Model(&rows).Exec(t.Context()); err != nil {
		t.Fatal(err)
	}
	return rows
}
