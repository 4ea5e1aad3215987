package queue

import (
	"context"
	"errors"
	"fmt"
	"net"
	neturl "net/url"
	"strings"

	"github.com/redis/go-redis/v9"
)

// ClusterOptions are the connection options of a Redis Cluster, as
// RedisOptions parses them from a redis-cluster:// URL. They implement
// asynq.RedisConnOpt, so the asynq client, server, inspector, scheduler and
// asynqmon all build the same go-redis cluster client from them: it learns
// the slot map from any of the seed nodes, sends each command to the master
// of its key's slot, follows MOVED and ASK redirections, and reloads the map
// when a node fails, so a replica promoted by the cluster is found by itself.
//
// CHOM parses the URL itself because asynq.ParseRedisURI (v0.26) has no
// cluster form, and asynq.RedisClusterClientOpt has no pool size.
type ClusterOptions struct {
	opt redis.ClusterOptions
}

// Addrs are the seed nodes' host:port addresses, in the URL's order.
func (o ClusterOptions) Addrs() []string { return append([]string(nil), o.opt.Addrs...) }

// withPoolSize returns o with n connections per node.
func (o ClusterOptions) withPoolSize(n int) ClusterOptions {
	o.opt.PoolSize = n
	return o
}

// MakeRedisClient returns a new *redis.ClusterClient that reloads its slot
// map whenever it fails to connect to a node; it implements
// asynq.RedisConnOpt.
//
// go-redis reloads the map on a MOVED or ASK answer and otherwise once a
// minute (ClusterStateReloadInterval). A master that dies sends neither: its
// slots' commands fail to dial it, and without the reload the client would
// go on dialling it for up to a minute after its replica had taken over.
func (o ClusterOptions) MakeRedisClient() any {
	opt := o.opt
	opt.Addrs = append([]string(nil), o.opt.Addrs...)
	cc := redis.NewClusterClient(&opt)
	cc.OnNewNode(func(node *redis.Client) { node.AddHook(reloadOnDialError{cc}) })
	return cc
}

// reloadOnDialError is a hook of each node's client that asks the cluster
// client for a new slot map when a connection to the node cannot be made.
// Reloads are coalesced by go-redis (one at a time, 200ms apart).
type reloadOnDialError struct{ cc *redis.ClusterClient }

func (h reloadOnDialError) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err != nil {
			h.cc.ReloadState(ctx)
		}
		return conn, err
	}
}

func (reloadOnDialError) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (reloadOnDialError) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// parseClusterURL parses
//
//	redis-cluster://[[user]:password@]host1:port1[,hostN:portN…][/0]
//
// The hosts are seeds: any reachable one gives the client the whole slot map,
// so three (one per master, say) are plenty. The user information is every
// node's (requirepass or an ACL user). A port left out is 6379. A cluster
// has database 0 only: another database number is an error, as is any query
// parameter. Its errors never quote the URL or a password.
func parseClusterURL(raw string) (ClusterOptions, error) {
	hosts, rest, err := cutHosts(raw)
	if err != nil {
		return ClusterOptions{}, err
	}
	u, err := neturl.Parse(rest)
	if err != nil {
		return ClusterOptions{}, err
	}
	var o ClusterOptions
	if u.User != nil {
		o.opt.Username = u.User.Username()
		o.opt.Password, _ = u.User.Password()
	}
	addrs, errs := hostList(hosts, "6379", "cluster node")
	o.opt.Addrs = addrs
	if db := strings.Trim(u.Path, "/"); db != "" && db != "0" {
		errs = append(errs, fmt.Errorf("database %q: a Redis Cluster has database 0 only", db))
	}
	for k := range u.Query() {
		errs = append(errs, fmt.Errorf("unknown parameter %q", k))
	}
	if err := errors.Join(errs...); err != nil {
		return ClusterOptions{}, err
	}
	return o, nil
}

// redactClusterURL is url for an error message with its password and its
// query (which has no place in the URL, but may be a misplaced password)
// hidden.
func redactClusterURL(raw string) string {
	hosts, rest, err := cutHosts(raw)
	if err != nil {
		return "<unparseable URL>"
	}
	u, err := neturl.Parse(rest)
	if err != nil {
		return "<unparseable URL>"
	}
	if u.RawQuery != "" {
		u.RawQuery = "xxxxx"
	}
	return strings.Replace(u.Redacted(), hostsPlaceholder, hosts, 1)
}
