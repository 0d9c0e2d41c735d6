package evaluator

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/pkg/parallel"
	"github.com/stickpoint/stickpoint/pkg/signals"
	"github.com/stickpoint/stickpoint/services/milestones/internal/journeys"
	"github.com/stickpoint/stickpoint/services/milestones/internal/progress"
)

// Store is what a round of evaluation reads and writes: the accounts'
// traits, first events and milestone events, and their stored
// evaluations. The service's is ClickHouse; a backtest's is memory
// (NewMemoryStore), so that thousands of steps of its clock cost no
// query each. Both give the evaluator the same answers.
type Store interface {
	// Traits are the accounts' merged traits.
	Traits(ctx context.Context, tenant string, set accountSet) (map[string]accounts.Traits, error)
	// Rows are the accounts' stored evaluations, as stored.
	Rows(ctx context.Context, tenant string, set accountSet) ([]Row, error)
	// FirstEvents are the first event times (whole seconds) of the
	// accounts that have events.
	FirstEvents(ctx context.Context, tenant string, set accountSet) (map[string]time.Time, error)
	// MilestoneEvents are, by account, the events up to now the journeys'
	// milestones need: at least those that decide each predicate (see
	// milestoneEvents). need gives each event name's accounts.
	MilestoneEvents(ctx context.Context, tenant string, need map[string]accountSet, js []journeys.Stored, now time.Time) (map[string][]progress.Event, error)
	// JourneyRows are up to limit stored evaluations with a journey, of
	// the accounts after after, in order: the sweep's pages at now.
	// ClickHouse returns every one; memory leaves out those whose status
	// cannot move by now (Row.due, which only it keeps).
	JourneyRows(ctx context.Context, tenant, after string, limit int, now time.Time) ([]Row, error)
	// Put stores new evaluations.
	Put(ctx context.Context, tenant string, rows []Row) error
}

// clickHouse is the service's store: the events_by_name, account_traits,
// account_activity and account_onboarding tables.
type clickHouse struct {
	db     chstore.Store
	traits *accounts.Reader
}

func (c clickHouse) Traits(ctx context.Context, tenant string, set accountSet) (map[string]accounts.Traits, error) {
	if set.contiguous {
		return c.traits.TraitsBetween(ctx, tenant, set.ids[0], set.ids[len(set.ids)-1])
	}
	return c.traits.Traits(ctx, tenant, set.ids)
}

func (c clickHouse) Rows(ctx context.Context, tenant string, set accountSet) ([]Row, error) {
	if set.contiguous {
		return ReadRows(ctx, c.db, tenant, nil, "AND account_id >= ? AND account_id <= ?", set.ids[0], set.ids[len(set.ids)-1])
	}
	return ReadRows(ctx, c.db, tenant, set.ids, "")
}

// FirstEvents reads account_activity (pkg/accounts), not the events.
func (c clickHouse) FirstEvents(ctx context.Context, tenant string, set accountSet) (map[string]time.Time, error) {
	cond, args := set.where()
	spans, err := c.traits.ActivityWhere(ctx, tenant, cond, args...)
	if err != nil {
		return nil, err
	}
	out := make(map[string]time.Time, len(spans))
	for id, span := range spans {
		out[id] = span[0]
	}
	return out, nil
}

func (c clickHouse) MilestoneEvents(ctx context.Context, tenant string, need map[string]accountSet, js []journeys.Stored, now time.Time) (map[string][]progress.Event, error) {
	return milestoneEvents(ctx, c.db, tenant, need, fetches(js, c.db.Version().AtLeast(jsonFunctions)), now)
}

func (c clickHouse) JourneyRows(ctx context.Context, tenant, after string, limit int, _ time.Time) ([]Row, error) {
	return ReadRows(ctx, c.db, tenant, nil, "AND journey_id != '' AND account_id > ? ORDER BY account_id LIMIT ?", after, limit)
}

func (c clickHouse) Put(ctx context.Context, tenant string, rows []Row) error {
	return insertRows(ctx, c.db, tenant, rows)
}

// Memory is a store in memory over a history of stored events: a
// backtest's. Its evaluations are kept as account_onboarding keeps them
// (times in whole seconds, the state as its JSON decodes), and stay in
// memory: health scoring reads their statuses from it (Statuses).
type Memory struct {
	history *accounts.History

	mu   sync.RWMutex
	rows map[string]map[string]Row // by tenant and account
	ids  map[string][]string       // the accounts of rows, by tenant, in order: the sweep's pages
}

// NewMemoryStore returns a store over a history.
func NewMemoryStore(h *accounts.History) *Memory {
	return &Memory{history: h, rows: map[string]map[string]Row{}, ids: map[string][]string{}}
}

func (m *Memory) Traits(_ context.Context, tenant string, set accountSet) (map[string]accounts.Traits, error) {
	return m.history.Traits(tenant, set.ids), nil
}

func (m *Memory) Rows(_ context.Context, tenant string, set accountSet) ([]Row, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []Row
	for _, id := range set.ids {
		if r, ok := m.rows[tenant][id]; ok {
			out = append(out, r)
		}
	}
	return out, nil
}

func (m *Memory) FirstEvents(_ context.Context, tenant string, set accountSet) (map[string]time.Time, error) {
	out := make(map[string]time.Time, len(set.ids))
	for _, id := range set.ids {
		if evs := m.history.Events(tenant, id); len(evs) > 0 {
			out[id] = evs[0].Timestamp.Truncate(time.Second)
		}
	}
	return out, nil
}

