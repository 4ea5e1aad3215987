package testenv_test

import (
	"context"
	"testing"
	"time"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/queue"
)

// Under Sentinel, a write acknowledged by the master and replicated survives
// the master's SIGKILL: a sentinel promotes the replica, and a client built
// from the kit's URL (queue.NewRedisClient, as every CHOM process builds it)
// follows it without being told.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	s := testenv.StartSentinel(t, testenv.SentinelConfig{Password: "data-pw", SentinelPassword: "sentinel-pw"})
	ctx := t.Context()
	rc, err := queue.NewRedisClient(s.URL, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := rc.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	old := s.Master(t)
	if old != s.Servers[0] {
		t.Fatalf("master is %s, want the first server %s", old.Addr, s.Servers[0].Addr)
	}
	// WAIT: the write is on the replica before the kill, so losing it would
	// be the kit's fault, not asynchronous replication's.
	if n, err := rc.Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT 1: %d, %v", n, err)
	}
	old.Kill(t)
	killed := time.Now()
	var promoted, answered time.Duration
	deadline := time.Now().Add(30 * time.Second)
	for (promoted == 0 || answered == 0) && time.Now().Before(deadline) {
		if promoted == 0 {
			if addr, err := s.MasterAddr(ctx); err == nil && addr == s.Servers[1].Addr {
				promoted = time.Since(killed)
			}
		}
		if answered == 0 {
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			v, err := rc.Get(pctx, "k").Result()
			cancel()
			if err == nil && v == "v" {
				if role, err := s.Role(ctx, s.Servers[1].Addr); err == nil && role == "master" {
					answered = time.Since(killed)
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if promoted == 0 || answered == 0 {
		t.Fatalf("30s after the kill: promoted after %s, client answered after %s (0: never)", promoted, answered)
	}
	if err := rc.Set(ctx, "after", "1", 0).Err(); err != nil {
		t.Errorf("write to the promoted replica: %v", err)
	}
	t.Logf("master %s killed; sentinels named %s master after %s; the client read the key from it after %s",
		old.Addr, s.Servers[1].Addr, promoted.Round(time.Millisecond), answered.Round(time.Millisecond))
}
