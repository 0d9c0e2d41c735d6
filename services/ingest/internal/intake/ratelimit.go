package intake

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// tenantLimiter is a token bucket of events per tenant, so one tenant's
// flood is answered with 429 while the others go on.
type tenantLimiter struct {
	perSecond float64
	burst     int
	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
}

func newTenantLimiter(perSecond float64, burst int) *tenantLimiter {
	return &tenantLimiter{perSecond: perSecond, burst: burst, buckets: map[string]*rate.Limiter{}}
}

// take spends n events of tenant's budget now. When the budget is short it
// spends nothing and says how long to wait. It reads the clock itself:
// rate.Limiter credits time again when handed an earlier time than it last
// saw, so charging concurrent requests at their receive times would let
// those that finished out of order earn the same interval twice.
func (l *tenantLimiter) take(tenant string, n int) (ok bool, retryAfter time.Duration) {
	if l.perSecond <= 0 {
		return true, 0
	}
	l.mu.Lock()
	b, found := l.buckets[tenant]
	if !found {
		b = rate.NewLimiter(rate.Limit(l.perSecond), l.burst)
		l.buckets[tenant] = b
	}
	l.mu.Unlock()
	n = min(n, l.burst) // a batch larger than the burst still gets through, at full cost
	now := time.Now()
	r := b.ReserveN(now, n)
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, time.Duration(math.Ceil(d.Seconds())) * time.Second
	}
	return true, 0
}

// exhausted reports whether tenant's budget is empty right now, and when
// it has room again, without spending anything: a request can be refused
// before its body is read, so a flood over its rate costs almost nothing.
func (l *tenantLimiter) exhausted(tenant string) (bool, time.Duration) {
	if l.perSecond <= 0 {
		return false, 0
	}
	l.mu.Lock()
	b, found := l.buckets[tenant]
	l.mu.Unlock()
	if !found {
		return false, 0
	}
	if tokens := b.TokensAt(time.Now()); tokens < 1 {
		return true, time.Duration(math.Ceil((1-tokens)/l.perSecond)) * time.Second
	}
	return false, 0
}