// MilestoneEvents returns every event of the needed names up to now (the
// reductions ClickHouse makes only spare it sending them: see
// TestReducedFetchesGiveTheAnswerOfEveryEvent), with its properties when
// a milestone filters on them.
func (m *Memory) MilestoneEvents(_ context.Context, tenant string, need map[string]accountSet, js []journeys.Stored, now time.Time) (map[string][]progress.Event, error) {
	withProps := map[string]bool{}
	for _, j := range js {
		for _, ms := range j.Journey.Milestones {
			withProps[ms.Event] = withProps[ms.Event] || len(ms.Where) > 0
		}
	}
	byAccount := map[string][]string{}
	for name, set := range need {
		for _, id := range set.ids {
			byAccount[id] = append(byAccount[id], name)
		}
	}
	ids := slices.Collect(maps.Keys(byAccount))
	picked := make([][]progress.Event, len(ids))
	// Each account's on its own, on every core: an account's whole history
	// is read at each evaluation.
	parallel.For(len(ids), parallel.Accounts, func(a int) {
		names := byAccount[ids[a]]
		evs := m.history.Events(tenant, ids[a])
		for i := range evs {
			e := &evs[i] // not a copy
			if e.Timestamp.After(now) {
				break
			}
			if !events.IsUsage(e.Type) || !slices.Contains(names, e.Name) {
				continue
			}
			pe := progress.Event{MessageID: e.MessageID, User: e.UserID, Name: e.Name, At: e.Timestamp}
			if pe.User == "" {
				pe.User = e.AnonymousID
			}
			if withProps[e.Name] && len(e.Properties) > 0 {
				_ = json.Unmarshal(e.Properties, &pe.Properties) // as scanEvents: not an object matches nothing
			}
			picked[a] = append(picked[a], pe)
		}
	})
	out := make(map[string][]progress.Event, len(ids))
	for a, id := range ids {
		if picked[a] != nil {
			out[id] = picked[a]
		}
	}
	return out, nil
}

func (m *Memory) JourneyRows(_ context.Context, tenant, after string, limit int, now time.Time) ([]Row, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	ids := m.ids[tenant]
	i, found := slices.BinarySearch(ids, after)
	if found {
		i++
	}
	var out []Row
	for ; i < len(ids) && len(out) < limit; i++ {
		// Restating every account at every step of --step 1h was the
		// largest part of such a backtest; most can't move.
		if r := m.rows[tenant][ids[i]]; r.JourneyID != "" && !r.due.After(now) {
			out = append(out, r)
		}
	}
	return out, nil
}

func (m *Memory) Put(_ context.Context, tenant string, rows []Row) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	byID := m.rows[tenant]
	if byID == nil {
		byID = map[string]Row{}
		m.rows[tenant] = byID
	}
	for _, r := range rows {
		if _, ok := byID[r.AccountID]; !ok {
			i, _ := slices.BinarySearch(m.ids[tenant], r.AccountID)
			m.ids[tenant] = slices.Insert(m.ids[tenant], i, r.AccountID)
		}
		byID[r.AccountID] = asStored(r)
	}
	return nil
}

// asStored is r as ReadRows reads it back from account_onboarding: its
// times in the columns' whole seconds. The state is kept as evaluated,
// not decoded again from its JSON: it is what the JSON decodes to (times
// and durations survive it). TestTheMemoryStoreGivesTheAnswersOfClickHouse
// holds both.
func asStored(r Row) Row {
	r.Start, r.FirstEventAt, r.EvaluatedAt = r.Start.UTC().Truncate(time.Second), r.FirstEventAt.UTC().Truncate(time.Second), r.EvaluatedAt.UTC().Truncate(time.Second)
	return r
}

func sortRows(rows []Row) {
	slices.SortFunc(rows, func(a, b Row) int { return strings.Compare(a.AccountID, b.AccountID) })
}

// Save stores every evaluation kept in account_onboarding of db: a
// backtest whose data folder is kept.
func (m *Memory) Save(ctx context.Context, db chstore.Store) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for tenant, byID := range m.rows {
		rows := make([]Row, 0, len(byID))
		for _, r := range byID {
			rows = append(rows, r)
		}
		sortRows(rows)
		for chunk := range slices.Chunk(rows, 50_000) {
			if err := insertRows(ctx, db, tenant, chunk); err != nil {
				return err
			}
		}
	}
	return nil
}

// Statuses are the accounts' onboarding statuses, as readOnboarding
// reads them from account_onboarding: an account not evaluated is absent.
func (m *Memory) Statuses(tenant string, ids []string) map[string]string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make(map[string]string, len(ids))
	for _, id := range ids {
		if r, ok := m.rows[tenant][id]; ok {
			out[id] = r.Status
		}
	}
	return out
}

// UseMemory makes the evaluator read and keep its accounts in memory, over
// a history of stored events (a backtest), instead of ClickHouse, and its
// emitter record its signals in sigs.
func (e *Evaluator) UseMemory(h *accounts.History, sigs *signals.Memory) *Memory {
	m := NewMemoryStore(h)
	e.store = m
	e.emitter.UseMemory(sigs, h)
	return m
}

// SaveMemory stores the evaluations kept in memory in ClickHouse, when
// UseMemory made the evaluator keep them there.
func (e *Evaluator) SaveMemory(ctx context.Context) error {
	if m, ok := e.store.(*Memory); ok {
		return m.Save(ctx, e.db)
	}
	return nil
}
