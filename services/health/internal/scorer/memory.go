package scorer

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/pkg/parallel"
	"github.com/stickpoint/stickpoint/pkg/signals"
	"github.com/stickpoint/stickpoint/pkg/specfile"
	"github.com/stickpoint/stickpoint/services/health/internal/model"
	"github.com/stickpoint/stickpoint/services/health/internal/score"
)

// Memory is a store in memory over a history of stored events: a
// backtest's. It answers as the ClickHouse tables would: rollups rebuilt
// from the events as rebuildUsage builds them, event times in whole
// seconds where the events table's timestamp column is read, scores kept
// as account_health keeps them, risk signals from the emitters' memory.
// A backtest has no CSM sentiment.
type Memory struct {
	history *accounts.History
	signals *signals.Memory
	// onboarding reads the accounts' onboarding status: milestone
	// tracking's memory.
	onboarding func(tenant string, ids []string) map[string]string

	mu    sync.RWMutex
	usage map[string]map[string][]score.DayUsage // by tenant and account, in day order
	// users numbers each account's users, by tenant and account, for
	// the rollups' UserSet.
	users  map[string]map[string]userNumbers
	rows   map[string]map[string]Row   // by tenant and account
	churns map[string]map[string]Churn // by tenant and account: the earliest recorded
	// norms are the last norms read, by tenant: a sweep reads them at
	// every step, and they move only when a day before until is rebuilt.
	norms map[string]keptNorms

	// summed is each account's usage as last summed, by tenant: an
	// account is scored at every step it has events and at every sweep,
	// and its sum moves only when its rollups are rebuilt or the days
	// move, once a day. Summing the rollups again was a tenth of a
	// backtest's CPU. Guarded by summedMu, taken with mu held.
	summedMu sync.Mutex
	summed   map[string]map[string]summedUsage
}

// ofTenant is tenant's map of byTenant, made on first use.
func ofTenant[V any](byTenant map[string]map[string]V, tenant string) map[string]V {
	m := byTenant[tenant]
	if m == nil {
		m = map[string]V{}
		byTenant[tenant] = m
	}
	return m
}

type summedUsage struct {
	spans score.Spans
	keys  []string
	usage score.Usage
	none  bool // no rollup in the days: the account is absent
}

func (k summedUsage) of(sp score.Spans, keys []string) bool {
	same := func(a, b score.Days) bool { return a.From.Equal(b.From) && a.To.Equal(b.To) }
	return same(k.spans.Window, sp.Window) && same(k.spans.Recent, sp.Recent) && same(k.spans.Baseline, sp.Baseline) && slices.Equal(k.keys, keys)
}

type keptNorms struct {
	from, until time.Time
	norms       score.Norms
}

// NewMemoryStore returns a store over a history and the signals emitted,
// reading onboarding statuses with onboarding.
func NewMemoryStore(h *accounts.History, sigs *signals.Memory, onboarding func(tenant string, ids []string) map[string]string) *Memory {
	return &Memory{history: h, signals: sigs, onboarding: onboarding, usage: map[string]map[string][]score.DayUsage{},
		rows: map[string]map[string]Row{}, churns: map[string]map[string]Churn{}, norms: map[string]keptNorms{},
		summed: map[string]map[string]summedUsage{}, users: map[string]map[string]userNumbers{}}
}

// userNumbers numbers an account's users as its rebuilds meet them.
type userNumbers map[string]int

// set is users as a score.DayUsage's UserSet: 0 when one is numbered
// past 63 (the rollup keeps its users as ids only).
func (n userNumbers) set(users []string) uint64 {
	var set uint64
	for _, u := range users {
		i, ok := n[u]
		if !ok {
			i = len(n)
			n[u] = i
		}
		if i >= 64 {
			return 0
		}
		set |= 1 << i
	}
	return set
}

