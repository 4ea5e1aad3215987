package testenv_test

import (
	"testing"
	"time"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/queue"
)

// TestRedisCluster: the kit's cluster serves keys of every slot through
// CHOM's cluster client (from the kit's URL), a master killed is replaced by
// its replica, and the client finds the new master by itself.
func TestRedisCluster(t *testing.T) {
	t.Parallel()
	start := time.Now()
	c := testenv.StartRedisCluster(t, testenv.RedisClusterConfig{Password: "kit-pw"})
	t.Logf("cluster of 6 up in %s", time.Since(start).Round(time.Millisecond))
	ctx := t.Context()
	cc, err := queue.NewRedisClient(c.URL, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	for _, k := range []string{"a", "b", "c", "{x}1", "{x}2"} {
		if err := cc.Set(ctx, k, k, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
	}
	master, replicas, err := c.Owners(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if len(replicas) != 1 {
		t.Fatalf("slot of a: %d replicas, want 1", len(replicas))
	}
	master.Kill(t)
	killed := time.Now()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if role, _ := c.Role(ctx, replicas[0].Addr); role == "master" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s not promoted within 20s of its master's SIGKILL", replicas[0].Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("replica promoted %s after the kill", time.Since(killed).Round(time.Millisecond))
	if got, err := cc.Get(ctx, "a").Result(); err != nil || got != "a" {
		t.Errorf("GET a after the failover = %q, %v", got, err)
	}
}
