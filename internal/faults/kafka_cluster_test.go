package faults

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/events/billing"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// Injected: a three-node Kafka cluster (scripts/kafka.sh start-cluster: each
// node a broker and a KRaft controller) carries CHOM's topics, created by the
// relay with its production defaults (6 partitions, 3 replicas,
// min.insync.replicas 2); the relay (acks=all) and the billing consumer run
// in-process with their production settings, bootstrapped with all three
// addresses, while usage records stream into the outbox across 60 tenants.
// Then the active controller is killed with SIGKILL mid-stream: it also leads
// partitions of the usage topic, follows the others and may coordinate the
// consumer group, so one kill costs all of that at once. Once the relay
// publishes to every partition again, the relay and the consumer are
// restarted with the dead broker first in their bootstrap list (they must
// start and work with 2 of 3) and a 3-replica topic is created (KRaft allows
// it); then the broker is restarted and the test waits until its replicas are
// back in every ISR (the usage topic's and the consumer offsets').
//
// Must hold: every outbox row is published and billed exactly once (one
// invoice line per usage event; duplicates on Kafka absorbed by the
// consumer, and counted); each tenant's events reach Kafka and the invoice in
// the order the outbox wrote them; invoice totals equal the usage sum per
// tenant; no record dead-lettered. Reported: events/s, the gap (time with no
// publish) after each kill, the restart and ISR catch-up times.
func TestKafkaBrokerKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault suite takes minutes; skipped with -short")
	}
	t.Parallel()
	began := time.Now()
	cluster := testenv.StartKafkaCluster(t, 3)
	t.Logf("cluster: 3 nodes %s, started in %s", strings.Join(cluster.Brokers(), ","), cluster.Started.Round(time.Millisecond))
	db := testenv.Postgres(t)
	if _, err := models.MigrateUp(t.Context(), db); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	store, err := models.New(models.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	var logs testenv.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("relay and consumer logs:\n%s", lastLines(logs.String(), 60))
		}
	})
	k := &kafkaRun{t: t, cluster: cluster, store: store, db: db, log: log}
	usageTopic := events.FullTopic(events.DefaultTopicPrefix, events.TopicUsage)
	k.start(cluster.Brokers())
	if !waitFor(90*time.Second, func() bool { return k.led(usageTopic) }) {
		t.Fatalf("the relay did not create %s within 90s", usageTopic)
	}
	k.checkTopic(usageTopic)

	stream := startUsageStream(t, db, 60)
	k.waitPublished(stream, 3*time.Second)

	// The active controller, which leads partitions too: one kill loses a
	// partition leader, a follower of every partition and the KRaft quorum's
	// leader at once. While it is down, the relay and the consumer restart.
	controller := k.activeController()
	k.killAndRecover(stream, controller, controller, usageTopic, func() {
		k.stop()
		brokers := append([]string{cluster.Addr(controller)}, slices.DeleteFunc(cluster.Brokers(), func(a string) bool { return a == cluster.Addr(controller) })...)
		k.start(brokers)
		before := k.lastPublished()
		if !waitFor(60*time.Second, func() bool { return k.lastPublished() > before }) {
			t.Errorf("the relay restarted with %s (node %d down) published nothing within 60s", strings.Join(brokers, ","), controller)
		}
		admin := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
		spec := events.TopicSpec{Partitions: 1, ReplicationFactor: 3}
		// KRaft places replicas on registered brokers, fenced ones included, so
		// a topic can be created while one broker is down; its replicas there
		// join the ISR when it returns.
		//
		// Until the dead broker's session times out (broker.session.timeout.ms,
		// 9 s by default), the live brokers still list it as unfenced, and a
		// metadata answer may name it as the controller a CreateTopics goes
		// to: that request fails to dial. The product's callers (the relay,
		// the billing consumer) retry; so does this probe, on dial errors
		// only, for at most 30 s, and it logs each refusal.
		probe := events.FullTopic("probe", "sites.v1")
		createStart := time.Now()
		var err error
		for attempt := 1; ; attempt++ {
			err = events.EnsureTopics(t.Context(), admin, spec, probe)
			var netErr net.Error
			if err == nil || !errors.As(err, &netErr) || time.Since(createStart) > 30*time.Second {
				break
			}
			t.Logf("  creating a 3-replica topic, attempt %d: %v; retrying", attempt, err)
			time.Sleep(500 * time.Millisecond)
		}
		t.Logf("  relay and consumer restarted with bootstrap %s (node %d down first): publishing again; created a 3-replica topic %s after the restart: %v",
			strings.Join(brokers, ","), controller, time.Since(createStart).Round(time.Millisecond), err)
		if err != nil {
			t.Errorf("creating a 3-replica topic with 2 of 3 brokers up: %v", err)
		}
	})

	rows := stream.stop()
	elapsed := stream.stopped.Sub(stream.began)
	if !waitFor(90*time.Second, func() bool { n, _ := store.CountUnpublished(t.Context()); return n == 0 }) {
		n, _ := store.CountUnpublished(t.Context())
		t.Fatalf("%d outbox rows still unpublished 90s after the stream ended", n)
	}
	if !waitFor(90*time.Second, func() bool { return k.billedLines() >= rows }) {
		t.Errorf("%d of %d usage events billed 90s after the outbox drained", k.billedLines(), rows)
	}
	time.Sleep(time.Second) // anything still in flight would overshoot now
	k.stop()
	t.Logf("stream: %d usage events of 60 tenants in %s: %.0f events/s offered; all published and billed %s after the stream ended",
		rows, elapsed.Round(time.Millisecond), float64(rows)/elapsed.Seconds(), time.Since(stream.stopped).Round(time.Millisecond))
	k.checkLedger(db, stream, usageTopic)
	t.Logf("test took %s (cluster start-up included)", time.Since(began).Round(time.Second))
}