// RebuildUsage rebuilds the days' rollups as rebuildUsage does: per UTC
// day, the usage events each messageId once, the names used (pages and
// screens as "type:name") and the identified users.
func (m *Memory) RebuildUsage(_ context.Context, tenant string, set accountSet, from, to time.Time) error {
	first, last := from.UTC().Truncate(specfile.Day), to.UTC().Truncate(specfile.Day).Add(specfile.Day)
	type day struct {
		ids          map[string]bool
		names, users []string
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if k, ok := m.norms[tenant]; ok && first.Before(k.until) {
		delete(m.norms, tenant) // a day they cover may change
	}
	byAccount := ofTenant(m.usage, tenant)
	m.summedMu.Lock()
	for _, id := range set.ids {
		delete(m.summed[tenant], id)
	}
	m.summedMu.Unlock()
	for _, id := range set.ids {
		evs := m.history.Events(tenant, id)
		days := map[time.Time]*day{}
		for i := sort.Search(len(evs), func(i int) bool { return !evs[i].Timestamp.Before(first) }); i < len(evs) && evs[i].Timestamp.Before(last); i++ {
			e := &evs[i]
			if !events.IsUsage(e.Type) {
				continue
			}
			k := e.Timestamp.Truncate(specfile.Day)
			d := days[k]
			if d == nil {
				d = &day{ids: map[string]bool{}}
				days[k] = d
			}
			d.ids[e.MessageID] = true
			name := e.Name
			if e.Type != events.TypeTrack {
				name = e.Type + ":" + e.Name
			}
			if !slices.Contains(d.names, name) {
				d.names = append(d.names, name)
			}
			if e.UserID != "" && !slices.Contains(d.users, e.UserID) {
				d.users = append(d.users, e.UserID)
			}
		}
		if len(days) == 0 {
			continue
		}
		rollups := byAccount[id]
		numbers := ofTenant(m.users, tenant)[id]
		if numbers == nil {
			numbers = userNumbers{}
			m.users[tenant][id] = numbers
		}
		for k, d := range days {
			u := score.DayUsage{Day: k, Events: len(d.ids), Names: d.names, Users: d.users, UserSet: numbers.set(d.users)}
			if i, found := slices.BinarySearchFunc(rollups, k, func(u score.DayUsage, k time.Time) int { return u.Day.Compare(k) }); found {
				rollups[i] = u
			} else {
				rollups = slices.Insert(rollups, i, u)
			}
		}
		byAccount[id] = rollups
	}
	return nil
}

// daysIn is the rollups of the days from lo to hi, both included.
func daysIn(rollups []score.DayUsage, lo, hi time.Time) []score.DayUsage {
	i := sort.Search(len(rollups), func(i int) bool { return !rollups[i].Day.Before(lo) })
	j := sort.Search(len(rollups), func(j int) bool { return rollups[j].Day.After(hi) })
	if i >= j {
		return nil
	}
	return rollups[i:j]
}

// Usage sums the rollups with score.Aggregate, over the days readUsage
// reads: an account with none in them is absent.
func (m *Memory) Usage(_ context.Context, tenant string, set accountSet, sp score.Spans, keys []string) (map[string]score.Usage, error) {
	lo, hi := minTime(sp.Window.From, sp.Baseline.From), sp.Window.To
	m.mu.RLock()
	defer m.mu.RUnlock()
	m.summedMu.Lock()
	defer m.summedMu.Unlock()
	summed := ofTenant(m.summed, tenant)
	// Each account's on its own, on every core (a sweep sums every
	// account's once a day); the sums are kept after, one at a time.
	sums := make([]summedUsage, len(set.ids))
	fresh := make([]bool, len(set.ids))
	parallel.For(len(set.ids), parallel.Accounts, func(i int) {
		id := set.ids[i]
		k, ok := summed[id]
		if !ok || !k.of(sp, keys) {
			k, fresh[i] = summedUsage{spans: sp, keys: keys, none: true}, true
			if rows := daysIn(m.usage[tenant][id], lo, hi); len(rows) > 0 {
				k.usage, k.none = score.Aggregate(rows, keys, sp), false
				slices.Sort(k.usage.Features)
				if len(k.usage.Features) == 0 {
					k.usage.Features = nil
				}
			}
		}
		sums[i] = k
	})
	out := make(map[string]score.Usage, len(set.ids))
	for i, id := range set.ids {
		if fresh[i] {
			summed[id] = sums[i]
		}
		if !sums[i].none {
			out[id] = sums[i].usage
		}
	}
	return out, nil
}

// Norms are the medians over the accounts with rollups in the days, as
// readNorms takes them; kept until a day they cover is rebuilt.
func (m *Memory) Norms(_ context.Context, tenant string, from, until time.Time) (score.Norms, error) {
	from, until = from.UTC().Truncate(specfile.Day), until.UTC().Truncate(specfile.Day)
	m.mu.Lock()
	defer m.mu.Unlock()
	if k, ok := m.norms[tenant]; ok && k.from.Equal(from) && k.until.Equal(until) {
		return k.norms, nil
	}
	var days, evs []float64
	for _, rollups := range m.usage[tenant] {
		in := daysIn(rollups, from, until.Add(-specfile.Day))
		n, sum := len(in), 0
		for _, d := range in {
			sum += d.Events
		}
		if n > 0 {
			days, evs = append(days, float64(n)), append(evs, float64(sum))
		}
	}
	n := score.NormsOf(days, evs)
	m.norms[tenant] = keptNorms{from: from, until: until, norms: n}
	return n, nil
}

func (m *Memory) Traits(_ context.Context, tenant string, set accountSet) (map[string]accounts.Traits, error) {
	return m.history.Traits(tenant, set.ids), nil
}

func (m *Memory) Onboarding(_ context.Context, tenant string, set accountSet) (map[string]string, error) {
	return m.onboarding(tenant, set.ids), nil
}

// Sentiment is none: a backtest has no CSM to set it.
func (m *Memory) Sentiment(context.Context, string, accountSet) (map[string]*score.Sentiment, error) {
	return map[string]*score.Sentiment{}, nil
}

// RuleEvents reads what readRuleEvents reads: the usage of the rules'
// names (or pages and screens) from lookback to until, and churn events
// of any time up to until, compared and returned in whole seconds.
func (m *Memory) RuleEvents(_ context.Context, tenant string, set accountSet, md model.Model, lookback, until time.Time) ([]event, error) {
	var names []string
	pages := false
	for _, match := range matches(md) {
		if match.Event != "" {
			names = append(names, match.Event)
		} else {
			pages = true
		}
	}
	var out []event
	for _, id := range set.ids {
		var seen map[string]bool
		evs := m.history.Events(tenant, id)
		// The history is in time order: an account's whole history is
		// read at each scoring, and before the lookback only the churn
		// event counts.
		second := func(i int) time.Time { return evs[i].Timestamp.Truncate(time.Second) }
		recentFrom := sort.Search(len(evs), func(i int) bool { return !second(i).Before(lookback) })
		end := sort.Search(len(evs), func(i int) bool { return second(i).After(until) })
		for i := range end {
			e := &evs[i] // not a copy
			recent := i >= recentFrom && (slices.Contains(names, e.Name) || (pages && (e.Type == events.TypePage || e.Type == events.TypeScreen)))
			churn := e.Type == events.TypeTrack && e.Name == md.Churn.Event
			if (!recent && !churn) || seen[e.MessageID] {
				continue
			}
			at := second(i)
			if seen == nil {
				seen = map[string]bool{}
			}
			seen[e.MessageID] = true
			ev := event{account: id, messageID: e.MessageID, typ: e.Type, name: e.Name, user: e.UserID, at: at}
			if len(e.Properties) > 0 {
				_ = json.Unmarshal(e.Properties, &ev.props) // as readRuleEvents
			}
			out = append(out, ev)
		}
	}
	return out, nil
}

func (m *Memory) EventSpans(_ context.Context, tenant string, set accountSet) (map[string][2]time.Time, error) {
	out := make(map[string][2]time.Time, len(set.ids))
	for _, id := range set.ids {
		if evs := m.history.Events(tenant, id); len(evs) > 0 {
			out[id] = [2]time.Time{evs[0].Timestamp.Truncate(time.Second), evs[len(evs)-1].Timestamp.Truncate(time.Second)}
		}
	}
	return out, nil
}

func (m *Memory) Rows(_ context.Context, tenant string, set accountSet) ([]Row, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]Row, 0, len(set.ids)) // a Row is large: grown by doubling, copying them was a backtest's largest allocation
	for _, id := range set.ids {
		if r, ok := m.rows[tenant][id]; ok {
			out = append(out, r)
		}
	}
	return out, nil
}

