package scorer

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/specfile"
	"github.com/stickpoint/stickpoint/services/health/internal/model"
	"github.com/stickpoint/stickpoint/services/health/internal/score"
)

// accountSet is the accounts one round of queries covers: a list, or a
// contiguous page of the tenant's accounts, selected by its id range.
type accountSet struct {
	ids        []string
	contiguous bool
}

func (s accountSet) where() (string, []any) {
	if s.contiguous {
		return "account_id >= ? AND account_id <= ?", []any{s.ids[0], s.ids[len(s.ids)-1]}
	}
	return "account_id IN ?", []any{chstore.In(s.ids)}
}

// Store is what the scorer reads and writes: the accounts' rollups,
// norms, traits, onboarding, sentiment, rule events and activity, and
// their stored scores. The service's is ClickHouse; a backtest's is
// memory (NewMemoryStore), so that thousands of steps of its clock cost
// no query each. Both give the scorer the same answers.
type Store interface {
	// RebuildUsage rewrites the rollups of the accounts' UTC days from
	// from to to, from their events.
	RebuildUsage(ctx context.Context, tenant string, set accountSet, from, to time.Time) error
	// Usage sums the accounts' rollups as score.Aggregate does.
	Usage(ctx context.Context, tenant string, set accountSet, sp score.Spans, keys []string) (map[string]score.Usage, error)
	// Norms are the tenant's median active account over the days from
	// from (included) to until (excluded).
	Norms(ctx context.Context, tenant string, from, until time.Time) (score.Norms, error)
	// Traits are the accounts' merged traits.
	Traits(ctx context.Context, tenant string, set accountSet) (map[string]accounts.Traits, error)
	// Onboarding is the accounts' onboarding status, from milestone
	// tracking's latest evaluation.
	Onboarding(ctx context.Context, tenant string, set accountSet) (map[string]string, error)
	// Sentiment is the accounts' latest CSM sentiment.
	Sentiment(ctx context.Context, tenant string, set accountSet) (map[string]*score.Sentiment, error)
	// RuleEvents are the accounts' events the model's rules could match
	// (see readRuleEvents), times in whole seconds.
	RuleEvents(ctx context.Context, tenant string, set accountSet, m model.Model, lookback, until time.Time) ([]event, error)
	// EventSpans are the accounts' first and last event times, in whole
	// seconds.
	EventSpans(ctx context.Context, tenant string, set accountSet) (map[string][2]time.Time, error)
	// Rows are the accounts' stored scores, as stored.
	Rows(ctx context.Context, tenant string, set accountSet) ([]Row, error)
	// Movable is the next page of up to limit scored accounts, after
	// after, that time or the norms can have moved (see Scorer.Sweep).
	Movable(ctx context.Context, tenant, after string, today time.Time, norms score.Norms, modelVersion int64, limit int) ([]string, error)
	// FirstTraitsAt is the time of the account's first group call (whole
	// seconds), zero when it has none: a churn by trait takes it.
	FirstTraitsAt(ctx context.Context, tenant, account string) (time.Time, error)
	// FirstRisk is the account's earliest risk signal (riskKinds) that
	// occurred at or before t: its kind and time, or "".
	FirstRisk(ctx context.Context, tenant, account string, t time.Time) (string, time.Time, error)
	// Put stores new scores; PutChurns the churn records among them.
	Put(ctx context.Context, tenant string, rows []Row) error
	PutChurns(ctx context.Context, tenant string, rows []Row, now time.Time) error
}

// clickHouse is the service's store.
type clickHouse struct {
	db     chstore.Store
	traits *accounts.Reader
}

func (c clickHouse) RebuildUsage(ctx context.Context, tenant string, set accountSet, from, to time.Time) error {
	return rebuildUsage(ctx, c.db, tenant, set, from, to)
}

func (c clickHouse) Usage(ctx context.Context, tenant string, set accountSet, sp score.Spans, keys []string) (map[string]score.Usage, error) {
	return readUsage(ctx, c.db, tenant, set, sp, keys)
}

func (c clickHouse) Norms(ctx context.Context, tenant string, from, until time.Time) (score.Norms, error) {
	return readNorms(ctx, c.db, tenant, from, until)
}

func (c clickHouse) Traits(ctx context.Context, tenant string, set accountSet) (map[string]accounts.Traits, error) {
	if set.contiguous {
		return c.traits.TraitsBetween(ctx, tenant, set.ids[0], set.ids[len(set.ids)-1])
	}
	return c.traits.Traits(ctx, tenant, set.ids)
}

