package ingress

import (
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/time/rate"
)

// rateLimiter is a token bucket per API token, kept in this process: with N
// ingress replicas behind a balancer a token gets up to N times the rate. Buckets
// idle for longer than idleTTL are dropped.
type rateLimiter struct {
	rps   rate.Limit
	burst int
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	sweeps  int
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

const idleTTL = 10 * time.Minute

func newRateLimiter(rps float64, burst int, now func() time.Time) *rateLimiter {
	return &rateLimiter{rps: rate.Limit(rps), burst: burst, now: now, buckets: make(map[string]*bucket)}
}

// allow takes one request from key's bucket. When the bucket is empty it returns
// false and how long until a request would be allowed.
func (r *rateLimiter) allow(key string) (bool, time.Duration) {
	now := r.now()
	r.mu.Lock()
	b, ok := r.buckets[key]
	if !ok {
		b = &bucket{lim: rate.NewLimiter(r.rps, r.burst)}
		r.buckets[key] = b
	}
	b.seen = now
	r.sweeps++
	if r.sweeps >= 10_000 {
		r.sweeps = 0
		for k, v := range r.buckets {
			if now.Sub(v.seen) > idleTTL {
				delete(r.buckets, k)
			}
		}
	}
	r.mu.Unlock()
	res := b.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// rateLimit answers 429 with Retry-After when the request's token is over its rate.
// It runs after authentication; unauthenticated requests are not counted here.
func (a *API) rateLimit(c *gin.Context) {
	if a.limiter == nil {
		return
	}
	ok, wait := a.limiter.allow(principal(c).TokenID)
	if ok {
		return
	}
	a.metrics.RateLimited()
	c.Header("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	writeProblem(c, Problem{Type: problemRateLimited, Title: "Too many requests", Status: 429,
		Detail: "this token is over its request rate; retry after the time in Retry-After"})
}
