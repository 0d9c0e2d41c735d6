package evaluator

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/errgroup"

	signalsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/signals/v1"
	"github.com/stickpoint/stickpoint/services/milestones/internal/journeys"
	"github.com/stickpoint/stickpoint/services/milestones/internal/progress"
)

// defaultPageSize is how many accounts the sweep and backfill take at a time: a
// range of the sort key, so no list is sent, and few, large queries.
const defaultPageSize = 10_000

// pagesInFlight is how many pages a backfill evaluates at once. One page's
// milestone read keeps one core busy (it runs on one thread:
// accountSet.oneThread), and its parsing, evaluation and signals another
// part of the time; two in flight keep both cores of the target machine
// busy.
const pagesInFlight = 2

// evaluatePages re-evaluates the accounts ids a page (a range of the sort
// key) at a time, pagesInFlight pages at once, calling done after each
// page with the accounts done so far. The pages are disjoint, so the
// order they finish in changes nothing stored. The first error stops it.
func (e *Evaluator) evaluatePages(ctx context.Context, tenant string, ids []string, trigger string, done func(n int64)) (Result, error) {
	var (
		mu    sync.Mutex
		total Result
	)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(pagesInFlight)
	for page := range slices.Chunk(ids, e.pageSize) {
		if ctx.Err() != nil {
			break // a page failed: start no more
		}
		g.Go(func() error {
			r, err := e.evaluate(ctx, tenant, accountSet{ids: page, contiguous: true, oneThread: true}, trigger, time.Time{})
			mu.Lock()
			defer mu.Unlock()
			total.add(r)
			if err == nil && done != nil {
				done(int64(total.Accounts))
			}
			return err
		})
	}
	err := g.Wait()
	return total, err
}

// Sweep moves every account with a journey on by the clock alone: an
// account goes at risk, late or stalled by sending nothing. It reads the
// stored states, not the events (progress.Restatus): milestones change
// only with events, which their notices evaluate. An account whose state
// is of another journey version than the current one is evaluated in full.
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
		r, err := e.sweepTenant(ctx, t, js)
		total.add(r)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (e *Evaluator) sweepTenant(ctx context.Context, tenant string, js []journeys.Stored) (Result, error) {
	byID := map[string]*journeys.Stored{}
	for i := range js {
		byID[js[i].ID] = &js[i]
	}
	now := e.Now().UTC()
	var total Result
	after := ""
	for {
		rows, err := e.store.JourneyRows(ctx, tenant, after, e.pageSize, now)
		if err != nil || len(rows) == 0 {
			return total, err
		}
		after = rows[len(rows)-1].AccountID
		var stale []string
		var changed []Row
		var sigs []*signalsv1.Signal
		for _, row := range rows {
			j := byID[row.JourneyID]
			if j == nil || j.Version != row.State.JourneyVersion {
				stale = append(stale, row.AccountID)
				continue
			}
			old := *row.State
			cur := progress.Restatus(j.Journey, old, now)
			if !progress.Moved(old, cur) {
				continue
			}
			for _, t := range progress.Transitions(&old, cur) {
				sigs = append(sigs, signalOf(tenant, row.AccountID, j, cur, &old, t, now))
			}
			row.State, row.Status, row.EvaluatedAt, row.encoded, row.due = &cur, cur.Status, now, "", e.dueOf(j.Journey, cur, now)
			changed = append(changed, row)
		}
		if err := e.emit(ctx, tenant, sigs); err != nil {
			return total, err
		}
		if err := e.put(ctx, tenant, changed); err != nil {
			return total, err
		}
		total.add(Result{Accounts: len(rows) - len(stale), Changed: len(changed), Signals: len(sigs)})
		e.evaluated.Add(ctx, int64(len(rows)-len(stale)), metric.WithAttributes(attribute.String("tenant", tenant), attribute.String("trigger", "sweep")))
		if len(stale) > 0 {
			r, err := e.Evaluate(ctx, tenant, stale, "sweep", time.Time{})
			total.add(r)
			if err != nil {
				return total, err
			}
		}
	}
}

// Reconcile evaluates the accounts of tenant with events received since:
// a safety net for a notice the writer failed to publish.
func (e *Evaluator) Reconcile(ctx context.Context, tenant string, since time.Time) (Result, error) {
	rows, err := e.db.Query(ctx, `SELECT DISTINCT account_id FROM events
		WHERE tenant_id = ? AND received_at >= ? AND account_id != ''`, tenant, since.UTC())
	if err != nil {
		return Result{}, fmt.Errorf("accounts with recent events: %w", err)
	}
	ids, err := rows.Strings()
	if err != nil {
		return Result{}, err
	}
	return e.Evaluate(ctx, tenant, ids, "reconcile", time.Time{})
}

// RunBackfill recomputes every account of tenant, recording its progress
// in the journeys store (after each page) for any replica to report. A
// backfill already running for the tenant is not stopped: both end in the
// same state, as both evaluate at the clock.
func (e *Evaluator) RunBackfill(ctx context.Context, tenant, reason string) (Result, error) {
	bf := journeys.Backfill{Reason: reason, StartedAt: time.Now().UTC()}
	record := func() {
		if err := e.journeys.PutBackfill(ctx, tenant, bf); err != nil {
			e.log.WarnContext(ctx, "record backfill progress", "tenant", tenant, "error", err)
		}
	}
	record()
	ids, err := e.traits.WithEvents(ctx, tenant)
	bf.Total = int64(len(ids))
	var res Result
	if err == nil {
		res, err = e.evaluatePages(ctx, tenant, ids, "backfill", func(n int64) { bf.Done = n; record() })
	}
	bf.Finished, bf.FinishedAt = true, time.Now().UTC()
	if err != nil {
		bf.Err = err.Error()
	}
	record()
	if err != nil {
		e.log.WarnContext(ctx, "backfill failed; the next sweep recomputes the accounts", "tenant", tenant, "reason", reason, "error", err)
	} else {
		e.log.InfoContext(ctx, "backfill done", "tenant", tenant, "reason", reason, "accounts", res.Accounts, "changed", res.Changed, "signals", res.Signals)
	}
	return res, err
}