func (c clickHouse) Onboarding(ctx context.Context, tenant string, set accountSet) (map[string]string, error) {
	return readOnboarding(ctx, c.db, tenant, set)
}

func (c clickHouse) Sentiment(ctx context.Context, tenant string, set accountSet) (map[string]*score.Sentiment, error) {
	return readSentiment(ctx, c.db, tenant, set)
}

func (c clickHouse) RuleEvents(ctx context.Context, tenant string, set accountSet, m model.Model, lookback, until time.Time) ([]event, error) {
	return readRuleEvents(ctx, c.db, tenant, set, m, lookback, until)
}

// EventSpans reads account_activity (pkg/accounts), not the events.
func (c clickHouse) EventSpans(ctx context.Context, tenant string, set accountSet) (map[string][2]time.Time, error) {
	cond, args := set.where()
	return c.traits.ActivityWhere(ctx, tenant, cond, args...)
}

func (c clickHouse) Rows(ctx context.Context, tenant string, set accountSet) ([]Row, error) {
	cond, args := set.where()
	return ReadRows(ctx, c.db, tenant, "AND "+cond, args...)
}

func (c clickHouse) Movable(ctx context.Context, tenant, after string, today time.Time, norms score.Norms, modelVersion int64, limit int) ([]string, error) {
	raw, err := json.Marshal(norms)
	if err != nil {
		return nil, err
	}
	rows, err := c.db.Query(ctx, `SELECT account_id FROM account_health FINAL
		WHERE tenant_id = ? AND account_id > ? AND (evaluated_at < ? OR visitParamHas(state, 'hits') OR visitParamHas(state, 'sentiment')
			OR visitParamExtractRaw(state, 'norms') != ? OR visitParamExtractInt(state, 'model_version') != ?)
		ORDER BY account_id LIMIT ?`, tenant, after, today, string(raw), modelVersion, limit)
	if err != nil {
		return nil, fmt.Errorf("list the accounts to sweep: %w", err)
	}
	return rows.Strings()
}

func (c clickHouse) FirstTraitsAt(ctx context.Context, tenant, account string) (time.Time, error) {
	rows, err := c.db.Query(ctx, `SELECT min(updated_at) FROM account_traits WHERE tenant_id = ? AND account_id = ?`, tenant, account)
	if err != nil {
		return time.Time{}, fmt.Errorf("read churn time: %w", err)
	}
	var at time.Time
	for rows.Next() {
		if err := rows.Scan(&at); err != nil {
			return time.Time{}, err
		}
	}
	if at.Unix() <= 0 { // min of no rows: the epoch
		at = time.Time{}
	}
	return at, nil
}

func (c clickHouse) FirstRisk(ctx context.Context, tenant, account string, t time.Time) (string, time.Time, error) {
	rows, err := c.db.Query(ctx, `SELECT kind, occurred_at FROM signals WHERE tenant_id = ? AND account_id = ? AND kind IN ? AND occurred_at <= ?
		ORDER BY occurred_at LIMIT 1`, tenant, account, chstore.In(riskKinds), t)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("read risk signals: %w", err)
	}
	var kind string
	var at time.Time
	for rows.Next() {
		if err := rows.Scan(&kind, &at); err != nil {
			return "", time.Time{}, err
		}
	}
	return kind, at, nil
}

func (c clickHouse) Put(ctx context.Context, tenant string, rows []Row) error {
	return insertRows(ctx, c.db, tenant, rows)
}

func (c clickHouse) PutChurns(ctx context.Context, tenant string, rows []Row, now time.Time) error {
	return insertChurns(ctx, c.db, tenant, rows, now)
}

// rebuildUsage rewrites the rollup rows of the accounts' UTC days from
// from to to, from the events, each messageId once.
func rebuildUsage(ctx context.Context, db chstore.Store, tenant string, set accountSet, from, to time.Time) error {
	first, last := from.UTC().Truncate(specfile.Day), to.UTC().Truncate(specfile.Day).Add(specfile.Day)
	cond, args := set.where()
	err := db.Exec(ctx, `INSERT INTO account_day_usage (tenant_id, account_id, day, events, names, users, version)
		SELECT tenant_id, account_id, toDate(timestamp), uniqExact(message_id),
			groupUniqArray(if(type = 'track', name, concat(type, ':', name))), groupUniqArrayIf(user_id, user_id != ''), ?
		FROM events
		WHERE tenant_id = ? AND `+cond+` AND timestamp >= ? AND timestamp < ? AND type IN ('track', 'page', 'screen')
		GROUP BY tenant_id, account_id, toDate(timestamp)`,
		append(append([]any{uint64(time.Now().UnixNano()), tenant}, args...), first, last)...)
	if err != nil {
		return fmt.Errorf("rebuild usage rollups: %w", err)
	}
	return nil
}

