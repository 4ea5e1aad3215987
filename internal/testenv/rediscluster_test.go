package testenv_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/queue"
)

// TestRedisCluster: the kit's cluster serves keys of every slot through
// CHOM's cluster client (from the kit's URL), a master killed is replaced by
// its replica, and the client finds the new master by itself. It runs with
// the settings docs/operations.md weighs, and reports what each costs: how
// long after the kill the replica is promoted (cluster-node-timeout) and
// whether writes to another master's slots fail meanwhile
// (cluster-require-full-coverage).
func TestRedisCluster(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  testenv.RedisClusterConfig
		// probeFails: writes to a live master may fail during the failover.
		probeFails bool
	}{
		{"node-timeout 1s, full coverage no", testenv.RedisClusterConfig{Password: "kit-pw"}, false},
		{"node-timeout 5s, full coverage yes", testenv.RedisClusterConfig{Password: "kit-pw", NodeTimeout: 5 * time.Second, RequireFullCoverage: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			c := testenv.StartRedisCluster(t, tc.cfg)
			up := time.Since(start)
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
			probeKey := ""
			for i := 0; probeKey == ""; i++ {
				k := fmt.Sprintf("probe:%d", i)
				if m, _, err := c.Owners(ctx, k); err != nil {
					t.Fatal(err)
				} else if m != master {
					probeKey = k
				}
			}
			var ok, failed atomic.Int64
			var firstFail, lastFail time.Time // read once the probe is done
			pctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for pctx.Err() == nil {
					wctx, cancel := context.WithTimeout(pctx, 2*time.Second)
					err := cc.Set(wctx, probeKey, "x", 0).Err()
					cancel()
					switch {
					case pctx.Err() != nil:
					case err != nil:
						if failed.Add(1) == 1 {
							firstFail = time.Now()
						}
						lastFail = time.Now()
					default:
						ok.Add(1)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
			master.Kill(t)
			killed := time.Now()
			deadline := time.Now().Add(30 * time.Second)
			for {
				if role, _ := c.Role(ctx, replicas[0].Addr); role == "master" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("replica %s not promoted within 30s of its master's SIGKILL", replicas[0].Addr)
				}
				time.Sleep(20 * time.Millisecond)
			}
			promoted := time.Since(killed)
			time.Sleep(time.Second)
			stop()
			<-done
			window := ""
			if failed.Load() > 0 {
				window = fmt.Sprintf(", from %s to %s after the kill", firstFail.Sub(killed).Round(time.Millisecond), lastFail.Sub(killed).Round(time.Millisecond))
			}
			t.Logf("cluster of 6 up in %s; replica promoted %s after its master's SIGKILL; writes to %s on another master meanwhile: %d answered, %d failed%s",
				up.Round(time.Millisecond), promoted.Round(time.Millisecond), probeKey, ok.Load(), failed.Load(), window)
			if got, err := cc.Get(ctx, "a").Result(); err != nil || got != "a" {
				t.Errorf("GET a after the failover = %q, %v", got, err)
			}
			if !tc.probeFails && failed.Load() > 0 {
				t.Errorf("%d writes to a live master's slot failed with cluster-require-full-coverage no", failed.Load())
			}
			if tc.probeFails && failed.Load() == 0 {
				t.Errorf("no write failed with cluster-require-full-coverage yes: the probe proves nothing")
			}
		})
	}
}
