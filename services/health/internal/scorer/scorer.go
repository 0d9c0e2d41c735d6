// Package scorer turns stored events into each account's health, cancel
// intent and churn record, as DESIGN.md "Detection" lays out:
//
//  1. The writer's notices name the accounts and the span of event times
//     it stored. The scorer rebuilds those accounts' usage rollups for the
//     days in the span, from the deduplicated events, then scores them from
//     the rollups, a chunk at a time, with a few set-based queries.
//  2. Cancel intent is read from the few events the model's signals match,
//     each messageId once; the matched events are kept in the state so the
//     sweep can decay them without reading events again.
//  3. Transitions (a band change, a drop, cancel intent crossing its
//     threshold, a cancellation request, a churn) are emitted as signals
//     with ids derived from the transition, then the new state is stored.
//  4. A sweep rescores every account from the rollups and stored states,
//     for decay and the passage of time; a new model rescores them all with
//     the same code.
package scorer

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/errgroup"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/pkg/parallel"
	"github.com/stickpoint/stickpoint/pkg/signals"
	"github.com/stickpoint/stickpoint/pkg/specfile"
	signalsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/signals/v1"
	"github.com/stickpoint/stickpoint/services/health/internal/model"
	"github.com/stickpoint/stickpoint/services/health/internal/models"
	"github.com/stickpoint/stickpoint/services/health/internal/score"
)

const scope = "github.com/stickpoint/stickpoint/services/health/internal/scorer"

// ChunkSize is how many accounts one round of queries covers: each query
// costs a few milliseconds whatever its size, so a round of a busy day's
// accounts takes one or two, not a dozen (a backtest's step 15% faster
// than with 1,000).
const ChunkSize = 5000

// pageSize is how many accounts a full rescore or the sweep takes at a
// time (a full rescore scores a page at once).
const pageSize = 10_000

// normsTTL is how long a tenant's norms serve live scoring; the sweep
// refreshes them.
const normsTTL = 30 * time.Second

// State is what the scorer keeps of an account between scores: the
// score's inputs (its health is score.Compute of them at the time it was
// evaluated, see Row.Health), and what the transitions need. Keeping the
// inputs, not the worded components, keeps a row small: a sweep rewrites
// every account's.
type State struct {
	ModelVersion int64     `json:"model_version"`
	FirstEvent   time.Time `json:"first_event"`
	// LastEvent is the latest event's time, kept here so the accounts API
	// need not scan the account's events for it.
	LastEvent  time.Time        `json:"last_event,omitzero"`
	Seats      float64          `json:"seats,omitempty"`
	Usage      score.Usage      `json:"usage"`
	Norms      score.Norms      `json:"norms"`
	Onboarding string           `json:"onboarding,omitempty"`
	Sentiment  *score.Sentiment `json:"sentiment,omitempty"`
	// Hits are the events the cancel-intent signals matched, in the
	// lookback: the sweep decays them without reading events.
	Hits []score.Hit `json:"hits,omitempty"`
	// IntentOver: the cancel intent was at or over the threshold.
	IntentOver bool `json:"intent_over,omitempty"`
	// Peaks are the day's highest scores within changed.within, for the
	// drop rule; DropFrom is the peak a drop signal last fired for.
	Peaks    []Peak    `json:"peaks,omitempty"`
	DropFrom time.Time `json:"drop_from,omitzero"`
	// CancelRequestedAt is the latest cancellation request signalled.
	CancelRequestedAt time.Time `json:"cancel_requested_at,omitzero"`
	Churn             *Churn    `json:"churn,omitempty"`
}

// Equal reports whether two states say the same: each field equal, times
// as instants. A scoring compares the new state with the stored one this
// way to store only what changed, without encoding either (encoding every
// state to compare it was about 3% of a backtest's CPU).
// TestEqualSeesEveryField fails when a field is added and not compared.
func (st State) Equal(o State) bool {
	return st.ModelVersion == o.ModelVersion && st.FirstEvent.Equal(o.FirstEvent) && st.LastEvent.Equal(o.LastEvent) &&
		st.Seats == o.Seats && st.Usage.Equal(o.Usage) && st.Norms == o.Norms && st.Onboarding == o.Onboarding &&
		equalPointers(st.Sentiment, o.Sentiment, score.Sentiment.Equal) && slices.EqualFunc(st.Hits, o.Hits, score.Hit.Equal) &&
		st.IntentOver == o.IntentOver && slices.EqualFunc(st.Peaks, o.Peaks, Peak.Equal) && st.DropFrom.Equal(o.DropFrom) &&
		st.CancelRequestedAt.Equal(o.CancelRequestedAt) && equalPointers(st.Churn, o.Churn, Churn.Equal)
}

