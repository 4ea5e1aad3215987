package events_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/models"
)

func headerMap(m kafka.Message) map[string]string {
	out := map[string]string{}
	for _, h := range m.Headers {
		out[h.Key] = string(h.Value)
	}
	return out
}

func TestMessageIsABinaryModeCloudEvent(t *testing.T) {
	t.Parallel()
	row := emitted(t)["usage"]
	for _, tc := range []struct {
		prefix, topic string
	}{
		{"chom", "chom.usage.v1"},
		{"acme.prod", "acme.prod.usage.v1"},
		{"", "usage.v1"},
	} {
		m := events.Message(tc.prefix, row)
		if m.Topic != tc.topic {
			t.Errorf("prefix %q: topic %q, want %q", tc.prefix, m.Topic, tc.topic)
		}
	}
	m := events.Message("chom", row)
	want := map[string]string{
		"ce_id":           row.EventID,
		"ce_source":       "/chom/usage",
		"ce_type":         "usage.recorded.v1",
		"ce_specversion":  "1.0",
		"ce_time":         "2026-11-25T10:00:00.123456Z",
		"ce_subject":      "storage_bytes",
		"ce_partitionkey": tenantID,
		"content-type":    "application/json",
	}
	if diff := cmp.Diff(want, headerMap(m)); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}
	if string(m.Key) != tenantID {
		t.Errorf("key %q, want the tenant ID", m.Key)
	}
	env, err := events.Parse(m)
	if err != nil {
		t.Fatalf("Parse of our own record: %v", err)
	}
	if env.ID != row.EventID || env.TenantID != tenantID || !env.Time.Equal(at.Truncate(time.Microsecond)) || string(env.Data) != row.Data {
		t.Errorf("Parse = %+v", env)
	}
	u, err := events.DecodeUsage(env)
	if err != nil || u.Quantity != 1<<40 {
		t.Errorf("DecodeUsage = %+v, %v", u, err)
	}
}

// mutate returns a copy of m with header key set to value ("" removes it).
func mutate(m kafka.Message, key, value string) kafka.Message {
	out := m
	out.Headers = nil
	for _, h := range m.Headers {
		if h.Key != key {
			out.Headers = append(out.Headers, h)
		}
	}
	if value != "" {
		out.Headers = append(out.Headers, kafka.Header{Key: key, Value: []byte(value)})
	}
	return out
}

