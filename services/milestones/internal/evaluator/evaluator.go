// Package evaluator turns stored events into each account's onboarding
// state and signals, as DESIGN.md "Detection" lays out:
//
//  1. The writer's notices name the accounts it stored events for; the
//     evaluator recomputes them a chunk at a time, with a few set-based
//     queries per tenant (account_id IN (...)).
//  2. The state is progress.Evaluate of the stored events up to now, each
//     messageId once, so a redelivered, re-sent or late event gives the
//     same answer as one that came in order.
//  3. The new state is compared with the stored one; each transition is
//     emitted as a signal whose id is derived from the transition itself,
//     then the new state is stored. A crash between the two emits the same
//     signal ids again, which the stream and the signals table drop.
//  4. A sweep re-evaluates every account on a schedule (an account stalls
//     by sending nothing), and a new journey version backfills the
//     tenant's accounts with the same code.
package evaluator

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/parallel"
	"github.com/stickpoint/stickpoint/pkg/signals"
	"github.com/stickpoint/stickpoint/pkg/specfile"
	signalsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/signals/v1"
	"github.com/stickpoint/stickpoint/services/milestones/internal/journey"
	"github.com/stickpoint/stickpoint/services/milestones/internal/journeys"
	"github.com/stickpoint/stickpoint/services/milestones/internal/progress"
)

const scope = "github.com/stickpoint/stickpoint/services/milestones/internal/evaluator"

// ChunkSize is how many accounts one round of queries covers. A round's
// queries cost a few milliseconds each whatever its size (a long id list
// is bound as one string), so a busy moment's accounts take one or two
// rounds, not a dozen: a backtest of 300,000 events in 5,000 accounts at
// --step 1d took 90 s instead of 143 s with 1,000.
const ChunkSize = 5000

// Evaluator evaluates accounts.
type Evaluator struct {
	db       chstore.Store
	journeys *journeys.Store
	traits   *accounts.Reader
	// store is where rounds read and write: db, or a backtest's memory.
	store   Store
	emitter *signals.Emitter
	log     *slog.Logger
	// Now is the clock; tests set it.
	Now func() time.Time
	// Changed tells the accounts API which accounts' onboarding each store
	// changed (its Get keeps accounts in memory); nil tells no one.
	Changed *accounts.Notifier
	// pageSize is defaultPageSize; tests make it small, to have many pages.
	pageSize int

	evaluated   metric.Int64Counter
	transitions metric.Int64Counter
	duration    metric.Float64Histogram
}

// New returns an evaluator over a migrated store.
func New(db chstore.Store, js *journeys.Store, emitter *signals.Emitter, log *slog.Logger) (*Evaluator, error) {
	traits := accounts.NewReader(db)
	e := &Evaluator{db: db, journeys: js, traits: traits, store: clickHouse{db: db, traits: traits}, emitter: emitter, log: log,
		Now: time.Now, pageSize: defaultPageSize}
	meter := otel.GetMeterProvider().Meter(scope)
	var err error
	if e.evaluated, err = meter.Int64Counter("stickpoint.milestones.accounts.evaluated",
		metric.WithDescription("Accounts evaluated, by tenant and trigger (events, sweep, backfill).")); err != nil {
		return nil, err
	}
	if e.transitions, err = meter.Int64Counter("stickpoint.milestones.signals",
		metric.WithDescription("Signals emitted, by tenant and kind.")); err != nil {
		return nil, err
	}
	if e.duration, err = meter.Float64Histogram("stickpoint.milestones.evaluation.duration",
		metric.WithDescription("Time to evaluate one chunk of up to 5,000 accounts."), metric.WithUnit("s")); err != nil {
		return nil, err
	}
	return e, nil
}

// Result counts what an evaluation did.
type Result struct {
	Accounts int // evaluated
	Changed  int // whose stored state changed
	Signals  int // emitted
}

func (r *Result) add(o Result) {
	r.Accounts += o.Accounts
	r.Changed += o.Changed
	r.Signals += o.Signals
}

