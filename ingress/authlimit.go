package ingress

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// failLimiter is a token bucket per client address that failed authentication
// attempts drain (Config.AuthFailRate, AuthFailBurst). It protects the
// database from token guessing and floods of bad credentials: once an
// address's bucket is empty, a token the token cache does not know is refused
// with 429 before it is looked up, so a flood of random well-formed tokens
// costs at most the burst plus the rate in queries. A request whose token
// turns out live gives back what its lookup took, so clients with valid tokens
// never drain their address's bucket; a valid token already in the token
// cache is answered without the bucket at all, even while its address is
// limited.
//
// Memory is bounded: a bucket that has refilled carries no information (a new
// one is the same), so at max buckets the full ones are dropped; if every
// bucket is still draining (max addresses failing within burst/rate seconds)
// all are dropped, which forgives those addresses rather than grow.
type failLimiter struct {
	rate  float64
	burst float64
	max   int
	now   func() time.Time

	mu      sync.Mutex
	buckets map[netip.Prefix]*failBucket
}

type failBucket struct {
	tokens float64
	last   time.Time
}

func newFailLimiter(rate float64, burst, max int, now func() time.Time) *failLimiter {
	return &failLimiter{rate: rate, burst: float64(burst), max: max, now: now, buckets: make(map[netip.Prefix]*failBucket)}
}

// level is b's tokens at now.
func (l *failLimiter) level(b *failBucket, now time.Time) float64 {
	return min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
}

// take takes one attempt from key's bucket. When the bucket is empty it
// returns false and how long until an attempt would be allowed.
func (l *failLimiter) take(key netip.Prefix) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.max {
			l.evict(now)
		}
		b = &failBucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	tokens := l.level(b, now)
	if tokens < 1 {
		return false, time.Duration((1 - tokens) / l.rate * float64(time.Second))
	}
	b.tokens, b.last = tokens-1, now
	return true, 0
}

// allow reports whether key has an attempt left, without taking it: the
// check before a token lookup. Only a failed lookup is charged (take), so
// any number of concurrent valid tokens from one address are looked up; the
// lookups that can fail before the bucket shows empty are at most the burst
// plus the lookups already in flight when it empties.
func (l *failLimiter) allow(key netip.Prefix) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		return true, 0
	}
	if tokens := l.level(b, now); tokens < 1 {
		return false, time.Duration((1 - tokens) / l.rate * float64(time.Second))
	}
	return true, 0
}

// evict drops the full buckets, or every bucket when none is full. l.mu is held.
func (l *failLimiter) evict(now time.Time) {
	for k, b := range l.buckets {
		if l.level(b, now) >= l.burst {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= l.max {
		clear(l.buckets)
	}
}

// clientKey is the address a request's failures are charged to: the TCP
// peer's IP (X-Forwarded-For and the like are never read: any client can
// send them), an IPv4 address alone and an IPv6 one by its /64, since one
// host usually holds a whole /64. Behind a proxy or load balancer every
// client shares the proxy's bucket; see docs/operations.md, Security.
func clientKey(remoteAddr string) netip.Prefix {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{} // one shared bucket for what has no address
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, _ := ip.Prefix(64)
	return p
}
