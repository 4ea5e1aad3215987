package testenv

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelConfig configures a Sentinel-managed Redis: a master, one replica
// and three sentinels.
type SentinelConfig struct {
	// MasterName is the name the sentinels monitor the master under; default
	// "chom".
	MasterName string
	// Password is the master's and the replica's requirepass (and the
	// replica's masterauth, the sentinels' auth-pass); empty: none.
	Password string
	// SentinelPassword is the sentinels' own requirepass; empty: none.
	SentinelPassword string
	// DownAfter is the sentinels' down-after-milliseconds: how long the
	// master must stay silent before it is subjectively down. Default 1s
	// (production: see docs/operations.md, Scaling out).
	DownAfter time.Duration
	// FailoverTimeout is the sentinels' failover-timeout; default 10s.
	FailoverTimeout time.Duration
}

// Sentinel is a Sentinel-managed Redis private to one test: Servers[0]
// starts as the master and Servers[1] as its replica (both with AOF,
// appendfsync always), watched by three redis-sentinel processes with quorum
// 2, all on loopback ports, in temporary directories removed when the test
// ends.
type Sentinel struct {
	// Servers are the master (first) and the replica as started; after a
	// failover the replica is the master.
	Servers []*RedisServer
	// SentinelAddrs are the sentinels' 127.0.0.1:port addresses.
	SentinelAddrs []string
	// URL is the redis-sentinel:// URL CHOM_REDIS_URL takes, database 0, with
	// both passwords.
	URL string

	cfg       SentinelConfig
	sentinels []*serverProcess
}

// StartSentinel starts a master, a replica and three sentinels and returns
// once the replica is in sync and every sentinel knows the replica and the
// two other sentinels (so a failover can be agreed and has somewhere to go).
// It skips the test when redis-server or redis-sentinel is not installed
// (fails it when CI is set) and fails it when a part does not start.
func StartSentinel(tb testing.TB, cfg SentinelConfig) *Sentinel {
	tb.Helper()
	if cfg.MasterName == "" {
		cfg.MasterName = "chom"
	}
	if cfg.DownAfter <= 0 {
		cfg.DownAfter = time.Second
	}
	if cfg.FailoverTimeout <= 0 {
		cfg.FailoverTimeout = 10 * time.Second
	}
	bin, err := exec.LookPath("redis-sentinel")
	if err != nil {
		missingBinary(tb, "redis-sentinel", "redis-sentinel (apt-get install redis-sentinel)")
	}
	s := &Sentinel{cfg: cfg}
	master := StartRedisServer(tb, RedisServerConfig{AppendOnly: true, Password: cfg.Password})
	replica := StartRedisServer(tb, RedisServerConfig{AppendOnly: true, Password: cfg.Password})
	s.Servers = []*RedisServer{master, replica}
	ctx, cancel := context.WithTimeout(context.Background(), serverStartTimeout)
	defer cancel()
	host, port, _ := net.SplitHostPort(master.Addr)
	rc := s.serverClient(replica.Addr)
	defer rc.Close()
	// Set at run time, not on the command line: the promoted replica's own
	// settings are what sentinels rewrite, and the master keeps no replicaof.
	for _, cmd := range [][]any{{"CONFIG", "SET", "masterauth", cfg.Password}, {"REPLICAOF", host, port}} {
		if err := rc.Do(ctx, cmd...).Err(); err != nil {
			tb.Fatalf("testenv: %s on the replica: %v", cmd[0], err)
		}
	}
	if err := waitUntil(ctx, func() (bool, error) {
		info, err := rc.Info(ctx, "replication").Result()
		return strings.Contains(info, "master_link_status:up"), err
	}); err != nil {
		tb.Fatalf("testenv: replica %s did not sync with %s: %v\n%s", replica.Addr, master.Addr, err, Tail(filepath.Join(replica.Dir, "redis.log"), 20))
	}

	dir, err := os.MkdirTemp("", "chom-sentinel-")
	if err != nil {
		tb.Fatalf("testenv: sentinel dir: %v", err)
	}
	tb.Cleanup(func() {
		for _, p := range s.sentinels {
			if !p.signal(syscall.SIGTERM, false, serverStopTimeout) {
				p.signal(syscall.SIGKILL, false, serverStopTimeout)
			}
		}
		if tb.Failed() {
			for i := range s.sentinels {
				tb.Logf("testenv: sentinel %d log (last lines):\n%s", i+1, Tail(filepath.Join(dir, fmt.Sprintf("sentinel-%d.log", i+1)), 20))
			}
		}
		_ = os.RemoveAll(dir)
	})
	for i := 1; i <= 3; i++ {
		s.startSentinel(tb, bin, dir, i, host, port)
	}
	s.URL = (&url.URL{Scheme: "redis-sentinel", User: url.UserPassword("", cfg.Password),
		Host: strings.Join(s.SentinelAddrs, ","), Path: "/0"}).String()
	q := url.Values{"master": {cfg.MasterName}}
	if cfg.SentinelPassword != "" {
		q.Set("sentinel_password", cfg.SentinelPassword)
	}
	s.URL += "?" + q.Encode()
	if cfg.Password == "" {
		s.URL = strings.Replace(s.URL, "redis-sentinel://:@", "redis-sentinel://", 1)
	}

	// Sentinels find the replica through the master's INFO and each other
	// through hello messages on the master's __sentinel__:hello channel.
	for _, addr := range s.SentinelAddrs {
		sc := s.sentinelClient(addr)
		err := waitUntil(ctx, func() (bool, error) {
			m, err := sc.Master(ctx, cfg.MasterName).Result()
			return err == nil && m["num-other-sentinels"] == "2" && m["num-slaves"] == "1", err
		})
		_ = sc.Close()
		if err != nil {
			tb.Fatalf("testenv: sentinel %s did not find the replica and the other sentinels: %v", addr, err)
		}
	}
	return s
}