// equalPointers: both nil, or both set to equal values.
func equalPointers[T any](a, b *T, equal func(T, T) bool) bool {
	return a == b || (a != nil && b != nil && equal(*a, *b))
}

// Equal reports whether two peaks are the same.
func (p Peak) Equal(o Peak) bool { return p.Day.Equal(o.Day) && p.Score == o.Score }

// Equal reports whether two churns are recorded the same.
func (c Churn) Equal(o Churn) bool {
	return c.At.Equal(o.At) && c.Source == o.Source && c.Reason == o.Reason && c.Fit == o.Fit && c.Foreseen == o.Foreseen &&
		c.FirstRiskKind == o.FirstRiskKind && c.FirstRiskAt.Equal(o.FirstRiskAt)
}

// Inputs are the state's score inputs.
func (st State) Inputs() score.Inputs {
	return score.Inputs{Usage: st.Usage, FirstEvent: st.FirstEvent, Seats: st.Seats, Onboarding: st.Onboarding, Hits: st.Hits, Sentiment: st.Sentiment, Norms: st.Norms}
}

// Peak is a day's highest score.
type Peak struct {
	Day   time.Time `json:"day"`
	Score int       `json:"score"`
}

// Churn is an account's churn, as recorded.
type Churn struct {
	At            time.Time `json:"at"`
	Source        string    `json:"source"`
	Reason        string    `json:"reason,omitempty"`
	Fit           string    `json:"fit"`
	Foreseen      bool      `json:"foreseen"`
	FirstRiskKind string    `json:"first_risk_kind,omitempty"`
	FirstRiskAt   time.Time `json:"first_risk_at,omitzero"`
}

// Scorer scores accounts.
type Scorer struct {
	db     chstore.Store
	models *models.Store
	traits *accounts.Reader
	// store is where scoring reads and writes: db, or a backtest's memory.
	store   Store
	emitter *signals.Emitter
	log     *slog.Logger
	// Now is the clock; tests set it.
	Now func() time.Time
	// OnStored, when set, is called after each round with what it stored:
	// the accounts API's copy in memory follows it (api.Accounts.Stored).
	OnStored func(Stored)
	// Changed tells other replicas' accounts APIs which accounts each
	// round stored; nil tells no one.
	Changed *accounts.Notifier

	mu    sync.Mutex
	norms map[string]cachedNorms
	// trace, when set (benchmarks), adds up the time of each phase.
	trace map[string]time.Duration

	scored   metric.Int64Counter
	emitted  metric.Int64Counter
	duration metric.Float64Histogram
}

type cachedNorms struct {
	norms  score.Norms
	day    time.Time // the day they are for
	at     time.Time
	window time.Duration // the model's window they cover
}

// New returns a scorer over a migrated store.
func New(db chstore.Store, ms *models.Store, emitter *signals.Emitter, log *slog.Logger) (*Scorer, error) {
	traits := accounts.NewReader(db)
	s := &Scorer{db: db, models: ms, traits: traits, store: clickHouse{db: db, traits: traits}, emitter: emitter, log: log, Now: time.Now,
		norms: map[string]cachedNorms{}}
	meter := otel.GetMeterProvider().Meter(scope)
	var err error
	if s.scored, err = meter.Int64Counter("stickpoint.health.accounts.scored",
		metric.WithDescription("Accounts scored, by tenant and trigger (events, sweep, model, sentiment).")); err != nil {
		return nil, err
	}
	if s.emitted, err = meter.Int64Counter("stickpoint.health.signals",
		metric.WithDescription("Signals emitted, by tenant and kind.")); err != nil {
		return nil, err
	}
	if s.duration, err = meter.Float64Histogram("stickpoint.health.scoring.duration",
		metric.WithDescription("Time to score one chunk of up to 5,000 accounts."), metric.WithUnit("s")); err != nil {
		return nil, err
	}
	return s, nil
}

// Stored is what one round stored for a tenant: the rows that changed,
// and the traits it read for every account it scored (Scored).
type Stored struct {
	Tenant string
	Scored []string
	Rows   []Row
	Traits map[string]accounts.Traits
}

// Result counts what a scoring did.
type Result struct {
	Accounts int
	Changed  int
	Signals  int
}

func (r *Result) add(o Result) {
	r.Accounts += o.Accounts
	r.Changed += o.Changed
	r.Signals += o.Signals
}

