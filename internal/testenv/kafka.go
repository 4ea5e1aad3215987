package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// Environment variables of the Kafka kit.
const (
	// EnvKafkaBrokers is the comma-separated bootstrap address list of the test
	// Kafka broker.
	EnvKafkaBrokers = "CHOM_TEST_KAFKA_BROKERS"
	// EnvKafkaLauncher is the path of scripts/kafka.sh, which [KafkaServer] runs
	// to start a broker of the test's own.
	EnvKafkaLauncher = "CHOM_TEST_KAFKA_LAUNCHER"
)

// KafkaTopics is a share of the test Kafka broker for one test: the topics whose
// names start with Prefix + "." are its alone.
type KafkaTopics struct {
	// Brokers are the bootstrap addresses (host:port).
	Brokers []string
	// Prefix is a topic prefix no other test uses ("t" and 16 hex digits), to
	// give to the code under test as its topic prefix.
	Prefix string
}

// Kafka returns the broker of CHOM_TEST_KAFKA_BROKERS with a topic prefix of this
// test's own; the topics under it are deleted on cleanup. It skips or fails the
// test when the variable is unset (see the package documentation) and fails it
// when the broker does not answer within 60s.
func Kafka(tb testing.TB) KafkaTopics {
	tb.Helper()
	brokers := splitList(serverURL(tb, EnvKafkaBrokers))
	if err := waitKafka(tb.Context(), brokers, 60*time.Second); err != nil {
		tb.Fatalf("testenv: kafka %s: %v", strings.Join(brokers, ","), err)
	}
	k := KafkaTopics{Brokers: brokers, Prefix: "t" + randomHex(tb, 8)}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		if err := k.deleteTopics(ctx); err != nil {
			tb.Logf("testenv: delete topics %s.*: %v", k.Prefix, err)
		}
	})
	return k
}

// Topic returns the full name of a logical topic ("sites.v1") under Prefix.
func (k KafkaTopics) Topic(logical string) string { return k.Prefix + "." + logical }

func (k KafkaTopics) deleteTopics(ctx context.Context) error {
	c := &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: setupTimeout}
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return err
	}
	var mine []string
	for _, t := range md.Topics {
		if strings.HasPrefix(t.Name, k.Prefix+".") {
			mine = append(mine, t.Name)
		}
	}
	if len(mine) == 0 {
		return nil
	}
	_, err = c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: mine})
	return err
}

// readyBrokers remembers broker lists that answered, so each test binary waits
// for a broker once.
var readyBrokers sync.Map

