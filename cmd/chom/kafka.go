package main

import (
	"fmt"
	"net"
	"os"

	"github.com/twmb/franz-go/pkg/kfake"
)

// embeddedKafka is the in-process Kafka-protocol broker of `chom dev` (franz-go's
// kfake): one broker, any Kafka client can talk to it, topics and records kept
// under dir across restarts.
type embeddedKafka struct {
	cluster *kfake.Cluster
	addr    string
}

// startEmbeddedKafka serves a one-broker kfake cluster on listen (host:port; port
// 0 picks a free one), persisting its data under dir.
func startEmbeddedKafka(listen, dir string) (*embeddedKafka, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded kafka: %w", err)
	}
	// Bind first, so a busy address is a clear error before anything else starts.
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("embedded kafka: listen %s: %w", listen, err)
	}
	used := false
	cluster, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.ClusterID("chom-dev"),
		kfake.DataDir(dir),
		kfake.ListenFn(func(string, string) (net.Listener, error) {
			if used {
				return nil, fmt.Errorf("embedded kafka: one broker only")
			}
			used = true
			return ln, nil
		}),
	)
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("embedded kafka: %w", err)
	}
	return &embeddedKafka{cluster: cluster, addr: ln.Addr().String()}, nil
}

// Addr is the broker's host:port, as clients should dial it.
func (k *embeddedKafka) Addr() string { return k.addr }

// Close stops the broker, flushing its data to disk.
func (k *embeddedKafka) Close() { k.cluster.Close() }
