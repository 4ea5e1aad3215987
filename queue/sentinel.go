package queue

import (
	"errors"
	"fmt"
	"net"
	neturl "net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// SentinelOptions are the connection options of a Sentinel-managed Redis, as
// RedisOptions parses them from a redis-sentinel:// URL. They implement
// asynq.RedisConnOpt, so the asynq client, server, inspector, scheduler and
// asynqmon all build the same go-redis failover client from them: it asks
// the sentinels for the current master on every new connection and drops its
// connections when a sentinel announces +switch-master.
//
// CHOM parses the URL itself rather than with asynq.ParseRedisURI, whose
// sentinel form (v0.26) takes the URL's password for the sentinels, leaves the
// master's password and the database number unset, and has no room for
// both passwords.
type SentinelOptions struct {
	opt redis.FailoverOptions
}

// MasterName is the name the sentinels monitor the master under.
func (o SentinelOptions) MasterName() string { return o.opt.MasterName }

// SentinelAddrs are the sentinels' host:port addresses, in the URL's order.
func (o SentinelOptions) SentinelAddrs() []string {
	return append([]string(nil), o.opt.SentinelAddrs...)
}

// DB is the database number selected on the master.
func (o SentinelOptions) DB() int { return o.opt.DB }

// withPoolSize returns o with n connections per pool.
func (o SentinelOptions) withPoolSize(n int) SentinelOptions {
	o.opt.PoolSize = n
	return o
}

// MakeRedisClient returns a new *redis.Client with automatic failover; it
// implements asynq.RedisConnOpt.
func (o SentinelOptions) MakeRedisClient() any {
	opt := o.opt
	opt.SentinelAddrs = append([]string(nil), o.opt.SentinelAddrs...)
	return redis.NewFailoverClient(&opt)
}

// parseSentinelURL parses
//
//	redis-sentinel://[[user]:password@]host1:port1[,hostN:portN…][/db]?master=NAME[&sentinel_password=…][&sentinel_username=…]
//
// The user information is the Redis servers' (the master's and its
// replicas': requirepass or an ACL user); sentinel_password and
// sentinel_username are the sentinels' own (their requirepass), when they
// have one. A port left out is Sentinel's 26379. Its errors never quote the
// URL or a password.
func parseSentinelURL(raw string) (SentinelOptions, error) {
	// net/url takes what follows a host's last colon for its port, so a
	// host list whose last entry has no port ("a:26379,b") does not parse:
	// the list is cut out first and the rest parsed with a placeholder host.
	hosts, rest, err := cutHosts(raw)
	if err != nil {
		return SentinelOptions{}, err
	}
	u, err := neturl.Parse(rest)
	if err != nil {
		return SentinelOptions{}, err
	}
	var o SentinelOptions
	if u.User != nil {
		o.opt.Username = u.User.Username()
		o.opt.Password, _ = u.User.Password()
	}
	addrs, errs := hostList(hosts, "26379", "sentinel")
	o.opt.SentinelAddrs = addrs
	if db := strings.Trim(u.Path, "/"); db != "" {
		if o.opt.DB, err = strconv.Atoi(db); err != nil || o.opt.DB < 0 {
			errs = append(errs, fmt.Errorf("bad database number %q", db))
		}
	}
	q := u.Query()
	o.opt.MasterName = q.Get("master")
	o.opt.SentinelUsername = q.Get("sentinel_username")
	o.opt.SentinelPassword = q.Get("sentinel_password")
	if o.opt.MasterName == "" {
		errs = append(errs, errors.New("master=NAME is required"))
	}
	for k := range q {
		switch k {
		case "master", "sentinel_username", "sentinel_password":
		default:
			errs = append(errs, fmt.Errorf("unknown parameter %q", k))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return SentinelOptions{}, err
	}
	return o, nil
}

// hostsPlaceholder stands for a URL's host list while net/url parses the rest.
const hostsPlaceholder = "chom-hosts.invalid"

// cutHosts splits a redis-sentinel:// or redis-cluster:// URL into its
// comma-separated host list and the URL with that list replaced by a
// placeholder host.
func cutHosts(raw string) (hosts, rest string, err error) {
	scheme, after, ok := strings.Cut(raw, "://")
	if !ok {
		return "", "", errors.New("want redis-sentinel://host:port,…?master=NAME or redis-cluster://host:port,…")
	}
	end := strings.IndexAny(after, "/?#")
	if end < 0 {
		end = len(after)
	}
	authority, tail := after[:end], after[end:]
	userinfo := ""
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		userinfo, hosts = authority[:i+1], authority[i+1:]
	} else {
		hosts = authority
	}
	return hosts, scheme + "://" + userinfo + hostsPlaceholder + tail, nil
}

// hostList splits a comma-separated host list (as cutHosts cut it out) into
// host:port addresses, a port left out being defaultPort; what names the
// hosts in its errors ("sentinel", "cluster node").
func hostList(hosts, defaultPort, what string) (addrs []string, errs []error) {
	for _, h := range strings.Split(hosts, ",") {
		if h == "" {
			errs = append(errs, fmt.Errorf("empty %s address", what))
			continue
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			host, port = h, defaultPort
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil || host == "" {
			errs = append(errs, fmt.Errorf("bad %s address %q", what, h))
			continue
		}
		addrs = append(addrs, net.JoinHostPort(host, port))
	}
	return addrs, errs
}

// redactSentinelURL is url for an error message: its password and the value
// of every parameter but master hidden, so a misspelt sentinel_password is
// not shown either.
func redactSentinelURL(raw string) string {
	hosts, rest, err := cutHosts(raw)
	if err != nil {
		return "<unparseable URL>"
	}
	u, err := neturl.Parse(rest)
	if err != nil {
		return "<unparseable URL>"
	}
	if u.RawQuery != "" {
		q, err := neturl.ParseQuery(u.RawQuery)
		if err != nil {
			u.RawQuery = "<unparseable query>"
		} else {
			for k := range q {
				if k != "master" {
					q[k] = []string{"xxxxx"}
				}
			}
			u.RawQuery = q.Encode()
		}
	}
	return strings.Replace(u.Redacted(), hostsPlaceholder, hosts, 1)
}