// Movable takes the accounts Movable's query takes, from the kept scores.
func (m *Memory) Movable(_ context.Context, tenant, after string, today time.Time, norms score.Norms, modelVersion int64, limit int) ([]string, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []string
	for id, r := range m.rows[tenant] {
		st := r.State
		if id > after && (r.EvaluatedAt.Before(today) || len(st.Hits) > 0 || st.Sentiment != nil || st.Norms != norms || st.ModelVersion != modelVersion) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (m *Memory) FirstTraitsAt(_ context.Context, tenant, account string) (time.Time, error) {
	return m.history.FirstTraitsAt(tenant, account), nil
}

func (m *Memory) FirstRisk(_ context.Context, tenant, account string, t time.Time) (string, time.Time, error) {
	s, err := m.signals.First(tenant, account, riskKinds, t)
	if err != nil || s == nil {
		return "", time.Time{}, err
	}
	return s.GetKind(), s.GetOccurredAt().AsTime(), nil
}

func (m *Memory) Put(_ context.Context, tenant string, rows []Row) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	byID := ofTenant(m.rows, tenant)
	for _, r := range rows {
		// As AsStored, without decoding the state from its JSON: the state
		// scored is what the JSON decodes to (times and floats survive
		// it), and decoding every stored row cost a backtest a tenth of its
		// time. TestTheMemoryStoreGivesTheAnswersOfClickHouse holds it.
		r.health, r.scoreChanged = nil, false
		r.ChurnedAt = r.ChurnedAt.Truncate(time.Second)
		byID[r.AccountID] = r
	}
	return nil
}

// PutChurns keeps each account's earliest churn record, as the churn
// report reads churn_records (insertChurns writes them).
func (m *Memory) PutChurns(_ context.Context, tenant string, rows []Row, _ time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	byID := ofTenant(m.churns, tenant)
	for _, r := range rows {
		c := r.State.Churn
		if c == nil || c.At.IsZero() {
			continue
		}
		kept := *c
		kept.At = kept.At.Truncate(time.Second) // as churn_records' column
		if old, ok := byID[r.AccountID]; !ok || kept.At.Before(old.At) {
			byID[r.AccountID] = kept
		}
	}
	return nil
}

// Save stores every score and churn kept in account_health and
// churn_records of db: a backtest whose data folder is kept.
func (m *Memory) Save(ctx context.Context, db chstore.Store, now time.Time) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for tenant, byID := range m.rows {
		rows := make([]Row, 0, len(byID))
		for _, r := range byID {
			rows = append(rows, r)
		}
		slices.SortFunc(rows, func(a, b Row) int { return strings.Compare(a.AccountID, b.AccountID) })
		for chunk := range slices.Chunk(rows, 50_000) {
			if err := insertRows(ctx, db, tenant, chunk); err != nil {
				return err
			}
			if err := insertChurns(ctx, db, tenant, chunk, now); err != nil {
				return err
			}
		}
	}
	return nil
}