// Span is the event times a notice stored: the days whose rollups change.
type Span struct{ From, To time.Time }

// Score rebuilds the rollups of the accounts' days in span (none when
// span is zero) and rescores them. trigger labels the metrics.
func (s *Scorer) Score(ctx context.Context, tenant string, ids []string, span Span, trigger string) (Result, error) {
	// Every chunk's rollups first: the tenant's norms read them, so that
	// no chunk is scored against norms that miss the others' new days.
	for chunk := range slices.Chunk(ids, ChunkSize) {
		if span.From.IsZero() {
			break
		}
		began := time.Now()
		if err := s.store.RebuildUsage(ctx, tenant, accountSet{ids: chunk}, span.From, span.To); err != nil {
			return Result{}, err
		}
		if s.trace != nil {
			s.trace["rebuild"] += time.Since(began)
		}
	}
	return s.scoreChunks(ctx, tenant, ids, trigger, true)
}

// scoreChunks scores the accounts a chunk at a time.
func (s *Scorer) scoreChunks(ctx context.Context, tenant string, ids []string, trigger string, withEvents bool) (Result, error) {
	var total Result
	for chunk := range slices.Chunk(ids, ChunkSize) {
		r, err := s.score(ctx, tenant, accountSet{ids: chunk}, trigger, withEvents)
		total.add(r)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// Sweep rescores the scored accounts of the tenants that time or the
// tenant's norms can have moved since they were last scored, from the
// rollups and the stored states, without reading events: decay, expiry
// and moving windows. An account's health is a function of its inputs and
// the day (the windows are whole days; the norms are over the days before
// today), except for its decaying cancel-intent events and an expiring CSM
// sentiment. So the sweep takes the accounts last scored before today,
// those with cancel-intent events or a sentiment, and those scored with
// other norms or another model version: the rest would score the same.
func (s *Scorer) Sweep(ctx context.Context, tenants []string) (Result, error) {
	var total Result
	for _, t := range tenants {
		s.mu.Lock()
		delete(s.norms, t)
		s.mu.Unlock()
		stored, err := s.models.Get(ctx, t)
		if err != nil {
			return total, err
		}
		today := s.Now().UTC().Truncate(specfile.Day)
		norms, err := s.tenantNorms(ctx, t, today, stored.Spec.Health.Window)
		if err != nil {
			return total, err
		}
		after := ""
		for {
			page, err := s.store.Movable(ctx, t, after, today, norms, stored.Version, pageSize)
			if err != nil || len(page) == 0 {
				if err != nil {
					return total, err
				}
				break
			}
			r, err := s.scoreChunks(ctx, t, page, "sweep", false)
			total.add(r)
			if err != nil {
				return total, err
			}
			after = page[len(page)-1]
		}
	}
	return total, nil
}

// RescoreAll rescores every account of tenant: after a model change. The
// rollups do not depend on the model, so they are not rebuilt.
func (s *Scorer) RescoreAll(ctx context.Context, tenant, trigger string) (Result, error) {
	return s.ScoreAll(ctx, tenant, trigger)
}

// Backfill rebuilds the tenant's rollups from all its events and rescores
// every account, when it has events but no rollups: events stored before
// the health service first ran. It reports whether it ran.
func (s *Scorer) Backfill(ctx context.Context, tenant string) (bool, error) {
	rows, err := s.db.Query(ctx, `SELECT (SELECT count() FROM (SELECT 1 FROM account_day_usage WHERE tenant_id = ? LIMIT 1)),
		(SELECT count() FROM (SELECT 1 FROM events WHERE tenant_id = ? AND type IN ('track', 'page', 'screen') LIMIT 1))`, tenant, tenant)
	if err != nil {
		return false, fmt.Errorf("look for rollups: %w", err)
	}
	var rollups, evs uint64
	for rows.Next() {
		if err := rows.Scan(&rollups, &evs); err != nil {
			return false, err
		}
	}
	if rollups > 0 || evs == 0 {
		return false, nil
	}
	if err := s.RebuildAll(ctx, tenant); err != nil {
		return false, err
	}
	_, err = s.ScoreAll(ctx, tenant, "backfill")
	return true, err
}

// RebuildAll rebuilds the usage rollups of every account of tenant from
// all its events, a page of accounts (a range of the sort key) at a time.
func (s *Scorer) RebuildAll(ctx context.Context, tenant string) error {
	ids, err := s.traits.WithEvents(ctx, tenant)
	if err != nil {
		return err
	}
	for page := range slices.Chunk(ids, pageSize) {
		if err := rebuildUsage(ctx, s.db, tenant, accountSet{ids: page, contiguous: true}, time.Unix(0, 0), s.Now()); err != nil {
			return err
		}
	}
	return nil
}

// ScoreAll rescores every account of tenant that has events, from the
// rollups and the events its rules match.
func (s *Scorer) ScoreAll(ctx context.Context, tenant, trigger string) (Result, error) {
	var total Result
	err := s.eachPage(ctx, tenant, func(set accountSet) error {
		r, err := s.score(ctx, tenant, set, trigger, true)
		total.add(r)
		return err
	})
	return total, err
}

// eachPage calls f with each page of the tenant's accounts with usage or
// traits, from the rollups and account_traits (tens of times fewer rows to
// page through than the events).
func (s *Scorer) eachPage(ctx context.Context, tenant string, f func(accountSet) error) error {
	after := ""
	for {
		q, args := `SELECT account_id FROM (
				SELECT account_id FROM (SELECT DISTINCT account_id FROM account_day_usage WHERE tenant_id = ? AND account_id > ? ORDER BY account_id LIMIT ?)
				UNION ALL
				SELECT account_id FROM (SELECT DISTINCT account_id FROM account_traits WHERE tenant_id = ? AND account_id > ? ORDER BY account_id LIMIT ?))
			GROUP BY account_id ORDER BY account_id LIMIT ?`, []any{tenant, after, pageSize, tenant, after, pageSize, pageSize}
		rows, err := s.db.Query(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("list accounts: %w", err)
		}
		page, err := rows.Strings()
		if err != nil || len(page) == 0 {
			return err
		}
		if err := f(accountSet{ids: page, contiguous: true}); err != nil {
			return err
		}
		after = page[len(page)-1]
	}
}

// tenantNorms are the tenant's norms for today: its median active account
// over the window's days before today. They move only with events stored
// for past days (late or imported), so a day's scores share them; the
// cache keeps them normsTTL, and the sweep rereads them.
func (s *Scorer) tenantNorms(ctx context.Context, tenant string, today time.Time, window time.Duration) (score.Norms, error) {
	s.mu.Lock()
	c, ok := s.norms[tenant]
	s.mu.Unlock()
	if ok && c.day.Equal(today) && c.window == window && s.Now().Sub(c.at) < normsTTL {
		return c.norms, nil
	}
	n, err := s.store.Norms(ctx, tenant, today.Add(-window), today)
	if err != nil {
		return n, err
	}
	s.mu.Lock()
	s.norms[tenant] = cachedNorms{norms: n, day: today, at: s.Now(), window: window}
	s.mu.Unlock()
	return n, nil
}

// lookback is how far back cancel-intent events still count: eight
// half-lives of the slowest signal leave under 0.4% of its weight.
func lookback(m model.Model) time.Duration {
	var longest time.Duration
	for _, sig := range m.CancelIntent.Signals {
		longest = max(longest, sig.HalfLife)
	}
	return max(8*longest, m.Health.Window)
}

// score scores one set of accounts; withEvents reads their cancel-intent
// and churn events (a notice or a model change), else the stored hits
// serve (the sweep).
func (s *Scorer) score(ctx context.Context, tenant string, set accountSet, trigger string, withEvents bool) (Result, error) {
	began := time.Now()
	stored, err := s.models.Get(ctx, tenant)
	if err != nil {
		return Result{}, err
	}
	m := stored.Spec
	// Whole seconds, as stored: Row.Health recomputes at the stored time.
	now := s.Now().UTC().Truncate(time.Second)
	today := now.Truncate(specfile.Day)
	spans := score.SpansOf(m.Health, now)

	lapAt := time.Now()
	lap := func(phase string) {
		if s.trace != nil {
			s.trace[phase] += time.Since(lapAt)
		}
		lapAt = time.Now()
	}
	prevRows, err := s.store.Rows(ctx, tenant, set)
	if err != nil {
		return Result{}, err
	}
	// Pointers into prevRows: a Row is large, and three copies of each (the
	// map's, the outcome's, the changed slice's) were 8% of what a
	// backtest allocated.
	prev := make(map[string]*Row, len(prevRows))
	for i := range prevRows {
		prev[prevRows[i].AccountID] = &prevRows[i]
	}
	ids := set.ids
	if len(ids) == 0 {
		return Result{}, nil
	}
	lap("rows")
	// The reads below are independent: they run at once,
	// chstore.ReadsInFlight at a time.
	var (
		usage      map[string]score.Usage
		norms      score.Norms
		traits     map[string]accounts.Traits
		onboarding map[string]string
		sentiments map[string]*score.Sentiment
		evs        map[string][]event
		activity   map[string][2]time.Time
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(chstore.ReadsInFlight)
	g.Go(func() (err error) {
		usage, err = s.store.Usage(gctx, tenant, set, spans, m.Health.KeyFeatures)
		return err
	})
	g.Go(func() (err error) { norms, err = s.tenantNorms(gctx, tenant, today, m.Health.Window); return err })
	g.Go(func() (err error) { traits, err = s.store.Traits(gctx, tenant, set); return err })
	g.Go(func() (err error) { onboarding, err = s.store.Onboarding(gctx, tenant, set); return err })
	g.Go(func() (err error) { sentiments, err = s.store.Sentiment(gctx, tenant, set); return err })
	if withEvents {
		g.Go(func() error {
			all, err := s.store.RuleEvents(gctx, tenant, set, m, now.Add(-lookback(m)), now)
			if err != nil {
				return err
			}
			evs = map[string][]event{}
			for _, e := range all {
				evs[e.account] = append(evs[e.account], e)
			}
			return nil
		})
		g.Go(func() (err error) { activity, err = s.store.EventSpans(gctx, tenant, set); return err })
	}
	if err := g.Wait(); err != nil {
		return Result{}, err
	}
	lap("reads")
	// Each account is scored on its own, from what was read above, on
	// every core. What changed is gathered after, in the accounts' order:
	// what is stored and signalled doesn't depend on the order they ran in.
	type outcome struct {
		sigs []*signalsv1.Signal
		// changed: the row stores something new; churned: it churned in
		// this round; foreseenLate: a churn scored before became foreseen.
		changed, churned, foreseenLate bool
	}
	outs := make([]outcome, len(ids))
	rows := make([]Row, len(ids)) // by index in ids, as outs
	read := m.TraitsRead()
	parallel.For(len(ids), parallel.Accounts, func(i int) {
		id := ids[i]
		var out outcome
		old := prev[id]
		seen := old != nil
		tr := traits[id].ValuesOf(read)
		st := State{ModelVersion: stored.Version, Seats: number(tr[m.Health.SeatsTrait]), Usage: usage[id], Norms: norms,
			Onboarding: onboarding[id], Sentiment: sentiments[id]}
		if seen {
			st.FirstEvent, st.LastEvent = old.State.FirstEvent, old.State.LastEvent
			st.Hits, st.Peaks, st.DropFrom = hitsSince(old.State.Hits, now.Add(-lookback(m))), old.State.Peaks, old.State.DropFrom
			st.CancelRequestedAt, st.Churn = old.State.CancelRequestedAt, old.State.Churn
		}
		var requests []score.Hit
		var churnEvent *event
		if withEvents {
			st.FirstEvent, st.LastEvent = activity[id][0], activity[id][1]
			st.Hits, requests, churnEvent = classify(m, evs[id])
		}
		h := score.Compute(m, st.Inputs(), now)
		st.IntentOver = h.Intent.Over()
		row := Row{AccountID: id, Score: h.Score, Band: h.Band, Fit: m.Fit.FitOf(tr), Onboarding: onboarding[id],
			Intent: h.Intent.Score, EvaluatedAt: now, Version: version(), health: &h}
		st.Peaks = peaks(st.Peaks, today, h.Score, m.Health.ChangedWithin)
		row.Change = h.Score - st.Peaks[0].Score // against the oldest day kept
		row.AtRisk = len(AtRiskBecause(row.Band, h.Intent.Over(), row.Onboarding)) > 0

		out.sigs = s.transitions(tenant, id, m, old, &st, h, now)
		for _, r := range requests {
			if r.At.After(st.CancelRequestedAt) {
				out.sigs = append(out.sigs, requestSignal(tenant, id, h.Intent, r, now))
			}
		}
		for _, r := range requests {
			st.CancelRequestedAt = maxTime(st.CancelRequestedAt, r.At)
		}
		if st.Churn == nil {
			if c := churnOf(m, churnEvent, traits[id]); c != nil {
				c.Fit = row.Fit
				st.Churn = c
				out.churned = true
			}
		} else if !st.Churn.Foreseen {
			// Writers store events out of their order: a churn scored
			// before the events that foresaw it is foreseen once their
			// risk signal comes, and its record is written again.
			if sig := firstRisk(out.sigs, st.Churn.At); sig != nil {
				c := *st.Churn
				c.Foreseen, c.FirstRiskKind, c.FirstRiskAt = true, sig.GetKind(), sig.GetOccurredAt().AsTime()
				st.Churn = &c
				out.foreseenLate = true
			}
		}
		if st.Churn != nil {
			row.ChurnedAt = st.Churn.At
		}
		for _, sig := range out.sigs {
			sig.Account = signals.Snapshot(traits[id], row.Fit, row.Band)
		}
		row.State = st
		row.scoreChanged = !seen || old.Score != row.Score || old.Band != row.Band || old.Intent != row.Intent
		out.changed = !seen || row.scoreChanged || !sameRow(old, &row)
		rows[i], outs[i] = row, out
	})
	lap("compute")
	var sigs []*signalsv1.Signal
	var churned []Row
	foreseenLate := false // a churn scored before became foreseen
	n := 0                // the changed rows are moved to the front of rows
	for i, o := range outs {
		sigs = append(sigs, o.sigs...)
		if o.churned {
			churned = append(churned, rows[i])
		}
		foreseenLate = foreseenLate || o.foreseenLate
		if o.changed {
			rows[n] = rows[i]
			n++
		}
	}
	changed := rows[:n]
	if err := s.emit(ctx, tenant, sigs); err != nil {
		return Result{}, err
	}
	// Churns are classified after this round's risk signals are stored, so
	// a risk seen in the same round as the churn counts if it came first.
	if len(churned) > 0 || foreseenLate {
		var churnSigs []*signalsv1.Signal
		for i := range changed {
			c := changed[i].State.Churn
			if c == nil || !slices.ContainsFunc(churned, func(r Row) bool { return r.AccountID == changed[i].AccountID }) {
				continue
			}
			if err := s.classify(ctx, tenant, changed[i].AccountID, c); err != nil {
				return Result{}, err
			}
			sig := churnSignal(tenant, changed[i].AccountID, c, now)
			sig.Account = signals.Snapshot(traits[changed[i].AccountID], changed[i].Fit, changed[i].Band)
			churnSigs = append(churnSigs, sig)
		}
		if err := s.emit(ctx, tenant, churnSigs); err != nil {
			return Result{}, err
		}
		if err := s.store.PutChurns(ctx, tenant, changed, now); err != nil {
			return Result{}, err
		}
		sigs = append(sigs, churnSigs...)
	}
	lap("emit+churn")
	if err := s.store.Put(ctx, tenant, changed); err != nil {
		return Result{}, err
	}
	if s.OnStored != nil {
		s.OnStored(Stored{Tenant: tenant, Scored: ids, Rows: changed, Traits: traits})
	}
	if err := s.Changed.Changed(tenant, ids); err != nil {
		s.log.WarnContext(ctx, "could not tell the other replicas which accounts changed", "tenant", tenant, "error", err)
	}
	lap("insert")
	s.duration.Record(ctx, time.Since(began).Seconds())
	s.scored.Add(ctx, int64(len(ids)), metric.WithAttributes(attribute.String("tenant", tenant), attribute.String("trigger", trigger)))
	return Result{Accounts: len(ids), Changed: len(changed), Signals: len(sigs)}, nil
}

// SignalRequests signals the cancellation requests among a tenant's
// events as they arrive on EVENTS, before they are stored: the immediate
// path, apart from scoring. It is best effort: an event without an
// account yet (attributed by the writer), or one the writer stored and
// purged before this path read it, is signalled by the scorer instead,
// which keeps the exactly-once bookkeeping. Both derive the signal's id
// from the messageId, so the second is the same message, dropped as a
// duplicate.
func (s *Scorer) SignalRequests(ctx context.Context, tenant string, evs []events.Event) (int, error) {
	stored, err := s.models.Get(ctx, tenant)
	if err != nil {
		return 0, err
	}
	match := stored.Spec.CancelIntent.CancellationRequested
	now := s.Now().UTC()
	var sigs []*signalsv1.Signal
	for _, e := range evs {
		if e.AccountID == "" || e.Timestamp.After(now) || (match.Event != "" && e.Name != match.Event) || (match.Type != "" && e.Type != match.Type) {
			continue
		}
		ev := event{account: e.AccountID, messageID: e.MessageID, typ: e.Type, name: e.Name, user: e.UserID, at: e.Timestamp}
		if len(match.Where) > 0 && len(e.Properties) > 0 {
			_ = json.Unmarshal(e.Properties, &ev.props) // properties were checked as JSON at ingest
		}
		if matchesEvent(match, ev) {
			sigs = append(sigs, requestSignal(tenant, ev.account, score.Intent{Threshold: stored.Spec.CancelIntent.Threshold},
				score.Hit{Signal: "cancellation_requested", At: ev.at, User: ev.user, MessageID: ev.messageID}, now))
		}
	}
	// Published only: the scorer emits (and records) each request again,
	// with the same id, once the writer has stored it.
	if _, err := s.emitter.Publish(ctx, sigs); err != nil {
		return 0, err
	}
	for _, sig := range sigs {
		s.emitted.Add(ctx, 1, metric.WithAttributes(attribute.String("tenant", tenant), attribute.String("kind", sig.GetKind())))
	}
	return len(sigs), nil
}

// AtRiskBecause says why an account is at risk: band red, cancel intent
// over the threshold, onboarding late or stalled. Empty when it is not.
func AtRiskBecause(band string, intentOver bool, onboarding string) []string {
	var out []string
	if band == model.Red {
		out = append(out, "health red")
	}
	if intentOver {
		out = append(out, "cancel intent")
	}
	if onboarding == "late" || onboarding == "stalled" {
		out = append(out, "onboarding "+onboarding)
	}
	return out
}

func (s *Scorer) emit(ctx context.Context, tenant string, sigs []*signalsv1.Signal) error {
	if len(sigs) == 0 {
		return nil
	}
	if err := s.emitter.Emit(ctx, sigs); err != nil {
		return err
	}
	for _, sig := range sigs {
		s.emitted.Add(ctx, 1, metric.WithAttributes(attribute.String("tenant", tenant), attribute.String("kind", sig.GetKind())))
	}
	return nil
}

// classify sorts an account's events into cancel-intent hits, the
// cancellation requests, and its first churn event.
func classify(m model.Model, evs []event) (hits, requests []score.Hit, churn *event) {
	for i, e := range evs {
		for _, sig := range m.CancelIntent.Signals {
			if sig.Match != nil && matchesEvent(*sig.Match, e) {
				hits = append(hits, score.Hit{Signal: sig.ID, At: e.at, User: e.user, MessageID: e.messageID})
			}
		}
		if matchesEvent(m.CancelIntent.CancellationRequested, e) {
			requests = append(requests, score.Hit{Signal: "cancellation_requested", At: e.at, User: e.user, MessageID: e.messageID})
		}
		if e.typ == "track" && e.name == m.Churn.Event && (churn == nil || e.at.Before(churn.at)) {
			churn = &evs[i]
		}
	}
	slices.SortFunc(hits, func(a, b score.Hit) int { return a.At.Compare(b.At) })
	return hits, requests, churn
}

// churnOf is the account's churn, by the churn event or the trait.
func churnOf(m model.Model, e *event, raw accounts.Traits) *Churn {
	if e != nil {
		c := &Churn{At: e.at, Source: "event"}
		if r, ok := e.props[m.Churn.ReasonProperty].(string); ok {
			c.Reason = r
		}
		return c
	}
	if m.Churn.TraitName == "" || raw.Text(m.Churn.TraitName) != m.Churn.TraitValue {
		return nil
	}
	return &Churn{Source: "trait", Reason: raw.Text(m.Churn.ReasonProperty)}
}

// firstRisk is the earliest risk signal of sigs that occurred at or
// before t, or nil.
func firstRisk(sigs []*signalsv1.Signal, t time.Time) *signalsv1.Signal {
	var out *signalsv1.Signal
	for _, sig := range sigs {
		at := sig.GetOccurredAt().AsTime()
		if slices.Contains(riskKinds, sig.GetKind()) && !at.After(t) && (out == nil || at.Before(out.GetOccurredAt().AsTime())) {
			out = sig
		}
	}
	return out
}

// riskKinds are the signals that foresee a churn.
var riskKinds = []string{"onboarding_late", "onboarding_stalled", KindHealthRed, KindCancelIntent}

// classify finds the first risk signal before the churn. A churn by trait
// takes its time from the group call that set it.
func (s *Scorer) classify(ctx context.Context, tenant, account string, c *Churn) error {
	if c.At.IsZero() {
		at, err := s.store.FirstTraitsAt(ctx, tenant, account)
		if err != nil {
			return err
		}
		c.At = at
		if c.At.IsZero() {
			c.At = s.Now().UTC()
		}
	}
	kind, at, err := s.store.FirstRisk(ctx, tenant, account, c.At)
	if err != nil {
		return err
	}
	if kind != "" {
		c.FirstRiskKind, c.FirstRiskAt, c.Foreseen = kind, at, true
	}
	return nil
}

// ForeseeFromSignals sets each churn's first risk from the stored signals:
// the earliest risk signal at or before it. A churn is classified when it
// is scored, and a risk signal stored after that (the milestone service's
// onboarding signals of a journey put later, or a writer storing the
// account's events out of their order) can still come first in event
// time. The report reads them, so that it does not depend on the order
// the services processed the events in. churns are by account.
func ForeseeFromSignals(ctx context.Context, db chstore.Store, tenant string, churns map[string][]*Churn) error {
	ids := make([]string, 0, len(churns))
	for id := range churns {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for chunk := range slices.Chunk(ids, ChunkSize) {
		rows, err := db.Query(ctx, `SELECT account_id, kind, min(occurred_at) AS at FROM signals
			WHERE tenant_id = ? AND account_id IN ? AND kind IN ? GROUP BY account_id, kind ORDER BY account_id, at, kind`,
			tenant, chstore.In(chunk), chstore.In(riskKinds))
		if err != nil {
			return fmt.Errorf("read risk signals: %w", err)
		}
		for rows.Next() {
			var id, kind string
			var at time.Time
			if err := rows.Scan(&id, &kind, &at); err != nil {
				return err
			}
			for _, c := range churns[id] {
				if at.After(c.At) || (c.Foreseen && !at.Before(c.FirstRiskAt)) {
					continue
				}
				c.Foreseen, c.FirstRiskKind, c.FirstRiskAt = true, kind, at
			}
		}
	}
	return nil
}

func insertChurns(ctx context.Context, db chstore.Store, tenant string, rows []Row, now time.Time) error {
	var out [][]any
	for _, r := range rows {
		c := r.State.Churn
		if c == nil || c.At.IsZero() {
			continue
		}
		lead := int64(0)
		if c.Foreseen {
			lead = int64(c.At.Sub(c.FirstRiskAt).Seconds())
		}
		out = append(out, []any{tenant, r.AccountID, c.At.UTC(), c.Source, c.Reason, c.Fit, c.Foreseen, c.FirstRiskKind, c.FirstRiskAt.UTC(), lead, now})
	}
	if len(out) == 0 {
		return nil
	}
	if err := db.Insert(ctx, "churn_records", []string{"tenant_id", "account_id", "churned_at", "source", "reason", "fit", "foreseen", "first_risk_kind", "first_risk_at", "lead_seconds", "recorded_at"}, out); err != nil {
		return fmt.Errorf("store churn records: %w", err)
	}
	return nil
}

// peaks keeps each day's highest score within the last within.
func peaks(ps []Peak, today time.Time, score int, within time.Duration) []Peak {
	var out []Peak
	for _, p := range ps {
		if !p.Day.Before(today.Add(-within)) {
			out = append(out, p)
		}
	}
	if n := len(out); n > 0 && out[n-1].Day.Equal(today) {
		out[n-1].Score = max(out[n-1].Score, score)
	} else {
		out = append(out, Peak{Day: today, Score: score})
	}
	return out
}

// hitsSince drops the hits before from: past the lookback, as the events
// path reads them (and the sweep stops taking the account for them).
func hitsSince(hits []score.Hit, from time.Time) []score.Hit {
	var out []score.Hit
	for _, h := range hits {
		if !h.At.Before(from) {
			out = append(out, h)
		}
	}
	return out
}

func highest(ps []Peak) Peak {
	h := ps[0]
	for _, p := range ps[1:] {
		if p.Score > h.Score {
			h = p
		}
	}
	return h
}

// sameRow reports whether b would store nothing new over a.
func sameRow(a, b *Row) bool {
	return a.Band == b.Band && a.Fit == b.Fit && a.Onboarding == b.Onboarding && a.Intent == b.Intent && a.AtRisk == b.AtRisk &&
		a.Change == b.Change && a.ChurnedAt.Equal(b.ChurnedAt) && a.State.Equal(b.State)
}

var lastVersion atomic.Uint64

// version is a row version: the clock in nanoseconds, rising strictly
// within the process, so a later score of an account always wins.
func version() uint64 {
	for {
		last, now := lastVersion.Load(), uint64(time.Now().UnixNano())
		if now <= last {
			now = last + 1
		}
		if lastVersion.CompareAndSwap(last, now) {
			return now
		}
	}
}

// number reads a trait holding a number, or a number as text.
func number(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case string:
		f, err := strconv.ParseFloat(x, 64)
		if err == nil && !math.IsNaN(f) {
			return f
		}
	}
	return 0
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