// waitKafka waits until a broker of brokers answers a metadata request.
func waitKafka(ctx context.Context, brokers []string, within time.Duration) error {
	key := strings.Join(brokers, ",")
	if _, ok := readyBrokers.Load(key); ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 5 * time.Second}
	for {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{})
		if err == nil && len(md.Brokers) > 0 {
			readyBrokers.Store(key, true)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not answering: %v", err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Records returns every record currently on topic: each partition's records in
// offset order, partitions in ascending order. A missing topic has no records.
func Records(ctx context.Context, brokers []string, topic string) ([]kafka.Message, error) {
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	return records(ctx, c, kafka.DefaultDialer, topic)
}

// records is Records through client and dialer.
func records(ctx context.Context, c *kafka.Client, d *kafka.Dialer, topic string) ([]kafka.Message, error) {
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	if len(md.Topics) != 1 || errors.Is(md.Topics[0].Error, kafka.UnknownTopicOrPartition) {
		return nil, nil
	}
	if err := md.Topics[0].Error; err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	parts := md.Topics[0].Partitions
	sort.Slice(parts, func(i, j int) bool { return parts[i].ID < parts[j].ID })
	var out []kafka.Message
	for _, p := range parts {
		msgs, err := readPartition(ctx, d, net.JoinHostPort(p.Leader.Host, strconv.Itoa(p.Leader.Port)), topic, p.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, msgs...)
	}
	return out, nil
}

// readPartition reads a partition from its first to its last offset.
func readPartition(ctx context.Context, d *kafka.Dialer, leader, topic string, partition int) ([]kafka.Message, error) {
	conn, err := d.DialLeader(ctx, "tcp", leader, topic, partition)
	if err != nil {
		return nil, fmt.Errorf("dial leader of %s/%d: %w", topic, partition, err)
	}
	defer conn.Close()
	first, last, err := conn.ReadOffsets()
	if err != nil {
		return nil, fmt.Errorf("offsets of %s/%d: %w", topic, partition, err)
	}
	var out []kafka.Message
	for off := first; off < last; {
		if _, err := conn.Seek(off, kafka.SeekAbsolute); err != nil {
			return nil, fmt.Errorf("seek %s/%d to %d: %w", topic, partition, off, err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		batch := conn.ReadBatch(1, 16<<20)
		start := off
		for {
			m, err := batch.ReadMessage()
			if err != nil {
				break
			}
			if m.Offset >= off {
				out = append(out, m)
				off = m.Offset + 1
			}
		}
		if err := batch.Close(); err != nil {
			return nil, fmt.Errorf("read %s/%d at %d: %w", topic, partition, off, err)
		}
		if off == start {
			break // nothing readable up to last (control records only)
		}
	}
	return out, nil
}

// WaitRecords polls topic until it holds at least n records or timeout passes,
// and returns what it holds then (see [Records]). It fails the test on a read
// error, not on a timeout: the caller compares what it got.
func WaitRecords(tb testing.TB, brokers []string, topic string, n int, timeout time.Duration) []kafka.Message {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs, err := Records(tb.Context(), brokers, topic)
		if err != nil && tb.Context().Err() == nil && time.Now().After(deadline) {
			tb.Fatalf("testenv: read %s: %v", topic, err)
		}
		if len(msgs) >= n || time.Now().After(deadline) {
			return msgs
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// KafkaServer is an Apache Kafka broker of one test's own, started by
// scripts/kafka.sh, which the test can stop, kill and start again (same data,
// same port) to simulate an outage.
type KafkaServer struct {
	tb       testing.TB
	launcher string
	dir      string
	addr     string
}

// StartKafkaServer starts a broker of the test's own (about 5s, 300 MB) and stops
// it on cleanup. It skips or fails the test like [Kafka] when
// CHOM_TEST_KAFKA_LAUNCHER is unset, and fails it when the broker does not start.
func StartKafkaServer(tb testing.TB) *KafkaServer {
	tb.Helper()
	launcher := serverURL(tb, EnvKafkaLauncher)
	dir, err := os.MkdirTemp("", "chom-kafka-")
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	s := &KafkaServer{tb: tb, launcher: launcher, dir: dir}
	tb.Cleanup(func() {
		s.Stop()
		_ = os.RemoveAll(dir)
	})
	s.Start()
	return s
}

// Brokers returns the broker's address as a bootstrap list.
func (s *KafkaServer) Brokers() []string { return []string{s.addr} }

// Start starts the broker (again), on the same port and data, and waits until it
// serves.
func (s *KafkaServer) Start() {
	s.tb.Helper()
	ctx, cancel := context.WithTimeout(s.tb.Context(), 2*time.Minute)
	defer cancel()
	// The port search starts at a random place, so parallel test binaries do not
	// race for the same port.
	cmd := exec.CommandContext(ctx, "bash", s.launcher, "start", s.dir)
	cmd.Env = append(os.Environ(), "CHOM_TEST_KAFKA_PORT="+strconv.Itoa(20000+int(randomUint16(s.tb)%20000)))
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		s.tb.Fatalf("testenv: start kafka in %s: %v\n%s", s.dir, err, stderr)
	}
	s.addr = strings.TrimSpace(string(out))
	if err := waitKafka(ctx, s.Brokers(), time.Minute); err != nil {
		s.tb.Fatalf("testenv: kafka %s: %v", s.addr, err)
	}
}

// Stop stops the broker cleanly (SIGTERM) and waits for it to exit.
func (s *KafkaServer) Stop() { s.signal("stop") }

// Kill kills the broker (SIGKILL), as a crash would.
func (s *KafkaServer) Kill() { s.signal("kill") }

func (s *KafkaServer) signal(how string) {
	s.tb.Helper()
	// Not the test's context: Stop runs during cleanup, when it has ended.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "bash", s.launcher, how, s.dir).CombinedOutput(); err != nil {
		s.tb.Errorf("testenv: %s kafka in %s: %v\n%s", how, s.dir, err, out)
	}
}

// Log returns the broker's server log, for a failing test to print.
func (s *KafkaServer) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
	return string(b)
}

// Kcat returns the path of the kcat binary (Debian package kcat), a Kafka client
// written in C. It skips or fails the test like [Kafka] when kcat is missing.
func Kcat(tb testing.TB) string {
	tb.Helper()
	path, err := exec.LookPath("kcat")
	if err == nil {
		return path
	}
	if os.Getenv(EnvCI) != "" {
		tb.Fatalf("kcat not found and CI=%q: install it (apt-get install kcat) or run via scripts/test-services.sh", os.Getenv(EnvCI))
	}
	tb.Skip("kcat not found; apt-get install kcat, or run via scripts/test-services.sh")
	return ""
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func randomUint16(tb testing.TB) uint16 {
	h := randomHex(tb, 2)
	n, _ := strconv.ParseUint(h, 16, 16)
	return uint16(n)
}