// Kept is an account as the memory keeps it: its latest fit and its
// earliest churn, if any.
type Kept struct {
	AccountID, Fit string
	Churn          *Churn
}

// Kept lists the tenant's scored accounts, in order.
func (m *Memory) Kept(tenant string) []Kept {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]Kept, 0, len(m.rows[tenant]))
	for id, r := range m.rows[tenant] {
		k := Kept{AccountID: id, Fit: r.Fit}
		if c, ok := m.churns[tenant][id]; ok {
			k.Churn = &c
		}
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b Kept) int { return strings.Compare(a.AccountID, b.AccountID) })
	return out
}

// UseMemory makes the scorer read and keep its accounts in memory, over
// a history of stored events and the signals emitted (a backtest),
// instead of ClickHouse, with the onboarding statuses onboarding reads.
// The scorer's emitter records its signals in sigs.
func (s *Scorer) UseMemory(h *accounts.History, sigs *signals.Memory, onboarding func(tenant string, ids []string) map[string]string) *Memory {
	m := NewMemoryStore(h, sigs, onboarding)
	s.store = m
	s.emitter.UseMemory(sigs, h)
	return m
}

// SaveMemory stores the scores and churns kept in memory in ClickHouse,
// when UseMemory made the scorer keep them there.
func (s *Scorer) SaveMemory(ctx context.Context) error {
	if m, ok := s.store.(*Memory); ok {
		return m.Save(ctx, s.db, s.Now().UTC())
	}
	return nil
}