// kafkaRun is the relay and the billing consumer of TestKafkaBrokerKilled,
// which it restarts, with the counters of their earlier runs.
type kafkaRun struct {
	t       *testing.T
	cluster *testenv.KafkaCluster
	store   *models.Store
	db      *bun.DB
	log     *slog.Logger

	relay    *events.Relay
	consumer *billing.Consumer
	stops    []func()
	// Counters of the relays and consumers already stopped.
	published, failed   uint64
	billed, duplicates  uint64
	deadLettered, other uint64
}

// start runs a relay and a consumer with production defaults, bootstrapped
// with brokers.
func (k *kafkaRun) start(brokers []string) {
	k.t.Helper()
	relay, err := events.NewRelay(events.RelayConfig{Store: k.store, Brokers: brokers, Logger: k.log})
	if err != nil {
		k.t.Fatal(err)
	}
	consumer, err := billing.New(billing.Config{Store: k.store, Brokers: brokers, Logger: k.log})
	if err != nil {
		k.t.Fatal(err)
	}
	k.relay, k.consumer = relay, consumer
	k.stops = []func(){
		testenv.RunInBackground(k.t, "relay", relay.Run),
		testenv.RunInBackground(k.t, "billing consumer", consumer.Run),
	}
}

// stop stops the relay and the consumer and keeps their counters.
func (k *kafkaRun) stop() {
	for _, stop := range k.stops {
		stop()
	}
	k.stops = nil
	rs, cs := k.relay.Stats(), k.consumer.Stats()
	k.published += rs.Published
	k.failed += rs.Failed
	k.billed += cs.Billed
	k.duplicates += cs.Duplicates
	k.deadLettered += cs.DeadLettered
	k.other += cs.Ignored
}

func (k *kafkaRun) activeController() int {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(k.t.Context(), 30*time.Second)
	defer cancel()
	id, err := k.cluster.ActiveController(ctx)
	if err != nil {
		k.t.Fatal(err)
	}
	return id
}

