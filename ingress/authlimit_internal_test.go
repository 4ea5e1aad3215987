package ingress

import (
	"net/netip"
	"testing"
	"time"
)

// The address failures are charged to: the TCP peer's IP, an IPv6 one by its
// /64 (one host holds a whole /64, so rotating within it buys nothing).
func TestClientKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ remote, want string }{
		{"203.0.113.7:1234", "203.0.113.7/32"},
		{"[::ffff:203.0.113.7]:1234", "203.0.113.7/32"},
		{"[2001:db8:1:2:aaaa::1]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::9%eth0]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:3::1]:443", "2001:db8:1:3::/64"},
		{"not an address", "invalid Prefix"},
	} {
		if got := clientKey(tc.remote).String(); got != tc.want {
			t.Errorf("clientKey(%q) = %s, want %s", tc.remote, got, tc.want)
		}
	}
}

// A flood from ever new addresses cannot grow the limiter past its bound, and
// dropping full buckets forgets nothing: an address still draining keeps its
// state while the bound holds.
func TestFailLimiterBounded(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	l := newFailLimiter(10, 2, 100, func() time.Time { return now })
	drained := netip.MustParsePrefix("192.0.2.1/32")
	l.take(drained)
	l.take(drained)
	for i := range 10_000 {
		key := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		l.take(key)
		if len(l.buckets) > 100 {
			t.Fatalf("after %d addresses: %d buckets, want at most 100", i+1, len(l.buckets))
		}
		if i%50 == 0 {
			now = now.Add(time.Second) // the one-attempt buckets refill
			if ok, _ := l.take(drained); !ok {
				t.Fatalf("%s refused after a second's refill", drained)
			}
			l.take(drained)
		}
	}
	if ok, wait := l.take(drained); ok || wait <= 0 {
		t.Errorf("%s after draining: ok %v, wait %s; want a refusal", drained, ok, wait)
	}
}
