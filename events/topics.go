package events

import (
	"context"
	"errors"
	"fmt"
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
	return errors.Join(errs...)
}

// EnsureTopics creates each of topics (full names) that does not exist yet with
// spec; existing topics are left as they are. client's transport learns of the
// new topics at once, so a writer sharing it can write to them right away.
func EnsureTopics(ctx context.Context, client *kafka.Client, spec TopicSpec, topics ...string) error {
	if len(topics) == 0 {
		return nil
	}
	req := &kafka.CreateTopicsRequest{}
	for _, t := range topics {
		req.Topics = append(req.Topics, kafka.TopicConfig{
			Topic: t, NumPartitions: spec.Partitions, ReplicationFactor: spec.ReplicationFactor,
		})
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
	return errors.Join(errs...)
}

// NewTransport returns the Kafka transport of one relay or consumer, to share
// between its writer and its admin client so that topics it creates are known to
// both at once. timeout bounds each dial.
func NewTransport(clientID string, timeout time.Duration) *kafka.Transport {
	return &kafka.Transport{
		ClientID:    clientID,
		DialTimeout: timeout,
		IdleTimeout: 30 * time.Second,
		MetadataTTL: 5 * time.Second,
	}
}