// partitions returns the state of topic's partitions once every one has a
// leader (a broker just killed may still lead some in the metadata).
func (k *kafkaRun) partitions(topic string) []testenv.PartitionState {
	k.t.Helper()
	var parts []testenv.PartitionState
	var err error
	if !waitFor(30*time.Second, func() bool {
		parts, err = k.cluster.Partitions(k.t.Context(), topic)
		return err == nil && k.led(topic)
	}) {
		k.t.Fatalf("partitions of %s: %v %+v", topic, err, parts)
	}
	return parts
}

// led reports whether topic has all its partitions, each with a leader.
func (k *kafkaRun) led(topic string) bool {
	parts, err := k.cluster.Partitions(k.t.Context(), topic)
	if err != nil || len(parts) != events.DefaultPartitions {
		return false
	}
	for _, p := range parts {
		if p.Leader < 0 {
			return false
		}
	}
	return true
}

// checkTopic checks that the relay created topic as production does: 6
// partitions of 3 replicas, min.insync.replicas 2.
func (k *kafkaRun) checkTopic(topic string) {
	k.t.Helper()
	parts := k.partitions(topic)
	for _, p := range parts {
		if len(p.Replicas) != 3 {
			k.t.Errorf("%s/%d has replicas %v, want 3", topic, p.Partition, p.Replicas)
		}
	}
	admin := &kafka.Client{Addr: kafka.TCP(k.cluster.Brokers()...), Timeout: 10 * time.Second}
	res, err := admin.DescribeConfigs(k.t.Context(), &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{"min.insync.replicas"}}}})
	if err != nil {
		k.t.Fatalf("describe %s: %v", topic, err)
	}
	minISR := ""
	for _, r := range res.Resources {
		for _, e := range r.ConfigEntries {
			if e.ConfigName == "min.insync.replicas" {
				minISR = e.ConfigValue
			}
		}
	}
	if len(parts) != events.DefaultPartitions || minISR != "2" {
		k.t.Errorf("%s: %d partitions, min.insync.replicas %q; want %d and 2", topic, len(parts), minISR, events.DefaultPartitions)
	}
	k.t.Logf("topic %s: %d partitions × 3 replicas, min.insync.replicas=%s, leaders %v", topic, len(parts), minISR, leaders(parts))
}

// killAndRecover kills node mid-stream, waits until the relay publishes to every
// partition of topic again, runs during (if any) while the node is down,
// restarts it and waits until every replica is back in sync; it logs the gap
// and the recovery times.
func (k *kafkaRun) killAndRecover(s *usageStream, node, controller int, topic string, during func()) {
	t := k.t
	t.Helper()
	parts := k.partitions(topic)
	led := ledBy(parts, node)
	if len(led) == 0 {
		// Six partitions over three brokers: the placement gives each two.
		t.Fatalf("node %d leads no partition of %s: %+v", node, topic, parts)
	}
	role := "a broker"
	if node == controller {
		role = "the active controller"
	}
	k.waitPublished(s, 3*time.Second)
	k.cluster.Kill(node)
	killed := time.Now()
	t.Logf("fault: SIGKILL node %d (%s; leader of %s partitions %v; controller %d) at %s, mid-stream",
		node, role, topic, led, controller, killed.Format("15:04:05.000"))
	if !waitFor(90*time.Second, func() bool { return k.publishedEverywhere(s, topic, killed) }) {
		t.Fatalf("the relay did not publish to every partition of %s within 90s of the kill", topic)
	}
	back := time.Since(killed)
	after := k.partitions(topic)
	t.Logf("  new leaders %v; the relay published to every partition again %s after the kill", leaders(after), back.Round(time.Millisecond))
	if during != nil {
		during()
	}
	restart := time.Now()
	k.cluster.Start(node)
	started := time.Since(restart)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	// The consumer group's offsets too: their partitions had a replica on it.
	catchUp, err := k.cluster.WaitInSync(ctx, topic, "__consumer_offsets")
	if err != nil {
		t.Fatalf("node %d restarted: %v", node, err)
	}
	gap, partGap := k.gaps(s, killed, led, topic)
	t.Logf("  gap: no publish at all for %s; the longest pause of the %d partitions node %d led: %s; node %d down %s, restarted in %s, its replicas back in every ISR %s later",
		gap.Round(time.Millisecond), len(led), node, partGap.Round(time.Millisecond), node, restart.Sub(killed).Round(time.Millisecond),
		started.Round(time.Millisecond), catchUp.Round(time.Millisecond))
}