// readUsage sums the accounts' rollups as score.Aggregate does, in one
// query per set: one row per account, whatever the number of days and
// event names (a sweep of 100,000 accounts reads tens of millions of
// rollup rows, and only their sums leave ClickHouse).
func readUsage(ctx context.Context, db chstore.Store, tenant string, set accountSet, sp score.Spans, keys []string) (map[string]score.Usage, error) {
	cond, args := set.where()
	w0 := sp.Window.From
	// The key features used; an empty list literal has no element type on
	// the 18.16 server, so none are asked without one.
	features, fargs := "emptyArrayString()", []any{}
	if len(keys) > 0 {
		features, fargs = "arrayFilter(n -> has(?, n), groupUniqArrayArrayIf(ns, day >= toDate(?)))", []any{keys, w0}
	}
	q := `SELECT account_id, countIf(day >= toDate(?)), sumIf(ev, day >= toDate(?)), uniqExactArrayIf(us, day >= toDate(?)),
			` + features + `,
			sumIf(ev, day >= toDate(?) AND day <= toDate(?)), sumIf(ev, day >= toDate(?) AND day <= toDate(?))
		FROM (SELECT account_id, day, events AS ev, names AS ns, users AS us
			FROM account_day_usage FINAL WHERE tenant_id = ? AND ` + cond + ` AND day >= toDate(?) AND day <= toDate(?))
		GROUP BY account_id`
	all := append(append([]any{w0, w0, w0}, fargs...), sp.Recent.From, sp.Recent.To, sp.Baseline.From, sp.Baseline.To, tenant)
	all = append(append(all, args...), minTime(w0, sp.Baseline.From), sp.Window.To)
	rows, err := db.Query(ctx, q, all...)
	if err != nil {
		return nil, fmt.Errorf("read usage rollups: %w", err)
	}
	out := make(map[string]score.Usage, rows.Len())
	for rows.Next() {
		var id string
		var days, events, users, recent, baseline uint64
		var u score.Usage
		if err := rows.Scan(&id, &days, &events, &users, &u.Features, &recent, &baseline); err != nil {
			return nil, err
		}
		u.ActiveDays, u.Events, u.Users, u.Recent, u.Baseline = int(days), int(events), int(users), int(recent), int(baseline)
		// A set: kept in one order, and none as nil, so that a state
		// compares as stored whatever order or engine read it.
		slices.Sort(u.Features)
		if len(u.Features) == 0 {
			u.Features = nil
		}
		out[id] = u
	}
	return out, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// readNorms is the tenant's median active account over the days from
// from (included) to until (excluded). ClickHouse sends each active
// account's two sums, and score.NormsOf takes their exact medians (a
// tenant's accounts are few enough to send; ClickHouse's median samples).
func readNorms(ctx context.Context, db chstore.Store, tenant string, from, until time.Time) (score.Norms, error) {
	rows, err := db.Query(ctx, `SELECT count() AS d, sum(events) AS e
			FROM account_day_usage FINAL WHERE tenant_id = ? AND day >= toDate(?) AND day < toDate(?)
			GROUP BY account_id`, tenant, from, until)
	if err != nil {
		return score.Norms{}, fmt.Errorf("read the tenant's norms: %w", err)
	}
	days, evs := make([]float64, 0, rows.Len()), make([]float64, 0, rows.Len())
	for rows.Next() {
		var d, e uint64
		if err := rows.Scan(&d, &e); err != nil {
			return score.Norms{}, err
		}
		days, evs = append(days, float64(d)), append(evs, float64(e))
	}
	return score.NormsOf(days, evs), nil
}

// event is a stored event the cancel-intent and churn rules look at.
type event struct {
	account, messageID, typ, name, user string
	at                                  time.Time
	props                               map[string]any
}

// readRuleEvents reads the accounts' events that a cancel-intent signal,
// the cancellation request or the churn event could match, each
// messageId once: those since lookback, and churn events of any time.
func readRuleEvents(ctx context.Context, db chstore.Store, tenant string, set accountSet, m model.Model, lookback, until time.Time) ([]event, error) {
	var names []string
	pages := false
	for _, match := range matches(m) {
		if match.Event != "" {
			names = append(names, match.Event)
		} else {
			pages = true // a match by type alone: every page or screen
		}
	}
	cond, args := set.where()
	rows, err := db.Query(ctx, `SELECT account_id, message_id, type, name, user_id, timestamp, properties FROM events
		WHERE tenant_id = ? AND `+cond+` AND timestamp <= ?
			AND ((timestamp >= ? AND (name IN ? OR (? AND type IN ('page', 'screen')))) OR (type = 'track' AND name = ?))
		LIMIT 1 BY account_id, message_id`,
		append(append([]any{tenant}, args...), until, lookback, chstore.In(names), pages, m.Churn.Event)...)
	if err != nil {
		return nil, fmt.Errorf("read cancel-intent events: %w", err)
	}
	var out []event
	for rows.Next() {
		var e event
		var props string
		if err := rows.Scan(&e.account, &e.messageID, &e.typ, &e.name, &e.user, &e.at, &props); err != nil {
			return nil, err
		}
		if props != "" {
			_ = json.Unmarshal([]byte(props), &e.props) // properties were checked as JSON at ingest
		}
		out = append(out, e)
	}
	return out, nil
}

// matches is every event match of the model: the signals', then the
// cancellation request's.
func matches(m model.Model) []model.Match {
	var out []model.Match
	for _, s := range m.CancelIntent.Signals {
		if s.Match != nil {
			out = append(out, *s.Match)
		}
	}
	return append(out, m.CancelIntent.CancellationRequested)
}

// matchesEvent reports whether an event satisfies a match.
func matchesEvent(match model.Match, e event) bool {
	return (match.Type == "" || match.Type == e.typ) && (match.Event == "" || match.Event == e.name) && specfile.Matches(match.Where, e.props)
}

// readOnboarding reads the accounts' onboarding status from milestone
// tracking's latest evaluation.
func readOnboarding(ctx context.Context, db chstore.Store, tenant string, set accountSet) (map[string]string, error) {
	cond, args := set.where()
	rows, err := db.Query(ctx, `SELECT account_id, status FROM account_onboarding FINAL WHERE tenant_id = ? AND `+cond, append([]any{tenant}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("read onboarding status: %w", err)
	}
	out := map[string]string{}
	for rows.Next() {
		var id, st string
		if err := rows.Scan(&id, &st); err != nil {
			return nil, err
		}
		out[id] = st
	}
	return out, nil
}

// readSentiment reads the accounts' latest CSM sentiment.
func readSentiment(ctx context.Context, db chstore.Store, tenant string, set accountSet) (map[string]*score.Sentiment, error) {
	cond, args := set.where()
	rows, err := db.Query(ctx, `SELECT account_id, score, note, author, set_at, expires_at FROM health_sentiment FINAL WHERE tenant_id = ? AND `+cond, append([]any{tenant}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("read sentiment: %w", err)
	}
	out := map[string]*score.Sentiment{}
	for rows.Next() {
		var id string
		var s score.Sentiment
		var sc uint64
		if err := rows.Scan(&id, &sc, &s.Note, &s.Author, &s.SetAt, &s.ExpiresAt); err != nil {
			return nil, err
		}
		s.Score = int(sc)
		out[id] = &s
	}
	return out, nil
}

// PutSentiment stores a CSM's sentiment about an account.
func PutSentiment(ctx context.Context, db chstore.Store, tenant, account string, s score.Sentiment) error {
	err := db.Insert(ctx, "health_sentiment", []string{"tenant_id", "account_id", "score", "note", "author", "set_at", "expires_at", "version"},
		[][]any{{tenant, account, uint8(s.Score), s.Note, s.Author, s.SetAt.UTC(), s.ExpiresAt.UTC(), uint64(s.SetAt.UnixNano())}})
	if err != nil {
		return fmt.Errorf("store sentiment: %w", err)
	}
	return nil
}

// Row is an account's latest score as stored in account_health.
type Row struct {
	AccountID   string
	Score       int
	Band        string
	Change      int
	Fit         string
	Onboarding  string
	Intent      float64
	AtRisk      bool
	ChurnedAt   time.Time
	State       State
	EvaluatedAt time.Time
	Version     uint64

	state        string        // State as stored (JSON): as read, or once stored; see stateText
	health       *score.Health // as scored, before it is stored
	scoreChanged bool          // a new score for the history
}

// Health is the account's health as it was scored: score.Compute of the
// stored inputs at the stored time, under m (the model of the score, or
// the one in force while a new one rescores the tenant).
func (r Row) Health(m model.Model) score.Health {
	if r.health != nil {
		return *r.health
	}
	return score.Compute(m, r.State.Inputs(), r.EvaluatedAt)
}

// RowColumns are account_health's columns in Row's order.
const RowColumns = "account_id, score, band, change, fit, onboarding_status, intent_score, at_risk, churned_at, state, evaluated_at, version"

// ReadRows reads the tenant's account_health rows matching where (SQL
// after the tenant condition, with its args).
func ReadRows(ctx context.Context, db chstore.Store, tenant, where string, args ...any) ([]Row, error) {
	rows, err := db.Query(ctx, "SELECT "+RowColumns+" FROM account_health FINAL WHERE tenant_id = ? "+where, append([]any{tenant}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("read account health: %w", err)
	}
	out := make([]Row, 0, rows.Len())
	for rows.Next() {
		var r Row
		var sc, atRisk uint64
		var change int64
		var state string
		if err := rows.Scan(&r.AccountID, &sc, &r.Band, &change, &r.Fit, &r.Onboarding, &r.Intent, &atRisk, &r.ChurnedAt, &state, &r.EvaluatedAt, &r.Version); err != nil {
			return nil, err
		}
		r.Score, r.Change, r.AtRisk = int(sc), int(change), atRisk == 1
		if r.ChurnedAt.Unix() <= 0 { // not churned: stored as the epoch
			r.ChurnedAt = time.Time{}
		}
		r.state = state
		if err := json.Unmarshal([]byte(state), &r.State); err != nil {
			return nil, fmt.Errorf("account %s: stored health state: %w", r.AccountID, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// stateText is the row's state as stored: the JSON it was read with or
// stored as, else State encoded. Rows are compared by State.Equal; only
// those stored are encoded.
func (r Row) stateText() string {
	if r.state != "" {
		return r.state
	}
	raw, _ := json.Marshal(r.State)
	return string(raw)
}

// AsStored is r as ReadRows reads it back once stored: the state decoded
// from its JSON, the health recomputed from it (not the one scored), the
// churn time in the column's whole seconds.
func (r Row) AsStored() (Row, error) {
	r.health, r.scoreChanged = nil, false
	r.ChurnedAt = r.ChurnedAt.Truncate(time.Second)
	r.state = r.stateText()
	r.State = State{}
	if err := json.Unmarshal([]byte(r.state), &r.State); err != nil {
		return Row{}, fmt.Errorf("account %s: health state: %w", r.AccountID, err)
	}
	return r, nil
}

// InHistory reports whether storing r adds a point to health_history: its
// score, band or intent changed.
func (r Row) InHistory() bool { return r.scoreChanged && r.health != nil }

func insertRows(ctx context.Context, db chstore.Store, tenant string, rs []Row) error {
	if len(rs) == 0 {
		return nil
	}
	rows := make([][]any, len(rs))
	hist := make([][]any, 0, len(rs))
	for i := range rs {
		rs[i].state = rs[i].stateText() // kept: AsStored needs it after
		r := rs[i]
		rows[i] = []any{tenant, r.AccountID, uint8(r.Score), r.Band, int16(r.Change), r.Fit, r.Onboarding, r.Intent, r.AtRisk, r.ChurnedAt.UTC(),
			r.state, r.EvaluatedAt.UTC(), r.Version}
		if r.InHistory() {
			comps, _ := json.Marshal(r.health.Components)
			hist = append(hist, []any{tenant, r.AccountID, r.EvaluatedAt.UTC(), uint8(r.Score), r.Band, r.Intent, string(comps)})
		}
	}
	// History first: a crash between the two rewrites it with the same key.
	if len(hist) > 0 {
		if err := db.Insert(ctx, "health_history", []string{"tenant_id", "account_id", "at", "score", "band", "intent_score", "components"}, hist); err != nil {
			return fmt.Errorf("store health history: %w", err)
		}
	}
	if err := db.Insert(ctx, "account_health", append([]string{"tenant_id"}, strings.Split(RowColumns, ", ")...), rows); err != nil {
		return fmt.Errorf("store account health: %w", err)
	}
	return nil
}
