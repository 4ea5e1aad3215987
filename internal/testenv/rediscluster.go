package testenv

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisClusterConfig configures a Redis Cluster of three masters and three
// replicas.
type RedisClusterConfig struct {
	// Password is every node's requirepass and masterauth; empty: none.
	Password string
	// NodeTimeout is cluster-node-timeout: how long a master may stay silent
	// before the others mark it failed and its replica takes over. Default
	// 1s (production: see docs/operations.md, Redis Cluster).
	NodeTimeout time.Duration
	// RequireFullCoverage sets cluster-require-full-coverage yes: the whole
	// cluster refuses commands while any slot has no master. Default no, as
	// docs/operations.md advises.
	RequireFullCoverage bool
}

// RedisCluster is a Redis Cluster private to one test: six redis-server
// processes with cluster-enabled yes on loopback ports (three masters, each
// with one replica), with AOF (appendfsync always), maxmemory-policy
// noeviction and cluster-require-full-coverage no (unless configured), as
// docs/operations.md advises, in temporary directories removed when the test ends.
type RedisCluster struct {
	// Nodes are the six servers as started; which are masters is decided by
	// redis-cli --cluster create and changes with each failover (Master).
	Nodes []*RedisServer
	// URL is the redis-cluster:// URL CHOM_REDIS_URL takes, with every
	// node as a seed and the password.
	URL string

	cfg RedisClusterConfig
}

// StartRedisCluster starts six nodes, joins them with redis-cli --cluster
// create --cluster-replicas 1 and returns once every node reports
// cluster_state:ok, knows the five others and a replica beside each master,
// and every replica is in sync. It
// skips the test when redis-server or redis-cli is not installed (fails it
// when CI is set) and fails it when a part does not start.
func StartRedisCluster(tb testing.TB, cfg RedisClusterConfig) *RedisCluster {
	tb.Helper()
	if cfg.NodeTimeout <= 0 {
		cfg.NodeTimeout = time.Second
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		missingBinary(tb, "redis-cli", "redis-tools (apt-get install redis-tools)")
	}
	c := &RedisCluster{cfg: cfg}
	coverage := "no"
	if cfg.RequireFullCoverage {
		coverage = "yes"
	}
	args := []string{
		"--cluster-node-timeout", strconv.FormatInt(cfg.NodeTimeout.Milliseconds(), 10),
		"--cluster-require-full-coverage", coverage,
		"--maxmemory-policy", "noeviction",
		// A replica's first sync starts at once, not after the default 5s
		// wait for more replicas to share the transfer.
		"--repl-diskless-sync-delay", "0",
		// Redis 7 leaves a replica out of CLUSTER SLOTS until its replication
		// offset is above 0, which on an idle master takes its first ping to
		// the replicas: every 10s by default, every second here.
		"--repl-ping-replica-period", "1",
	}
	if cfg.Password != "" {
		args = append(args, "--masterauth", cfg.Password)
	}
	addrs := make([]string, 0, 6)
	for range 6 {
		n := StartRedisServer(tb, RedisServerConfig{AppendOnly: true, Password: cfg.Password, ClusterBus: true, Args: args})
		c.Nodes = append(c.Nodes, n)
		addrs = append(addrs, n.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), serverStartTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cli, append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "1", "--cluster-yes")...)
	// REDISCLI_AUTH rather than -a: the password stays off the command line.
	cmd.Env = append(os.Environ(), "REDISCLI_AUTH="+cfg.Password)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("testenv: redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, n := range c.Nodes {
		rc := c.nodeClient(n.Addr)
		err := waitUntil(ctx, func() (bool, error) {
			info, err := rc.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:6") {
				return false, err
			}
			repl, err := rc.Info(ctx, "replication").Result()
			if err != nil || !strings.Contains(repl, "role:master") && !strings.Contains(repl, "master_link_status:up") {
				return false, err
			}
			// Every node sees a replica beside each master.
			slots, err := rc.ClusterSlots(ctx).Result()
			if err != nil || len(slots) == 0 {
				return false, err
			}
			for _, s := range slots {
				if len(s.Nodes) != 2 {
					return false, nil
				}
			}
			return true, nil
		})
		_ = rc.Close()
		if err != nil {
			tb.Fatalf("testenv: cluster node %s not ready: %v\n%s", n.Addr, err, Tail(filepath.Join(n.Dir, "redis.log"), 20))
		}
	}
	c.URL = (&url.URL{Scheme: "redis-cluster", User: url.UserPassword("", cfg.Password), Host: strings.Join(addrs, ",")}).String()
	if cfg.Password == "" {
		c.URL = strings.Replace(c.URL, "redis-cluster://:@", "redis-cluster://", 1)
	}
	return c
}

// Client returns a cluster client of c (with the nodes' password), closed
// when the test ends.
func (c *RedisCluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, Password: c.cfg.Password, DialTimeout: time.Second})
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// NodeClient returns a client of the single node at addr, closed when the
// test ends; it does not follow redirections.
func (c *RedisCluster) NodeClient(tb testing.TB, addr string) *redis.Client {
	tb.Helper()
	rc := c.nodeClient(addr)
	tb.Cleanup(func() { _ = rc.Close() })
	return rc
}

func (c *RedisCluster) nodeClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, Password: c.cfg.Password, DialTimeout: time.Second, MaxRetries: -1})
}

// Owners returns the master and the replicas serving key's hash slot, as the
// first node that answers sees them.
func (c *RedisCluster) Owners(ctx context.Context, key string) (master *RedisServer, replicas []*RedisServer, err error) {
	var last error
	for _, n := range c.Nodes {
		rc := c.nodeClient(n.Addr)
		master, replicas, err = c.owners(ctx, rc, key)
		_ = rc.Close()
		if err == nil {
			return master, replicas, nil
		}
		last = err
	}
	return nil, nil, fmt.Errorf("no cluster node named the owners of %q: %w", key, last)
}

func (c *RedisCluster) owners(ctx context.Context, rc *redis.Client, key string) (*RedisServer, []*RedisServer, error) {
	slot, err := rc.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		return nil, nil, err
	}
	slots, err := rc.ClusterSlots(ctx).Result()
	if err != nil {
		return nil, nil, err
	}
	for _, s := range slots {
		if int64(s.Start) > slot || int64(s.End) < slot || len(s.Nodes) == 0 {
			continue
		}
		var master *RedisServer
		var replicas []*RedisServer
		for i, sn := range s.Nodes {
			n := c.node(sn.Addr)
			if n == nil {
				return nil, nil, fmt.Errorf("slot %d served by %s, not a node of this cluster", slot, sn.Addr)
			}
			if i == 0 {
				master = n
			} else {
				replicas = append(replicas, n)
			}
		}
		return master, replicas, nil
	}
	return nil, nil, fmt.Errorf("slot %d of %q is not served", slot, key)
}

func (c *RedisCluster) node(addr string) *RedisServer {
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// Role returns the replication role ("master" or "slave") the node at addr
// reports itself.
func (c *RedisCluster) Role(ctx context.Context, addr string) (string, error) {
	rc := c.nodeClient(addr)
	defer rc.Close()
	return replicationRole(ctx, rc, addr)
}