// Evaluate recomputes the given accounts of tenant at the evaluator's
// clock, emits their transitions and stores their new state. trigger
// labels the metrics. since is the earliest event time stored since their
// last evaluation (a notice's From): a milestone reached before it stays
// reached at that time, so its events are not read again. The zero time
// reads everything.
func (e *Evaluator) Evaluate(ctx context.Context, tenant string, ids []string, trigger string, since time.Time) (Result, error) {
	var total Result
	for chunk := range slices.Chunk(ids, ChunkSize) {
		r, err := e.evaluate(ctx, tenant, accountSet{ids: chunk}, trigger, since)
		total.add(r)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// accountSet is the accounts one round of queries covers: a list, or a
// page of the tenant's accounts in order (contiguous), which the queries
// select by the range it spans: a primary-key range, and no list to send.
type accountSet struct {
	ids        []string
	contiguous bool
	// oneThread marks a page of a backfill, which evaluates pagesInFlight
	// pages at once: its milestone read runs on one thread, so the pages'
	// reads share the cores between them instead of each also starting a
	// thread per core. With ClickHouse's default (a thread per core) the
	// threads outnumber the cores: a backfill of 100 million events took
	// 31.4 s and 33.8 s (61.7 s and 64.7 s of CPU), against 28.2-28.9 s
	// (55.2-56.5 s of CPU) on one thread each, runs alternated in one
	// process.
	oneThread bool
}

// where is the SQL condition selecting the set, and its args.
func (s accountSet) where() (string, []any) {
	if s.contiguous {
		return "account_id >= ? AND account_id <= ?", []any{s.ids[0], s.ids[len(s.ids)-1]}
	}
	return "account_id IN ?", []any{chstore.In(s.ids)}
}

func (e *Evaluator) evaluate(ctx context.Context, tenant string, set accountSet, trigger string, since time.Time) (Result, error) {
	js, err := e.journeys.List(ctx, tenant)
	if err != nil {
		return Result{}, err
	}
	began := time.Now()
	r, err := e.evaluateChunk(ctx, tenant, set, js, e.Now().UTC(), since)
	if err != nil {
		return r, err
	}
	e.duration.Record(ctx, time.Since(began).Seconds())
	e.evaluated.Add(ctx, int64(r.Accounts), metric.WithAttributes(attribute.String("tenant", tenant), attribute.String("trigger", trigger)))
	return r, nil
}

func (e *Evaluator) evaluateChunk(ctx context.Context, tenant string, set accountSet, js []journeys.Stored, now, since time.Time) (Result, error) {
	var traits map[string]accounts.Traits
	var prevRows []Row
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { traits, err = e.store.Traits(gctx, tenant, set); return err })
	g.Go(func() (err error) { prevRows, err = e.store.Rows(gctx, tenant, set); return err })
	if err := g.Wait(); err != nil {
		return Result{}, err
	}
	prev := make(map[string]Row, len(prevRows))
	for _, r := range prevRows {
		prev[r.AccountID] = r
	}
	firsts, err := e.store.FirstEvents(ctx, tenant, set)
	if err != nil {
		return Result{}, err
	}
	present := make([]string, 0, len(firsts))
	for _, id := range set.ids {
		if _, ok := firsts[id]; ok {
			present = append(present, id)
		}
	}
	if len(present) == 0 {
		return Result{}, nil
	}
	// Each account's journey, and the event names its unsettled
	// milestones need.
	type plan struct {
		j       *journeys.Stored
		settled map[string]progress.Milestone
	}
	plans := make([]plan, len(present)) // by index in present; no journey when j is nil
	parallel.For(len(present), parallel.Accounts, func(i int) {
		if j := pick(js, traits[present[i]]); j != nil {
			plans[i] = plan{j: j, settled: settled(prev[present[i]], j, since)}
		}
	})
	need := map[string][]string{} // event name -> accounts
	for i, id := range present {
		p := plans[i]
		if p.j == nil {
			continue
		}
		var names []string
		for _, m := range p.j.Journey.Milestones {
			if _, ok := p.settled[m.ID]; !ok && !slices.Contains(names, m.Event) {
				names = append(names, m.Event)
				need[m.Event] = append(need[m.Event], id)
			}
		}
	}
	if set.contiguous { // the range serves every account that needs events
		for name := range need {
			need[name] = set.ids
		}
	}
	evs, err := e.store.MilestoneEvents(ctx, tenant, accountSetsOf(need, set), js, now)
	if err != nil {
		return Result{}, err
	}
	res := Result{Accounts: len(present)}
	// Each account is evaluated on its own, from what was read above, on
	// every core. What changed is gathered after, in the accounts' order:
	// what is stored and signalled doesn't depend on the order they ran in.
	type outcome struct {
		row     Row
		changed bool
		sigs    []*signalsv1.Signal
	}
	outs := make([]outcome, len(present))
	parallel.For(len(present), parallel.Accounts, func(i int) {
		id := present[i]
		tr := traits[id]
		row := Row{AccountID: id, FirstEventAt: firsts[id], EvaluatedAt: now}
		p := plans[i]
		follows := p.j != nil
		startTrait := journey.DefaultStart
		if follows {
			startTrait = p.j.Journey.Start
		}
		row.Start = startOf(tr, startTrait, firsts[id])
		if follows {
			st := progress.Evaluate(p.j.Journey, p.j.Version, row.Start, evs[id], now, p.settled)
			row.State, row.JourneyID, row.Status, row.due = &st, p.j.ID, st.Status, e.dueOf(p.j.Journey, st, now)
		}
		old, seen := prev[id]
		if seen && sameRow(&old, &row) {
			return
		}
		out := outcome{row: row, changed: true}
		if row.State != nil {
			var oldState *progress.State
			if seen {
				oldState = old.State
			}
			var snap *signalsv1.AccountSnapshot // the account's signals share one: it is only read
			for _, t := range progress.Transitions(oldState, *row.State) {
				if snap == nil {
					snap = signals.Snapshot(tr, "", "") // read above: the emitter needn't read them again
				}
				sig := signalOf(tenant, id, p.j, *row.State, oldState, t, now)
				sig.Account = snap
				out.sigs = append(out.sigs, sig)
			}
		}
		outs[i] = out
	})
	var sigs []*signalsv1.Signal
	var changed []Row
	for _, o := range outs {
		if o.changed {
			changed = append(changed, o.row)
			sigs = append(sigs, o.sigs...)
		}
	}
	if err := e.emit(ctx, tenant, sigs); err != nil {
		return Result{}, err
	}
	if err := e.put(ctx, tenant, changed); err != nil {
		return Result{}, err
	}
	res.Changed, res.Signals = len(changed), len(sigs)
	return res, nil
}

// put stores the accounts' new evaluations and says so on
// accounts.changed.
func (e *Evaluator) put(ctx context.Context, tenant string, rows []Row) error {
	if err := e.store.Put(ctx, tenant, rows); err != nil {
		return err
	}
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.AccountID
	}
	if err := e.Changed.Changed(tenant, ids); err != nil {
		e.log.WarnContext(ctx, "could not tell the accounts API which accounts changed", "tenant", tenant, "error", err)
	}
	return nil
}

