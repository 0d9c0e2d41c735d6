package evaluator

import (
	"context"
	"time"
)

// pageSize is how many accounts the sweep and backfill list at a time.
const pageSize = 5 * ChunkSize

// EvaluateAll re-evaluates every account of tenant that has events, a page
// at a time, calling done after each page with the accounts done so far.
func (e *Evaluator) EvaluateAll(ctx context.Context, tenant, trigger string, done func(n int64)) (Result, error) {
	var total Result
	after := ""
	for {
		page, err := accountPage(ctx, e.db, tenant, after, pageSize)
		if err != nil || len(page) == 0 {
			return total, err
		}
		r, err := e.Evaluate(ctx, tenant, page, trigger)
		total.add(r)
		if err != nil {
			return total, err
		}
		after = page[len(page)-1]
		if done != nil {
			done(int64(total.Accounts))
		}
	}
}

// Sweep re-evaluates every account of every tenant with a journey: an
// account goes at risk, late or stalled by sending nothing.
func (e *Evaluator) Sweep(ctx context.Context, tenants []string) (Result, error) {
	var total Result
	for _, t := range tenants {
		js, err := e.journeys.List(ctx, t)
		if err != nil {
			return total, err
		}
		if len(js) == 0 {
			continue
		}
		r, err := e.EvaluateAll(ctx, t, "sweep", nil)
		total.add(r)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// Backfill is a recompute of all of a tenant's accounts after its journeys
// changed.
type Backfill struct {
	Reason      string
	Total, Done int64
	StartedAt   time.Time
	FinishedAt  time.Time
	Err         string
	Result      Result
	finished    bool
}

// Finished reports whether it ended, well or not.
func (b Backfill) Finished() bool { return b.finished }

// RunBackfill recomputes every account of tenant, reporting its progress
// through BackfillStatus. A backfill already running for the tenant is
// not stopped: both end in the same state, as both evaluate at the clock.
func (e *Evaluator) RunBackfill(ctx context.Context, tenant, reason string) (Result, error) {
	bf := &Backfill{Reason: reason, StartedAt: time.Now().UTC()}
	e.mu.Lock()
	e.backfills[tenant] = bf
	e.mu.Unlock()
	total, err := accountCount(ctx, e.db, tenant)
	e.update(bf, func() { bf.Total = total })
	var res Result
	if err == nil {
		res, err = e.EvaluateAll(ctx, tenant, "backfill", func(n int64) { e.update(bf, func() { bf.Done = n }) })
	}
	e.update(bf, func() {
		bf.finished, bf.FinishedAt, bf.Result = true, time.Now().UTC(), res
		if err != nil {
			bf.Err = err.Error()
		}
	})
	if err != nil {
		e.log.WarnContext(ctx, "backfill failed; the next sweep recomputes the accounts", "tenant", tenant, "reason", reason, "error", err)
	} else {
		e.log.InfoContext(ctx, "backfill done", "tenant", tenant, "reason", reason, "accounts", res.Accounts, "changed", res.Changed, "signals", res.Signals)
	}
	return res, err
}

func (e *Evaluator) update(bf *Backfill, f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f()
}

// BackfillStatus is the tenant's latest backfill in this process.
func (e *Evaluator) BackfillStatus(tenant string) (Backfill, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	bf, ok := e.backfills[tenant]
	if !ok {
		return Backfill{}, false
	}
	return *bf, true
}