// startSentinel starts sentinel i on a free port, retrying when another
// process takes the port first.
func (s *Sentinel) startSentinel(tb testing.TB, bin, dir string, i int, masterHost, masterPort string) {
	tb.Helper()
	conf := filepath.Join(dir, fmt.Sprintf("sentinel-%d.conf", i))
	logf := filepath.Join(dir, fmt.Sprintf("sentinel-%d.log", i))
	for attempt := 1; ; attempt++ {
		port := freePort(tb)
		lines := []string{
			"bind 127.0.0.1",
			"port " + strconv.Itoa(port),
			"daemonize no",
			"dir " + dir,
			"logfile " + logf,
			fmt.Sprintf("sentinel monitor %s %s %s 2", s.cfg.MasterName, masterHost, masterPort),
			fmt.Sprintf("sentinel down-after-milliseconds %s %d", s.cfg.MasterName, s.cfg.DownAfter.Milliseconds()),
			fmt.Sprintf("sentinel failover-timeout %s %d", s.cfg.MasterName, s.cfg.FailoverTimeout.Milliseconds()),
			fmt.Sprintf("sentinel parallel-syncs %s 1", s.cfg.MasterName),
		}
		if s.cfg.Password != "" {
			lines = append(lines, fmt.Sprintf("sentinel auth-pass %s %s", s.cfg.MasterName, s.cfg.Password))
		}
		if s.cfg.SentinelPassword != "" {
			lines = append(lines, "requirepass "+s.cfg.SentinelPassword)
		}
		// Sentinel rewrites its configuration file (what it learns of the
		// replica, the other sentinels and each failover), so it needs one.
		if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			tb.Fatalf("testenv: sentinel config: %v", err)
		}
		p, err := startProcess(exec.Command(bin, conf))
		if err != nil {
			tb.Fatalf("testenv: start redis-sentinel: %v", err)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err = s.awaitSentinel(p, addr); err == nil {
			s.sentinels = append(s.sentinels, p)
			s.SentinelAddrs = append(s.SentinelAddrs, addr)
			return
		}
		p.signal(syscall.SIGKILL, false, serverStopTimeout)
		if attempt == 5 {
			tb.Fatalf("testenv: redis-sentinel did not start: %v\n%s", err, Tail(logf, 20))
		}
	}
}

// awaitSentinel waits until the sentinel at addr answers a PING.
func (s *Sentinel) awaitSentinel(p *serverProcess, addr string) error {
	sc := s.sentinelClient(addr)
	defer sc.Close()
	deadline := time.Now().Add(serverStartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := sc.Ping(ctx).Err()
		cancel()
		switch {
		case err == nil:
			return nil
		case !p.running():
			return fmt.Errorf("redis-sentinel exited: %v", p.err)
		case time.Now().After(deadline):
			return fmt.Errorf("no answer on %s after %s: %v", addr, serverStartTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// MasterAddr returns the master's address as the first sentinel that answers
// sees it.
func (s *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	var last error
	for _, addr := range s.SentinelAddrs {
		sc := s.sentinelClient(addr)
		hp, err := sc.GetMasterAddrByName(ctx, s.cfg.MasterName).Result()
		_ = sc.Close()
		if err == nil && len(hp) == 2 {
			return net.JoinHostPort(hp[0], hp[1]), nil
		}
		last = err
	}
	return "", fmt.Errorf("no sentinel named the master: %v", last)
}

// Master returns the server the sentinels name as master.
func (s *Sentinel) Master(tb testing.TB) *RedisServer {
	tb.Helper()
	addr, err := s.MasterAddr(tb.Context())
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	for _, r := range s.Servers {
		if r.Addr == addr {
			return r
		}
	}
	tb.Fatalf("testenv: the sentinels name %s as master, neither %s nor %s", addr, s.Servers[0].Addr, s.Servers[1].Addr)
	return nil
}

// Role returns the replication role ("master" or "slave") the server at
// addr reports itself.
func (s *Sentinel) Role(ctx context.Context, addr string) (string, error) {
	rc := s.serverClient(addr)
	defer rc.Close()
	return replicationRole(ctx, rc, addr)
}

// ServerClient returns a client of database 0 of the Redis server at addr
// (with the servers' password), closed when the test ends.
func (s *Sentinel) ServerClient(tb testing.TB, addr string) *redis.Client {
	tb.Helper()
	c := s.serverClient(addr)
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

func (s *Sentinel) serverClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, Password: s.cfg.Password, DialTimeout: time.Second, MaxRetries: -1})
}

func (s *Sentinel) sentinelClient(addr string) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: addr, Password: s.cfg.SentinelPassword, DialTimeout: time.Second, MaxRetries: -1})
}

// waitUntil calls cond every 50ms until it reports true or ctx ends; it
// returns the last error cond gave, or ctx's.
func waitUntil(ctx context.Context, cond func() (bool, error)) error {
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return last
			}
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// replicationRole returns the role ("master" or "slave") in the INFO
// replication answer of the server rc reaches (addr names it in errors).
func replicationRole(ctx context.Context, rc *redis.Client, addr string) (string, error) {
	info, err := rc.Info(ctx, "replication").Result()
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "role:"); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("no role in INFO replication of %s", addr)
}