// emit publishes and records signals. Callers emit before they store the
// new states: a crash between the two re-emits the same ids.
func (e *Evaluator) emit(ctx context.Context, tenant string, sigs []*signalsv1.Signal) error {
	if err := e.emitter.Emit(ctx, sigs); err != nil {
		return err
	}
	// Counted by kind, then added once per kind: a backfill emits hundreds
	// of thousands, and each Add builds its attribute set.
	byKind := map[string]int64{}
	for _, s := range sigs {
		byKind[s.GetKind()]++
	}
	for kind, n := range byKind {
		e.transitions.Add(ctx, n, metric.WithAttributes(attribute.String("tenant", tenant), attribute.String("kind", kind)))
	}
	return nil
}

// dueOf is when st's status can next move by the clock alone, for a
// row's due: far in the future when it never can. Only the memory store
// keeps it (account_onboarding has no column for it), so with ClickHouse
// it is not worked out: zero, unknown.
func (e *Evaluator) dueOf(j journey.Journey, st progress.State, now time.Time) time.Time {
	if _, kept := e.store.(*Memory); !kept {
		return time.Time{}
	}
	if at := progress.NextChange(j, st, now); !at.IsZero() {
		return at
	}
	return never
}

var never = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)

// settled is the milestones of an account's last evaluation that no new
// event can change: of the same journey version, reached before since
// (every event stored after that evaluation is at or after since).
func settled(prev Row, j *journeys.Stored, since time.Time) map[string]progress.Milestone {
	if prev.State == nil || prev.State.JourneyID != j.ID || prev.State.JourneyVersion != j.Version || since.IsZero() {
		return nil
	}
	var out map[string]progress.Milestone // nil when none is: not allocated for every account evaluated
	for _, m := range prev.State.Milestones {
		if m.Reached && m.ReachedAt.Before(since) {
			if out == nil {
				out = make(map[string]progress.Milestone, len(prev.State.Milestones))
			}
			out[m.ID] = m
		}
	}
	return out
}

// pick is the first journey that applies to an account with these traits.
func pick(js []journeys.Stored, tr accounts.Traits) *journeys.Stored {
	for i := range js {
		sel := js[i].Journey.AppliesTo
		if sel == nil {
			return &js[i]
		}
		if _, ok := tr[sel.Trait]; ok && slices.Contains(sel.In, tr.Text(sel.Trait)) {
			return &js[i]
		}
	}
	return nil
}

// startOf is the account's start: the trait holding it, read as an ISO
// 8601 time or date, or Unix seconds (or milliseconds); else its first
// event.
func startOf(tr accounts.Traits, trait string, first time.Time) time.Time {
	if t, ok := ParseTime(tr[trait]); ok {
		return t
	}
	return first.UTC()
}