// waitPublished waits until the relay has published for d of streaming.
func (k *kafkaRun) waitPublished(s *usageStream, d time.Duration) {
	k.t.Helper()
	from := time.Now()
	if !waitFor(d+60*time.Second, func() bool { return time.Since(from) >= d && k.lastPublished() > 0 }) {
		k.t.Fatalf("nothing published within %s", d+60*time.Second)
	}
}

// lastPublished returns the highest outbox ID marked published, 0 for none.
func (k *kafkaRun) lastPublished() int64 {
	var id int64
	_ = k.db.NewSelect().Model((*models.OutboxEvent)(nil)).ColumnExpr("COALESCE(MAX(id), 0)").
		Where("published_at IS NOT NULL").Scan(k.t.Context(), &id)
	return id
}

// publishedEverywhere reports whether, since since, a row of every partition of
// topic has been published (the partition of a row is its tenant's).
func (k *kafkaRun) publishedEverywhere(s *usageStream, topic string, since time.Time) bool {
	var tenants []string
	err := k.db.NewSelect().Model((*models.OutboxEvent)(nil)).ColumnExpr("DISTINCT tenant_id").
		Where("published_at > ?", since.UTC()).Scan(k.t.Context(), &tenants)
	if err != nil {
		return false
	}
	seen := map[int]bool{}
	for _, ten := range tenants {
		seen[s.partitionOf(ten)] = true
	}
	return len(seen) == events.DefaultPartitions
}

// gaps returns the longest time with no row published at all, and the longest
// with no row published to the partitions in led, from 2s before killed until
// now.
func (k *kafkaRun) gaps(s *usageStream, killed time.Time, led []int, topic string) (all, mine time.Duration) {
	var rows []struct {
		TenantID    string    `bun:"tenant_id"`
		PublishedAt time.Time `bun:"published_at"`
	}
	from := killed.Add(-2 * time.Second).UTC()
	err := k.db.NewSelect().Model((*models.OutboxEvent)(nil)).Column("tenant_id", "published_at").
		Where("published_at >= ?", from).Order("published_at").Scan(k.t.Context(), &rows)
	if err != nil {
		k.t.Fatalf("published times: %v", err)
	}
	longest := func(keep func(tenant string) bool) time.Duration {
		var d time.Duration
		last := from
		for _, r := range rows {
			if keep(r.TenantID) {
				d = max(d, r.PublishedAt.Sub(last))
				last = r.PublishedAt
			}
		}
		return d
	}
	all = longest(func(string) bool { return true })
	mine = longest(func(ten string) bool { return slices.Contains(led, s.partitionOf(ten)) })
	return all, mine
}

// billedLines counts invoice lines.
func (k *kafkaRun) billedLines() int {
	n, err := k.db.NewSelect().Table("invoice_lines").Count(k.t.Context())
	if err != nil {
		return -1
	}
	return int(n)
}

