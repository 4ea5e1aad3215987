package queue

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/redis/go-redis/v9"
)

func TestRedisOptionsCluster(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		url  string
		want redis.ClusterOptions
	}{
		{"password, database 0, default port", "redis-cluster://:data-pw@10.0.0.1:7000,10.0.0.2:7001,10.0.0.3/0",
			redis.ClusterOptions{Addrs: []string{"10.0.0.1:7000", "10.0.0.2:7001", "10.0.0.3:6379"}, Password: "data-pw"}},
		{"ACL user, IPv6", "redis-cluster://chom:data-pw@[::1]:7000",
			redis.ClusterOptions{Addrs: []string{"[::1]:7000"}, Username: "chom", Password: "data-pw"}},
		{"no password", "redis-cluster://127.0.0.1:1,127.0.0.1:2",
			redis.ClusterOptions{Addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opt, err := RedisOptions(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			co, ok := opt.(ClusterOptions)
			if !ok {
				t.Fatalf("RedisOptions(%s) = %T, want ClusterOptions", tc.url, opt)
			}
			if diff := cmp.Diff(tc.want, co.opt, cmpopts.IgnoreUnexported(redis.ClusterOptions{})); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRedisOptionsClusterErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, url, want string }{
		{"bad port", "redis-cluster://:Secret-pw@127.0.0.1:7000,127.0.0.1:x", `bad cluster node address "127.0.0.1:x"`},
		{"empty address", "redis-cluster://:Secret-pw@127.0.0.1:7000,", "empty cluster node address"},
		{"database", "redis-cluster://:Secret-pw@127.0.0.1:7000/2", "database 0 only"},
		{"parameter", "redis-cluster://127.0.0.1:7000?password=Secret-pw", `unknown parameter "password"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := RedisOptions(tc.url)
			if err == nil {
				t.Fatalf("RedisOptions(%s) = nil error, want %q", tc.url, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "Secret-pw") {
				t.Errorf("error %q shows a password", err)
			}
		})
	}
}

// TestNewRedisClientCluster: the URL gives a cluster client, with the pool
// size per node and the password.
func TestNewRedisClientCluster(t *testing.T) {
	t.Parallel()
	rc, err := NewRedisClient("redis-cluster://:pw@127.0.0.1:1,127.0.0.1:2", 7)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	c, ok := rc.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("NewRedisClient = %T, want *redis.ClusterClient", rc)
	}
	if got := c.Options().PoolSize; got != 7 {
		t.Errorf("pool size %d, want 7", got)
	}
	if got := c.Options().Password; got != "pw" {
		t.Errorf("password %q, want the URL's", got)
	}
}

// TestRedactURL: every form of Redis URL is shown with its hosts and without
// its password; a cluster URL's host list survives (net/url alone cannot
// parse it).
func TestRedactURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ url, want string }{
		{"redis://:Secret-pw@10.0.0.1:6379/2", "redis://:xxxxx@10.0.0.1:6379/2"},
		{"redis-sentinel://:Secret-pw@s1:26379,s2:26379/0?master=chom&sentinel_password=Secret-pw", "redis-sentinel://:xxxxx@s1:26379,s2:26379/0?master=chom&sentinel_password=xxxxx"},
		{"redis-cluster://chom:Secret-pw@h1:7000,h2:7001,h3:7002", "redis-cluster://chom:xxxxx@h1:7000,h2:7001,h3:7002"},
		{"redis-cluster://:Secret-pw@h1:7000?password=Secret-pw", "redis-cluster://:xxxxx@h1:7000?xxxxx"},
	} {
		got := RedactURL(tc.url)
		if got != tc.want {
			t.Errorf("RedactURL(%s) = %s, want %s", tc.url, got, tc.want)
		}
		if strings.Contains(got, "Secret-pw") {
			t.Errorf("RedactURL(%s) = %s shows the password", tc.url, got)
		}
	}
}