// ParseTime reads a trait holding a time: a string in one of a few
// layouts, or Unix seconds or milliseconds. It is read for every account
// evaluated: accounts.Value decodes it without reflection.
func ParseTime(raw json.RawMessage) (time.Time, bool) {
	if len(raw) == 0 {
		return time.Time{}, false
	}
	v, err := accounts.Value(raw)
	if err != nil {
		return time.Time{}, false
	}
	switch v := v.(type) {
	case string:
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
			if t, err := time.Parse(layout, v); err == nil {
				return t.UTC(), true
			}
		}
	case float64:
		switch {
		case v <= 0:
		case v > 1e12: // milliseconds
			return time.UnixMilli(int64(v)).UTC(), true
		default:
			return time.Unix(int64(v), 0).UTC(), true
		}
	}
	return time.Time{}, false
}

var severities = map[string]signalsv1.Severity{
	progress.KindMilestoneReached:    signalsv1.Severity_SEVERITY_INFO,
	progress.KindOnboardingCompleted: signalsv1.Severity_SEVERITY_INFO,
	progress.KindOnboardingOnTrack:   signalsv1.Severity_SEVERITY_INFO,
	progress.KindOnboardingAtRisk:    signalsv1.Severity_SEVERITY_LOW,
	progress.KindOnboardingLate:      signalsv1.Severity_SEVERITY_MEDIUM,
	progress.KindOnboardingStalled:   signalsv1.Severity_SEVERITY_HIGH,
}

// signalOf is the signal of a transition, with its evidence.
func signalOf(tenant, account string, j *journeys.Stored, st progress.State, old *progress.State, t progress.Transition, now time.Time) *signalsv1.Signal {
	ev := &signalsv1.OnboardingEvidence{
		JourneyId: st.JourneyID, JourneyVersion: st.JourneyVersion, MilestoneId: t.Milestone,
		AccountStart: timestamppb.New(st.Start), StatusAfter: st.Status,
	}
	if old != nil {
		ev.StatusBefore = old.Status
	}
	var last time.Time
	for i, m := range st.Milestones {
		if m.LastProgressAt.After(last) {
			last = m.LastProgressAt
		}
		if m.ID != t.Milestone {
			continue
		}
		ev.MilestoneName = j.Journey.Milestones[i].Name
		ev.TargetAt = timestamppb.New(m.TargetAt)
		ev.Progress, ev.Required = int32(m.Progress), int32(m.Required)
		if m.Reached {
			ev.ReachedAt = timestamppb.New(m.ReachedAt)
		}
	}
	if !last.IsZero() {
		ev.LastProgressAt = timestamppb.New(last)
	}
	return &signalsv1.Signal{
		Id: signals.ID(tenant, account, t.Kind, st.JourneyID+"/"+t.Identity()), TenantId: tenant, AccountId: account, Kind: t.Kind,
		OccurredAt: timestamppb.New(t.At), DetectedAt: timestamppb.New(now), Severity: severities[t.Kind],
		Summary:  summary(account, ev, t),
		Evidence: &signalsv1.Signal_Onboarding{Onboarding: ev},
	}
}

func summary(account string, ev *signalsv1.OnboardingEvidence, t progress.Transition) string {
	name := ev.GetMilestoneName()
	if name == "" {
		name = t.Milestone
	}
	after := func(ts *timestamppb.Timestamp) string {
		return specfile.FormatDuration(ts.AsTime().Sub(ev.GetAccountStart().AsTime()).Truncate(time.Minute))
	}
	switch t.Kind {
	case progress.KindMilestoneReached:
		return fmt.Sprintf("%s reached %q %s after its start (target %s)", account, name, after(ev.GetReachedAt()), after(ev.GetTargetAt()))
	case progress.KindOnboardingCompleted:
		return fmt.Sprintf("%s completed onboarding (%s)", account, ev.GetJourneyId())
	case progress.KindOnboardingOnTrack:
		return fmt.Sprintf("%s is back on track (was %s)", account, t.From)
	}
	status := strings.ReplaceAll(strings.TrimPrefix(t.Kind, "onboarding_"), "_", " ")
	if t.Milestone == "" {
		since := ev.GetAccountStart()
		if ev.GetLastProgressAt() != nil {
			since = ev.GetLastProgressAt()
		}
		return fmt.Sprintf("%s onboarding %s: no milestone progress since %s", account, status, since.AsTime().Format(time.DateOnly))
	}
	return fmt.Sprintf("%s onboarding %s: %q %d/%d, target %s", account, status, name, ev.GetProgress(), ev.GetRequired(), ev.GetTargetAt().AsTime().Format(time.DateTime))
}
