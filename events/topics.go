package events

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// TopicSpec is how CHOM creates a missing topic.
type TopicSpec struct {
	// Partitions is the partition count. It never changes once a topic exists:
	// a tenant's key would move to another partition and its order would break.
	Partitions int
	// ReplicationFactor is the number of replicas of each partition.
	ReplicationFactor int
	// MinInSyncReplicas is the topic's min.insync.replicas: how many replicas,
	// the leader included, must hold a record before a produce with acks=all
	// (the relay's) succeeds; with fewer in sync the partition refuses writes
	// (NOT_ENOUGH_REPLICAS) rather than keep a record on too few brokers. Zero
	// means DefaultMinInSyncReplicas(ReplicationFactor).
	MinInSyncReplicas int
}

// DefaultMinInSyncReplicas is the min.insync.replicas CHOM gives a topic of
// replicationFactor replicas when none is configured: 2 from 3 replicas up, so
// an acknowledged record is on two brokers and survives the loss of any one of
// them while the topic still takes writes with one broker down; 1 below 3,
// where 2 would stop all writes whenever one broker of two is away.
func DefaultMinInSyncReplicas(replicationFactor int) int {
	if replicationFactor >= 3 {
		return 2
	}
	return 1
}

// minInSync is s.MinInSyncReplicas, or its default when zero.
func (s TopicSpec) minInSync() int {
	if s.MinInSyncReplicas == 0 {
		return DefaultMinInSyncReplicas(s.ReplicationFactor)
	}
	return s.MinInSyncReplicas
}

// Validate reports every invalid field at once.
func (s TopicSpec) Validate() error {
	var errs []error
	if s.Partitions <= 0 {
		errs = append(errs, errors.New("topic spec: Partitions must be positive"))
	}
	if s.ReplicationFactor <= 0 {
		errs = append(errs, errors.New("topic spec: ReplicationFactor must be positive"))
	}
	if s.MinInSyncReplicas < 0 || (s.ReplicationFactor > 0 && s.MinInSyncReplicas > s.ReplicationFactor) {
		errs = append(errs, fmt.Errorf("topic spec: MinInSyncReplicas (%d) must be between 1 and ReplicationFactor (%d): more could never be in sync, and every write would fail",
			s.MinInSyncReplicas, s.ReplicationFactor))
	}
	return errors.Join(errs...)
}

// EnsureTopics creates each of topics (full names) that does not exist yet with
// spec (partitions, replicas and min.insync.replicas); existing topics are left
// as they are, whatever their settings. It returns once client's
// transport knows a leader for every partition of every topic and each leader
// serves its partition, so a writer sharing that transport can write to all of
// them right away. A topic the broker has just created may list partitions
// that have no leader yet, or whose leader has not loaded them yet (it answers
// NOT_LEADER_OR_FOLLOWER for a while on a busy machine); a write to those fails
// while the rest of its call succeeds.
func EnsureTopics(ctx context.Context, client *kafka.Client, spec TopicSpec, topics ...string) error {
	if len(topics) == 0 {
		return nil
	}
	req := &kafka.CreateTopicsRequest{}
	for _, t := range topics {
		req.Topics = append(req.Topics, kafka.TopicConfig{
			Topic: t, NumPartitions: spec.Partitions, ReplicationFactor: spec.ReplicationFactor,
			ConfigEntries: []kafka.ConfigEntry{{ConfigName: "min.insync.replicas", ConfigValue: strconv.Itoa(spec.minInSync())}},
		})
	}
	// A metadata request first: when the transport cannot reach, authenticate
	// to or verify the brokers, this is what reports why (CreateTopics then
	// reports only that no controller is known).
	if _, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics}); err != nil {
		return fmt.Errorf("create topics %s: brokers %s: %w", strings.Join(topics, ", "), client.Addr, err)
	}
	res, err := client.CreateTopics(ctx, req)
	if err != nil {
		return fmt.Errorf("create topics %s: %w", strings.Join(topics, ", "), err)
	}
	var errs []error
	for t, terr := range res.Errors {
		if terr != nil && !errors.Is(terr, kafka.TopicAlreadyExists) {
			errs = append(errs, fmt.Errorf("create topic %s: %w", t, terr))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return waitLeaders(ctx, client, topics)
}

// leaderWait bounds how long EnsureTopics waits for partition leaders. The
// transport refreshes its metadata at least once per MetadataTTL, so this
// covers several refreshes.
const leaderWait = 30 * time.Second

// waitLeaders polls client's metadata until every partition of topics has a
// leader that serves it, ctx ends or leaderWait passes; the error names what is
// still missing.
func waitLeaders(ctx context.Context, client *kafka.Client, topics []string) error {
	ctx, cancel := context.WithTimeout(ctx, leaderWait)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		missing, err := leaderless(ctx, client, topics)
		if err == nil && len(missing) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("no leader yet for %s", strings.Join(missing, ", "))
			}
			return fmt.Errorf("wait for topic leaders: %w (%w)", err, ctx.Err())
		case <-tick.C:
		}
	}
}

// leaderless returns the topics (or topic/partition) of topics that client's
// metadata does not yet show with a leader for every partition.
func leaderless(ctx context.Context, client *kafka.Client, topics []string) ([]string, error) {
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("topic metadata: %w", err)
	}
	seen := map[string]bool{}
	var missing []string
	offsets := map[string][]kafka.OffsetRequest{}
	for _, t := range md.Topics {
		if t.Error != nil || len(t.Partitions) == 0 {
			continue
		}
		seen[t.Name] = true
		for _, p := range t.Partitions {
			offsets[t.Name] = append(offsets[t.Name], kafka.FirstOffsetOf(p.ID))
			// An unknown leader ID maps to the zero Broker, which has no host.
			if p.Error != nil || p.Leader.Host == "" {
				missing = append(missing, fmt.Sprintf("%s/%d", t.Name, p.ID))
			}
		}
	}
	for _, t := range topics {
		if !seen[t] {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return missing, nil
	}
	return unserved(ctx, client, offsets)
}

// unserved asks each partition's leader for the partition's first offset and
// returns the partitions (topic/partition) whose leader does not serve them yet.
func unserved(ctx context.Context, client *kafka.Client, partitions map[string][]kafka.OffsetRequest) ([]string, error) {
	res, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: partitions})
	if err != nil {
		return nil, fmt.Errorf("list offsets: %w", err)
	}
	var missing []string
	for t, reqs := range partitions {
		answered := map[int]bool{}
		for _, p := range res.Topics[t] {
			if p.Error == nil {
				answered[p.Partition] = true
			}
		}
		for _, r := range reqs {
			if !answered[r.Partition] {
				missing = append(missing, fmt.Sprintf("%s/%d", t, r.Partition))
			}
		}
	}
	return missing, nil
}
