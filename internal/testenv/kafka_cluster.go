package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// KafkaCluster is an Apache Kafka cluster of one test's own, started by
// scripts/kafka.sh start-cluster: N nodes on loopback, each a broker and a
// KRaft controller (combined mode, every node a voter), Kafka's internal topics
// with 3 replicas and min ISR 2. The test can kill and restart single nodes.
// Nodes are numbered from 1; node K's node.id is K.
type KafkaCluster struct {
	tb       testing.TB
	launcher string
	dir      string
	addrs    []string
	// Started is how long the cluster took to start (format and start of every
	// node, in parallel).
	Started time.Duration
}

// StartKafkaCluster starts a cluster of n nodes (about 20s on two busy cores,
// up to 512 MB and about 350 MB resident per node) and kills it on cleanup. It
// skips or fails the test like [StartKafkaServer] when CHOM_TEST_KAFKA_LAUNCHER
// is unset, and fails it when the cluster does not start.
func StartKafkaCluster(tb testing.TB, n int) *KafkaCluster {
	tb.Helper()
	launcher := serverURL(tb, EnvKafkaLauncher)
	dir, err := os.MkdirTemp("", "chom-kafka-cluster-")
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	c := &KafkaCluster{tb: tb, launcher: launcher, dir: dir}
	tb.Cleanup(func() {
		// Killed, not stopped: the data goes anyway, and three controlled
		// shutdowns that wait on each other cost seconds of CI time.
		for node := 1; node <= len(c.addrs); node++ {
			c.signal(node, "kill")
		}
		if tb.Failed() {
			c.dumpLogs()
		}
		_ = os.RemoveAll(dir)
	})
	began := time.Now()
	ctx, cancel := context.WithTimeout(tb.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", launcher, "start-cluster", dir, strconv.Itoa(n))
	// The port search starts at a random place, so parallel test binaries do not
	// race for the same ports.
	cmd.Env = append(os.Environ(), "CHOM_TEST_KAFKA_PORT="+strconv.Itoa(20000+int(randomUint16(tb)%20000)))
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		tb.Fatalf("testenv: start kafka cluster in %s: %v\n%s", dir, err, stderr)
	}
	c.addrs = splitList(strings.TrimSpace(string(out)))
	if len(c.addrs) != n {
		tb.Fatalf("testenv: start kafka cluster: %d addresses (%q), want %d", len(c.addrs), out, n)
	}
	if err := c.WaitBrokers(ctx, n); err != nil {
		tb.Fatalf("testenv: kafka cluster %s: %v", strings.Join(c.addrs, ","), err)
	}
	c.Started = time.Since(began)
	return c
}

// Brokers returns every node's address, node 1 first: the bootstrap list.
func (c *KafkaCluster) Brokers() []string { return append([]string(nil), c.addrs...) }

// Addr returns node's address.
func (c *KafkaCluster) Addr(node int) string { return c.addrs[node-1] }

// Kill kills node (SIGKILL), as a crash would, and returns once it has exited.
func (c *KafkaCluster) Kill(node int) { c.signal(node, "kill") }

// Start starts node again, with its data and ports, and returns once it serves
// (it has caught up with the cluster's metadata; its partitions may still be
// catching up: see [KafkaCluster.WaitInSync]).
func (c *KafkaCluster) Start(node int) {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(c.tb.Context(), 3*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "bash", c.launcher, "start", c.nodeDir(node)).CombinedOutput(); err != nil {
		c.tb.Fatalf("testenv: start kafka node %d: %v\n%s", node, err, out)
	}
}

func (c *KafkaCluster) nodeDir(node int) string {
	return filepath.Join(c.dir, "node"+strconv.Itoa(node))
}

func (c *KafkaCluster) signal(node int, how string) {
	c.tb.Helper()
	// Not the test's context: this runs during cleanup too.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "bash", c.launcher, how, c.nodeDir(node)).CombinedOutput(); err != nil {
		c.tb.Errorf("testenv: %s kafka node %d: %v\n%s", how, node, err, out)
	}
}

// Log returns node's server log, for a failing test to print.
func (c *KafkaCluster) Log(node int) string {
	b, _ := os.ReadFile(filepath.Join(c.nodeDir(node), "server.log"))
	return string(b)
}

// dumpLogs prints the last lines of every node's log into the test's output.
func (c *KafkaCluster) dumpLogs() {
	for node := 1; node <= len(c.addrs); node++ {
		lines := strings.Split(strings.TrimSpace(c.Log(node)), "\n")
		c.tb.Logf("testenv: last lines of kafka node %d's log:\n%s", node, strings.Join(lines[max(0, len(lines)-40):], "\n"))
	}
}

