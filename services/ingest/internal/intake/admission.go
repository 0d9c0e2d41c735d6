package intake

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/semaphore"
)

// ErrOverloaded means the process already holds its budget of request bytes
// in flight, or the tenant its share of it: retry shortly (with the same
// messageIds).
var ErrOverloaded = errors.New("ingest is at capacity; retry shortly with the same messageIds")

// OverloadRetryAfter is how long a client should wait after ErrOverloaded.
const OverloadRetryAfter = time.Second

// admission bounds the request bytes being read, decoded and published at
// once, so a surge of clients costs waiting connections (whose bodies stay
// unread in the kernel, pushing back on the sender) rather than memory. A
// tenant may hold only its share of the budget, so one tenant's surge
// leaves room for the others' requests.
type admission struct {
	budget    *semaphore.Weighted
	size      int64
	tenantMax int64 // a tenant's share; size when there is no limit
	wait      time.Duration
	inflight  metric.Int64UpDownCounter

	mu      sync.Mutex
	tenants map[string]*semaphore.Weighted
}

// maxTenantBudgets bounds the tenants tracked; past it a new tenant's
// requests count against the whole budget only.
const maxTenantBudgets = 100_000

func (a *admission) tenant(id string) *semaphore.Weighted {
	if id == "" || a.tenantMax >= a.size {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.tenants[id]
	if !ok && len(a.tenants) < maxTenantBudgets {
		s = semaphore.NewWeighted(a.tenantMax)
		a.tenants[id] = s
	}
	return s
}

// Reservation is a share of the in-flight budget held by one request.
type Reservation struct {
	a      *admission
	n      int64
	tenant *semaphore.Weighted // nil when the tenant is unknown or unlimited
	tn     int64
}

// Admit reserves n bytes of the budget for a request of tenant ("" when
// its key is in the body, not read yet), waiting up to the configured
// admit wait; a request larger than the whole budget, or the tenant's
// share, reserves all of it.
func (in *Intake) Admit(ctx context.Context, tenant string, n int64) (*Reservation, error) {
	a := in.admission
	n = min(max(n, 1), a.size)
	wctx, cancel := context.WithTimeout(ctx, a.wait)
	defer cancel()
	r := &Reservation{a: a, n: n, tenant: a.tenant(tenant)}
	if r.tenant != nil {
		r.tn = min(n, a.tenantMax)
		if err := r.tenant.Acquire(wctx, r.tn); err != nil {
			return nil, admitError(ctx)
		}
	}
	if err := a.budget.Acquire(wctx, n); err != nil {
		if r.tenant != nil {
			r.tenant.Release(r.tn)
		}
		return nil, admitError(ctx)
	}
	a.inflight.Add(ctx, n)
	return r, nil
}

func admitError(ctx context.Context) error {
	if ctx.Err() != nil {
		return ctx.Err() // the client went away
	}
	return ErrOverloaded
}

// Shrink gives back all but n bytes, once a request's real size is known
// (a gzip body is admitted at the largest it may decompress to).
func (r *Reservation) Shrink(n int64) {
	n = max(n, 1)
	if n >= r.n {
		return
	}
	r.a.budget.Release(r.n - n)
	r.a.inflight.Add(context.Background(), n-r.n)
	r.n = n
	if r.tenant != nil && n < r.tn {
		r.tenant.Release(r.tn - n)
		r.tn = n
	}
}

// Release gives the reservation back.
func (r *Reservation) Release() {
	if r.n == 0 {
		return
	}
	r.a.budget.Release(r.n)
	r.a.inflight.Add(context.Background(), -r.n)
	r.n = 0
	if r.tenant != nil {
		r.tenant.Release(r.tn)
		r.tn = 0
	}
}