// checkLedger checks that every outbox row reached Kafka and the invoices
// exactly once and in order per tenant, and that the totals match.
func (k *kafkaRun) checkLedger(db *bun.DB, s *usageStream, topic string) {
	t := k.t
	t.Helper()
	// Kafka: each event at least once; per tenant, first copies in outbox order.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	records, err := testenv.Records(ctx, k.cluster.Brokers(), topic)
	if err != nil {
		t.Fatalf("read %s: %v", topic, err)
	}
	seq := s.sequence()
	copies := map[string]int{}
	next := map[string]int{} // tenant → index in its sequence of the next first copy
	var kafkaOrder []string
	for _, m := range records {
		id := header(m, "ce_id")
		copies[id]++
		if copies[id] > 1 {
			continue
		}
		ten := string(m.Key)
		want := seq[ten]
		if next[ten] >= len(want) || want[next[ten]] != id {
			kafkaOrder = append(kafkaOrder, fmt.Sprintf("tenant %s: %s at %d/%d", ten, id, m.Partition, m.Offset))
		}
		next[ten]++
	}
	missing, dupRecords := 0, 0
	for _, ids := range seq {
		for _, id := range ids {
			switch n := copies[id]; {
			case n == 0:
				missing++
			case n > 1:
				dupRecords += n - 1
			}
		}
	}
	// The invoices: one line per event, in outbox order per tenant, totals equal.
	var lines []struct {
		TenantID string `bun:"tenant_id"`
		EventID  string `bun:"event_id"`
		Quantity int64  `bun:"quantity"`
	}
	if err := db.NewSelect().Table("invoice_lines").Column("tenant_id", "event_id", "quantity").Order("id").Scan(t.Context(), &lines); err != nil {
		t.Fatal(err)
	}
	perEvent := map[string]int{}
	billed := map[string]int64{}
	pos := map[string]int{}
	var lineOrder []string
	for _, l := range lines {
		perEvent[l.EventID]++
		billed[l.TenantID] += l.Quantity
		want := seq[l.TenantID]
		if pos[l.TenantID] >= len(want) || want[pos[l.TenantID]] != l.EventID {
			lineOrder = append(lineOrder, fmt.Sprintf("tenant %s: line for %s", l.TenantID, l.EventID))
		}
		pos[l.TenantID]++
	}
	unbilled, twice := 0, 0
	for _, ids := range seq {
		for _, id := range ids {
			switch perEvent[id] {
			case 0:
				unbilled++
			case 1:
			default:
				twice++
			}
		}
	}
	var wrongTotals []string
	for ten, q := range s.want {
		if billed[ten] != q {
			wrongTotals = append(wrongTotals, fmt.Sprintf("tenant %s billed %d, want exactly %d", ten, billed[ten], q))
		}
	}
	if len(wrongTotals) > 0 {
		t.Errorf("%d tenants' invoice totals differ from their usage sums, such as %v", len(wrongTotals), head(wrongTotals, 3))
	}
	rows := s.rows()
	t.Logf("ledger: %d outbox rows; on %s %d records: %d events missing, %d duplicate records; billing: %d lines, %d events unbilled, %d billed twice, %d tenants' totals wrong of %d; consumer billed %d, absorbed %d duplicates, dead-lettered %d; relay acknowledged %d records, %d failed attempts",
		rows, topic, len(records), missing, dupRecords, len(lines), unbilled, twice, len(wrongTotals), len(s.want),
		k.billed, k.duplicates, k.deadLettered, k.published, k.failed)
	t.Logf("order: %d tenants' events out of outbox order on Kafka (first copies), %d out of order on the invoices", len(kafkaOrder), len(lineOrder))
	if missing > 0 || unbilled > 0 || twice > 0 || len(lines) != rows {
		t.Errorf("not exactly once: %d missing on Kafka, %d unbilled, %d billed twice, %d lines for %d rows", missing, unbilled, twice, len(lines), rows)
	}
	if len(kafkaOrder) > 0 || len(lineOrder) > 0 {
		t.Errorf("order broken: Kafka %v; invoices %v", head(kafkaOrder, 5), head(lineOrder, 5))
	}
	if k.deadLettered > 0 || k.billed != uint64(rows) {
		t.Errorf("consumer billed %d (want %d) and dead-lettered %d (want 0)", k.billed, rows, k.deadLettered)
	}
}

