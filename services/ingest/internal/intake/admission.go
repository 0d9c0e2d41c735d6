package intake

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/semaphore"
)

// ErrOverloaded means the process already holds its budget of request bytes
// in flight: retry shortly (with the same messageIds).
var ErrOverloaded = errors.New("ingest is at capacity; retry shortly with the same messageIds")

// OverloadRetryAfter is how long a client should wait after ErrOverloaded.
const OverloadRetryAfter = time.Second

// admission bounds the request bytes being read, decoded and published at
// once, so a surge of clients costs waiting connections (whose bodies stay
// unread in the kernel, pushing back on the sender) rather than memory.
type admission struct {
	budget   *semaphore.Weighted
	size     int64
	wait     time.Duration
	inflight metric.Int64UpDownCounter
}

// Reservation is a share of the in-flight budget held by one request.
type Reservation struct {
	a *admission
	n int64
}

// Admit reserves n bytes of the budget, waiting up to the configured admit
// wait; a request larger than the whole budget reserves all of it.
func (in *Intake) Admit(ctx context.Context, n int64) (*Reservation, error) {
	a := in.admission
	n = min(max(n, 1), a.size)
	wctx, cancel := context.WithTimeout(ctx, a.wait)
	defer cancel()
	if err := a.budget.Acquire(wctx, n); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err() // the client went away
		}
		return nil, ErrOverloaded
	}
	a.inflight.Add(ctx, n)
	return &Reservation{a: a, n: n}, nil
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
}

// Release gives the reservation back.
func (r *Reservation) Release() {
	if r.n == 0 {
		return
	}
	r.a.budget.Release(r.n)
	r.a.inflight.Add(context.Background(), -r.n)
	r.n = 0
}
