package queue

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/redis/go-redis/v9"
)

func TestRedisOptionsSentinel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		url  string
		want redis.FailoverOptions
	}{
		{"both passwords, database", "redis-sentinel://:data-pw@10.0.0.1:26379,10.0.0.2:26380,10.0.0.3/2?master=chom&sentinel_password=sent-pw",
			redis.FailoverOptions{MasterName: "chom", SentinelAddrs: []string{"10.0.0.1:26379", "10.0.0.2:26380", "10.0.0.3:26379"},
				Password: "data-pw", SentinelPassword: "sent-pw", DB: 2}},
		{"ACL users", "redis-sentinel://chom:data-pw@[::1]:26379?master=queue&sentinel_username=mon&sentinel_password=s",
			redis.FailoverOptions{MasterName: "queue", SentinelAddrs: []string{"[::1]:26379"},
				Username: "chom", Password: "data-pw", SentinelUsername: "mon", SentinelPassword: "s"}},
		{"no password", "redis-sentinel://127.0.0.1:1,127.0.0.1:2/0?master=m",
			redis.FailoverOptions{MasterName: "m", SentinelAddrs: []string{"127.0.0.1:1", "127.0.0.1:2"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opt, err := RedisOptions(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			so, ok := opt.(SentinelOptions)
			if !ok {
				t.Fatalf("RedisOptions(%s) = %T, want SentinelOptions", tc.url, opt)
			}
			if diff := cmp.Diff(tc.want, so.opt, cmpopts.IgnoreUnexported(redis.FailoverOptions{})); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRedisOptionsSentinelErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, url, want string }{
		{"no master", "redis-sentinel://:Secret-pw@127.0.0.1:26379/0", "master=NAME is required"},
		{"bad port", "redis-sentinel://:Secret-pw@127.0.0.1:26379,127.0.0.1:x?master=m", `bad sentinel address "127.0.0.1:x"`},
		{"bad database", "redis-sentinel://:Secret-pw@127.0.0.1/zero?master=m", `bad database number "zero"`},
		{"unknown parameter", "redis-sentinel://:Secret-pw@127.0.0.1?master=m&sentinel_pasword=Secret-pw", `unknown parameter "sentinel_pasword"`},
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

// TestNewRedisClientSentinelPool: the pool size reaches the failover client.
func TestNewRedisClientSentinelPool(t *testing.T) {
	t.Parallel()
	rc, err := NewRedisClient("redis-sentinel://:pw@127.0.0.1:1?master=m", 7)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	c, ok := rc.(*redis.Client)
	if !ok {
		t.Fatalf("NewRedisClient = %T, want the failover *redis.Client", rc)
	}
	if got := c.Options().PoolSize; got != 7 {
		t.Errorf("pool size %d, want 7", got)
	}
	if got := c.Options().Password; got != "pw" {
		t.Errorf("master password %q, want the URL's", got)
	}
}