// usageStream inserts usage records into the outbox at a steady pace (200 a
// second, which the race-built consumer keeps up with on two busy cores): every
// 50ms one hour of usage for each of 10 tenants (a rotating sixth of them),
// one row per tenant per statement, so each tenant's rows have increasing IDs.
type usageStream struct {
	t       *testing.T
	db      *bun.DB
	tenants []string
	done    chan struct{}
	exited  chan struct{}
	began   time.Time
	stopped time.Time

	mu   sync.Mutex
	seq  map[string][]string // tenant → event IDs in outbox order
	want map[string]int64    // tenant → usage sum
	n    int
}

// Time of the first usage hour.
var streamBase = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

func startUsageStream(t *testing.T, db *bun.DB, tenants int) *usageStream {
	s := &usageStream{t: t, db: db, done: make(chan struct{}), exited: make(chan struct{}),
		seq: map[string][]string{}, want: map[string]int64{}, began: time.Now()}
	for range tenants {
		s.tenants = append(s.tenants, models.NewID(models.PrefixTenant))
	}
	go s.run()
	t.Cleanup(func() { s.stop() })
	return s
}

func (s *usageStream) run() {
	defer close(s.exited)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	hour := map[string]int{}
	for k := 0; ; k++ {
		select {
		case <-s.done:
			return
		case <-tick.C:
		}
		var rows []models.OutboxEvent
		var qs []int64
		for i := range 10 {
			ten := s.tenants[(k*10+i)%len(s.tenants)]
			h := hour[ten]
			hour[ten]++
			q := int64(1_000_003*(i+1) + h)
			start := streamBase.Add(time.Duration(h) * time.Hour)
			row, err := events.UsageOutbox(events.UsageEvent{TenantID: ten, Metric: "bandwidth_bytes", Quantity: q,
				Unit: "byte", PeriodStart: start, PeriodEnd: start.Add(time.Hour), OccurredAt: start.Add(time.Hour)})
			if err != nil {
				s.t.Error(err)
				return
			}
			row.CreatedAt = time.Now().UTC()
			rows = append(rows, row)
			qs = append(qs, q)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := s.db.NewInsert().Model(&rows).Exec(ctx)
		cancel()
		if err != nil {
			s.t.Errorf("insert usage: %v", err)
			return
		}
		s.mu.Lock()
		for i, r := range rows {
			s.seq[r.TenantID] = append(s.seq[r.TenantID], r.EventID)
			s.want[r.TenantID] += qs[i]
		}
		s.n += len(rows)
		s.mu.Unlock()
	}
}

// stop ends the stream and returns how many rows it wrote.
func (s *usageStream) stop() int {
	select {
	case <-s.done:
	default:
		close(s.done)
		<-s.exited
		s.stopped = time.Now()
	}
	return s.rows()
}

func (s *usageStream) rows() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// sequence returns each tenant's event IDs in outbox order.
func (s *usageStream) sequence() map[string][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]string, len(s.seq))
	for ten, ids := range s.seq {
		out[ten] = slices.Clone(ids)
	}
	return out
}

// partitionOf is the partition of tenant's records: the relay's balancer over
// the topic's partitions.
func (s *usageStream) partitionOf(tenant string) int {
	parts := make([]int, events.DefaultPartitions)
	for i := range parts {
		parts[i] = i
	}
	return kafka.Murmur2Balancer{}.Balance(kafka.Message{Key: []byte(tenant)}, parts...)
}

// ledBy returns the partitions node leads.
func ledBy(parts []testenv.PartitionState, node int) []int {
	var out []int
	for _, p := range parts {
		if p.Leader == node {
			out = append(out, p.Partition)
		}
	}
	return out
}

// leaders returns each partition's leader, in partition order.
func leaders(parts []testenv.PartitionState) []int {
	out := make([]int, 0, len(parts))
	for _, p := range parts {
		out = append(out, p.Leader)
	}
	return out
}

func header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func head(s []string, n int) []string { return s[:min(n, len(s))] }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