func TestParseAndDecodeRefuseMalformedRecords(t *testing.T) {
	t.Parallel()
	usage := events.Message("chom", emitted(t)["usage"])
	site := events.Message("chom", emitted(t)["deleted"])
	withValue := func(m kafka.Message, v string) kafka.Message { m.Value = []byte(v); return m }
	withKey := func(m kafka.Message, k string) kafka.Message { m.Key = []byte(k); return m }
	for _, tc := range []struct {
		name string
		msg  kafka.Message
		want string // in the error
	}{
		{"no headers", kafka.Message{Key: []byte("t"), Value: []byte(`{}`)}, "ce_id is missing"},
		{"no id", mutate(usage, "ce_id", ""), "ce_id is missing"},
		{"no type", mutate(usage, "ce_type", ""), "ce_type is missing"},
		{"old spec", mutate(usage, "ce_specversion", "0.3"), "ce_specversion"},
		{"xml", mutate(usage, "content-type", "application/xml"), "content-type"},
		{"bad time", mutate(usage, "ce_time", "yesterday"), "ce_time"},
		{"no key", withKey(usage, ""), "key"},
		{"partition key differs", mutate(usage, "ce_partitionkey", "ten_other"), "ce_partitionkey"},
		{"not json", withValue(usage, `{"tenant_id":`), "not a JSON object"},
		{"json array", withValue(usage, `[1]`), "not a JSON object"},
		{"unknown field", withValue(usage, strings.Replace(string(usage.Value), `{`, `{"price":1,`, 1)), "unknown field"},
		{"negative quantity", withValue(usage, strings.Replace(string(usage.Value), `"quantity":1099511627776`, `"quantity":-5`, 1)), "quantity"},
		{"another tenant", withKey(mutate(usage, "ce_partitionkey", ""), "ten_other"), "differs from the record key"},
		{"forged id", mutate(usage, "ce_id", "3f1c1b9e-5a43-4a8e-9d1f-4f1a6f0c2b7d"), "stable ID"},
		{"site without domain", withValue(site, strings.Replace(string(site.Value), `"domain":"xn--mnchen-3ya.de",`, ``, 1)), "domain is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env, err := events.Parse(tc.msg)
			if err == nil {
				switch env.Type {
				case events.TypeUsageRecorded:
					_, err = events.DecodeUsage(env)
				default:
					_, err = events.DecodeSite(env)
				}
			}
			if !errors.Is(err, events.ErrMalformed) {
				t.Fatalf("error %v, want ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestUsageEvent(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	good := events.UsageEvent{TenantID: "ten_a", Metric: "bandwidth_bytes", Quantity: 3, Unit: "byte",
		PeriodStart: start, PeriodEnd: start.Add(time.Hour), OccurredAt: start.Add(time.Hour)}
	for _, tc := range []struct {
		name   string
		change func(*events.UsageEvent)
		want   string
	}{
		{"valid", func(*events.UsageEvent) {}, ""},
		{"no tenant", func(e *events.UsageEvent) { e.TenantID = "" }, "tenant_id"},
		{"bad metric", func(e *events.UsageEvent) { e.Metric = "Bandwidth" }, "metric"},
		{"no unit", func(e *events.UsageEvent) { e.Unit = "" }, "unit"},
		{"negative", func(e *events.UsageEvent) { e.Quantity = -1 }, "quantity"},
		{"empty period", func(e *events.UsageEvent) { e.PeriodEnd = e.PeriodStart }, "period_end"},
		{"no start", func(e *events.UsageEvent) { e.PeriodStart = time.Time{} }, "period_start"},
		{"no occurred_at", func(e *events.UsageEvent) { e.OccurredAt = time.Time{} }, "occurred_at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := good
			tc.change(&e)
			_, err := events.UsageOutbox(e)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("UsageOutbox: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("UsageOutbox error %v, want one about %s", err, tc.want)
			}
		})
	}

	// The ID is a function of tenant, metric and period start only, whatever the
	// time zone the start is expressed in or the quantity.
	a, _ := events.UsageOutbox(good)
	b := good
	b.Quantity, b.OccurredAt = 99, b.OccurredAt.Add(time.Hour)
	b.PeriodStart = b.PeriodStart.In(time.FixedZone("CET", 3600))
	rb, _ := events.UsageOutbox(b)
	if a.EventID != rb.EventID || a.EventID != events.UsageID("ten_a", "bandwidth_bytes", start) {
		t.Errorf("usage IDs differ for the same tenant, metric and period: %s, %s", a.EventID, rb.EventID)
	}
	for _, other := range []string{
		events.UsageID("ten_b", "bandwidth_bytes", start),
		events.UsageID("ten_a", "storage_bytes", start),
		events.UsageID("ten_a", "bandwidth_bytes", start.Add(time.Hour)),
	} {
		if other == a.EventID {
			t.Errorf("different usage has the same ID %s", other)
		}
	}
}

func TestTopicNames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		prefix string
		ok     bool
	}{
		{"chom", true}, {"acme-prod.chom_1", true}, {"", true},
		{"chom/prod", false}, {"chôm", false}, {".", false}, {strings.Repeat("a", 201), false},
	} {
		if err := events.ValidTopicPrefix(tc.prefix); (err == nil) != tc.ok {
			t.Errorf("ValidTopicPrefix(%q) = %v, want ok=%v", tc.prefix, err, tc.ok)
		}
	}
	if got := events.FullTopic("chom", events.TopicSites); got != "chom.sites.v1" {
		t.Errorf("FullTopic = %q", got)
	}
	if got := events.Topics(); !cmp.Equal(got, []string{"sites.v1", "usage.v1", "backups.v1", "vps.v1"}) {
		t.Errorf("Topics() = %v", got)
	}
}

// The relay's partitioner must put a key where the Java client (and librdkafka's
// murmur2) would, so producers in other languages keep a tenant on one partition.
// franz-go's sticky-key partitioner is a faithful port of the Java one.
func TestPartitionerMatchesTheJavaClient(t *testing.T) {
	t.Parallel()
	java := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	for _, n := range []int{1, 3, 6, 12, 50} {
		parts := make([]int, n)
		for i := range parts {
			parts[i] = i
		}
		for i := range 500 {
			key := fmt.Sprintf("ten_%032x", i*7919)
			if i%5 == 0 {
				key = models.NewID(models.PrefixTenant)
			}
			got := kafka.Murmur2Balancer{}.Balance(kafka.Message{Key: []byte(key)}, parts...)
			want := java.Partition(&kgo.Record{Key: []byte(key)}, n)
			if got != want {
				t.Fatalf("key %q over %d partitions: kafka-go %d, Java %d", key, n, got, want)
			}
		}
	}
}