// WaitBrokers waits until the cluster's metadata lists n live brokers.
func (c *KafkaCluster) WaitBrokers(ctx context.Context, n int) error {
	client := &kafka.Client{Addr: kafka.TCP(c.addrs...), Timeout: 5 * time.Second}
	var last error
	for {
		md, err := client.Metadata(ctx, &kafka.MetadataRequest{})
		if err == nil && len(md.Brokers) >= n {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("%d of %d brokers registered", len(md.Brokers), n)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d brokers: %w", n, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// ActiveController returns the node ID of the KRaft quorum's leader (the
// active controller), asked of the brokers with DescribeQuorum (kafka-go has no
// such request; franz-go's protocol package does).
func (c *KafkaCluster) ActiveController(ctx context.Context) (int, error) {
	cl, err := c.franz()
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	req := kmsg.NewPtrDescribeQuorumRequest()
	topic := kmsg.NewDescribeQuorumRequestTopic()
	topic.Topic = "__cluster_metadata"
	topic.Partitions = []kmsg.DescribeQuorumRequestTopicPartition{kmsg.NewDescribeQuorumRequestTopicPartition()}
	req.Topics = append(req.Topics, topic)
	res, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, fmt.Errorf("describe quorum: %w", err)
	}
	if err := kerrOf(res.ErrorCode); err != nil {
		return 0, fmt.Errorf("describe quorum: %w", err)
	}
	for _, t := range res.Topics {
		for _, p := range t.Partitions {
			if err := kerrOf(p.ErrorCode); err != nil {
				return 0, fmt.Errorf("describe quorum: %w", err)
			}
			if p.LeaderID >= 0 {
				return int(p.LeaderID), nil
			}
		}
	}
	return 0, errors.New("describe quorum: no leader")
}

func kerrOf(code int16) error {
	if code == 0 {
		return nil
	}
	return kafka.Error(code)
}

// PartitionState is one partition as the cluster's metadata shows it.
type PartitionState struct {
	Topic     string
	Partition int
	// Leader is the leader's node ID, -1 when it has none.
	Leader int
	// Replicas and ISR are node IDs.
	Replicas, ISR []int
}

// Partitions returns the state of every partition of topics, sorted by topic
// and partition. (Through franz-go's protocol package: kafka-go's metadata
// maps the ID of a broker that is down to node 0.)
func (c *KafkaCluster) Partitions(ctx context.Context, topics ...string) ([]PartitionState, error) {
	cl, err := c.franz()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	req := kmsg.NewPtrMetadataRequest()
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	res, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", strings.Join(topics, ", "), err)
	}
	ints := func(ids []int32) []int {
		out := make([]int, 0, len(ids))
		for _, id := range ids {
			out = append(out, int(id))
		}
		sort.Ints(out)
		return out
	}
	var out []PartitionState
	for _, t := range res.Topics {
		name := ""
		if t.Topic != nil {
			name = *t.Topic
		}
		if err := kerrOf(t.ErrorCode); err != nil {
			return nil, fmt.Errorf("metadata of %s: %w", name, err)
		}
		for _, p := range t.Partitions {
			out = append(out, PartitionState{Topic: name, Partition: int(p.Partition), Leader: int(p.Leader),
				Replicas: ints(p.Replicas), ISR: ints(p.ISR)})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Partition < out[j].Partition
	})
	return out, nil
}

// franz returns a franz-go client of the cluster, for the requests kafka-go
// lacks or gets wrong here.
func (c *KafkaCluster) franz() (*kgo.Client, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.addrs...), kgo.RetryTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("testenv: franz-go client: %w", err)
	}
	return cl, nil
}

// WaitInSync waits until every partition of topics has all its replicas in its
// ISR, and returns how long that took: after a node's restart, the time its
// replicas take to catch up with their leaders.
func (c *KafkaCluster) WaitInSync(ctx context.Context, topics ...string) (time.Duration, error) {
	began := time.Now()
	var last error
	for {
		parts, err := c.Partitions(ctx, topics...)
		if err == nil {
			last = nil
			for _, p := range parts {
				if len(p.ISR) != len(p.Replicas) {
					last = fmt.Errorf("%s/%d: ISR %v of replicas %v", p.Topic, p.Partition, p.ISR, p.Replicas)
					break
				}
			}
			if last == nil {
				return time.Since(began), nil
			}
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return time.Since(began), fmt.Errorf("replicas not in sync: %w", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
