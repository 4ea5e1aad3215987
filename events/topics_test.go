package events_test

import (
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/chomhq/chom/events"
)

func TestDefaultMinInSyncReplicas(t *testing.T) {
	t.Parallel()
	for rf, want := range map[int]int{1: 1, 2: 1, 3: 2, 5: 2} {
		if got := events.DefaultMinInSyncReplicas(rf); got != want {
			t.Errorf("DefaultMinInSyncReplicas(%d) = %d, want %d", rf, got, want)
		}
	}
}

func TestTopicSpecValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		spec events.TopicSpec
		want string // "" for valid
	}{
		{events.TopicSpec{Partitions: 6, ReplicationFactor: 3}, ""},
		{events.TopicSpec{Partitions: 6, ReplicationFactor: 3, MinInSyncReplicas: 3}, ""},
		{events.TopicSpec{Partitions: 6, ReplicationFactor: 3, MinInSyncReplicas: 4}, "MinInSyncReplicas (4) must be between 1 and ReplicationFactor (3)"},
		{events.TopicSpec{Partitions: 6, ReplicationFactor: 1, MinInSyncReplicas: -1}, "MinInSyncReplicas (-1)"},
		{events.TopicSpec{}, "Partitions must be positive"},
	} {
		err := tc.spec.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: Validate() = %v, want %q", tc.spec, err, tc.want)
		}
	}
}

// EnsureTopics creates topics with the spec's min.insync.replicas, its
// default (2 of 3 replicas) when unset: what an acks=all write then needs.
func TestEnsureTopicsSetsMinInSyncReplicas(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	admin := &kafka.Client{Addr: kafka.TCP(c.ListenAddrs()...)}
	for topic, spec := range map[string]events.TopicSpec{
		"default.v1":  {Partitions: 2, ReplicationFactor: 3},
		"explicit.v1": {Partitions: 2, ReplicationFactor: 3, MinInSyncReplicas: 3},
		"single.v1":   {Partitions: 1, ReplicationFactor: 1},
	} {
		if err := events.EnsureTopics(t.Context(), admin, spec, topic); err != nil {
			t.Fatalf("EnsureTopics %s: %v", topic, err)
		}
	}
	res, err := admin.DescribeConfigs(t.Context(), &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: "default.v1", ConfigNames: []string{"min.insync.replicas"}},
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: "explicit.v1", ConfigNames: []string{"min.insync.replicas"}},
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: "single.v1", ConfigNames: []string{"min.insync.replicas"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range res.Resources {
		for _, e := range r.ConfigEntries {
			if e.ConfigName == "min.insync.replicas" {
				got[r.ResourceName] = e.ConfigValue
			}
		}
	}
	want := map[string]string{"default.v1": "2", "explicit.v1": "3", "single.v1": "1"}
	for topic, v := range want {
		if got[topic] != v {
			t.Errorf("%s: min.insync.replicas %q, want %q", topic, got[topic], v)
		}
	}
}
