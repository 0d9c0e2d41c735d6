package evaluator

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/specfile"
	"github.com/stickpoint/stickpoint/services/milestones/internal/journey"
	"github.com/stickpoint/stickpoint/services/milestones/internal/journeys"
	"github.com/stickpoint/stickpoint/services/milestones/internal/progress"
)

// Row is an account's evaluation as stored in account_onboarding.
type Row struct {
	AccountID    string
	JourneyID    string
	Status       string
	Start        time.Time
	FirstEventAt time.Time
	EvaluatedAt  time.Time
	// State is nil when no journey applies to the account.
	State *progress.State
	// due is when the status can next move by the clock alone
	// (progress.NextChange), set by whoever evaluates or restates the
	// row; zero when unknown, as in a row read from ClickHouse. The
	// memory store keeps it, and leaves the row out of the sweep's pages
	// until then.
	due time.Time
	// encoded is State's JSON once known (as read, or encoded to store
	// it): rows are compared by State.Equal, and only those stored are
	// encoded. Whoever changes State clears it.
	encoded string
}

// stateText is the row's state as stored: its JSON, "" without one.
func (r *Row) stateText() string {
	if r.encoded == "" {
		r.encoded = stateJSON(r.State)
	}
	return r.encoded
}

// fetch is what the milestones of one predicate (an event name and its
// property filters) need of its events.
type fetch struct {
	name string
	// where are filters ClickHouse runs (JSON functions, engines from
	// 20.1); all is set when they must run here instead: every event of
	// the name is read, with its properties.
	where  []specfile.Condition
	all    bool
	firstN int  // count thresholds: the first N distinct events
	users  int  // distinct-user thresholds: the first event of the first N users
	days   bool // distinct-day thresholds: the first event of each UTC day
	// windows are the distinct-day thresholds: the one-pass read keeps
	// each day's first event only up to the day the last of them holds.
	windows []dayWindow
}

// dayWindow is a distinct-day threshold: n days within a window of days
// whole days, as progress counts them.
type dayWindow struct{ n, days int }

// fetches is the fetch of each predicate the journeys watch. jsonSQL says
// whether ClickHouse can run property filters.
func fetches(js []journeys.Stored, jsonSQL bool) []*fetch {
	byKey := map[string]*fetch{}
	var out []*fetch
	for _, j := range js {
		for _, m := range j.Journey.Milestones {
			key := m.Event
			if len(m.Where) > 0 {
				key += "\x00" + fmt.Sprintf("%#v", m.Where)
			}
			f := byKey[key]
			if f == nil {
				f = &fetch{name: m.Event}
				if len(m.Where) > 0 {
					f.where, f.all = m.Where, !jsonSQL
				}
				byKey[key] = f
				out = append(out, f)
			}
			switch m.Threshold.Kind {
			case journey.Count:
				f.firstN = max(f.firstN, m.Threshold.N)
			case journey.DistinctUsers:
				f.users = max(f.users, m.Threshold.N)
			default:
				f.days = true
				f.windows = append(f.windows, dayWindow{n: m.Threshold.N, days: int(m.Threshold.Window / journey.Day)})
			}
		}
	}
	return out
}

// jsonFunctions is the first version with the JSON functions
// (JSONExtract, JSONHas, JSONType) the property filters use.
var jsonFunctions = chstore.Version{Major: 20, Minor: 1}

// milestoneEvents reads, for the accounts, the events the journeys'
// milestones need, up to now. It doesn't read every event: a predicate is
// decided by a few of them (the first N, each user's first, each day's
// first; these are also the events that count as progress, which is all
// LastProgressAt needs), so only those are read, each messageId of a name
// once (its earliest row, before any filter). Their union gives
// progress.Evaluate the answer it gives on every event (see
// TestReducedFetchesGiveTheAnswerOfEveryEvent).
//
// Both reads below read events_by_name (ingest migration 0009): the
// accounts' track, page and screen events, sorted by name before account,
// so a read of a few names reads only their rows, with the messageId and
// the user as 64-bit hashes (cityHash64). progress.Evaluate only compares
// those, so the rows give the hashes, as text, for messageId and user.
// Two ids of one hash would count as one: for an account's few hundred
// events of a name, less than one chance in 10^14. Events at the same
// millisecond are ordered by hash; no milestone's time or count depends on
// that order, except which of two rows of one messageId at the same
// millisecond, with different users, is kept.
//
// Where ClickHouse has the JSON functions the property filters use, one
// read does it all (onePassRead); older servers (18.16) take a sorted
// read per predicate (sortedReads), with filtered predicates reading
// every event of their name, with properties, for the filters to run
// here. Events of a name some milestone filters carry their properties,
// which progress.Evaluate checks again.
//
// need gives, for each event name, the accounts whose milestones need it.
func milestoneEvents(ctx context.Context, db chstore.Store, tenant string, need map[string]accountSet, plan []*fetch, now time.Time) (map[string][]progress.Event, error) {
	if db.Version().AtLeast(jsonFunctions) {
		if q, args, ok := onePassRead(tenant, need, plan, now); ok {
			out := map[string][]progress.Event{}
			return out, scanEvents(ctx, db, q, args, true, out)
		}
	}
	return sortedReads(ctx, db, tenant, need, plan, now)
}

// onePassRead is the query that reads every predicate's events of the
// accounts in one pass over the events, and its args; ok is false when it
// can't (more filtered predicates than a flag word holds).
//
// It gathers each account's events of the names needed into an array,
// sorted (time, then messageId and user, as the sorted reads order them),
// keeps each messageId of a name once (its first row), then takes each
// predicate's events from that array: the first N, each user's first of
// the first N users, each day's first up to the day by which the last of
// its windows holds. The sorted reads read the events' columns once per
// predicate, and their LIMIT BY keeps every (account, messageId); here the
// columns are read once, and the sorting and dedup are per account. (10
// million events in 10,000 accounts, the template journey's four
// predicates, measured alone, from events: 2.7 s of CPU, from 4.5-5 s for
// the four sorted reads.) It holds the arrays of every account of the read
// at once: about 100-200 bytes per event of those names, when measured
// with the ids as text (the page above, 2 million such events, failed
// under a 200 MB limit and ran under 400 MB).
//
// The arrays hold the ids as hashes, not as text: ClickHouse gathers,
// sorts and filters arrays of numbers for less than arrays of strings (a
// backfill of 100 million events: 27.1 to 28.1 s against 29.0 s and
// 31.9 s with the ids as text, runs alternated in one process).
//
// The rows are those of the sorted reads: account, messageId, user, name,
// time, milliseconds, properties (empty for a name no milestone filters).
// A backfill page's read runs on one thread (accountSet.oneThread).
func onePassRead(tenant string, need map[string]accountSet, plan []*fetch, now time.Time) (string, []any, bool) {
	var names []string
	withProps := map[string]bool{}
	filtered := 0
	for _, f := range plan {
		if _, ok := need[f.name]; !ok {
			continue
		}
		if !slices.Contains(names, f.name) {
			names = append(names, f.name)
		}
		if len(f.where) > 0 {
			withProps[f.name] = true
			filtered++
		}
	}
	if len(names) == 0 || filtered > 64 {
		return "", nil, false
	}
	now = now.UTC()
	sec, ms := now.Truncate(time.Second), uint16(now.Nanosecond()/1e6)
	var args []any
	// Each event is a tuple r: r.1 time, r.2 milliseconds, r.3 messageId's
	// hash, r.4 user's hash (0 without one), r.5 its name's index in names
	// (from 1), r.6 a bit per filtered predicate it matches, r.7 its
	// properties.
	nameList := "[" + strings.TrimSuffix(strings.Repeat("?, ", len(names)), ", ") + "]"
	for _, n := range names {
		args = append(args, n)
	}
	flags := []string{"toUInt64(0)"}
	bit := 0
	bits := make([]int, len(plan))
	for i, f := range plan {
		bits[i] = -1
		if _, ok := need[f.name]; !ok || len(f.where) == 0 {
			continue
		}
		filter, filterArgs := whereSQL("properties", f.where)
		flags = append(flags, fmt.Sprintf("if(name = ? AND %s, %d, 0)", filter, uint64(1)<<bit))
		args = append(append(args, f.name), filterArgs...)
		bits[i] = bit
		bit++
	}
	props := "''"
	var propNames []string
	for _, n := range names {
		if withProps[n] {
			propNames = append(propNames, n)
		}
	}
	if len(propNames) > 0 {
		props = "if(name IN ?, properties, '')"
		args = append(args, chstore.In(propNames))
	}
	event := fmt.Sprintf("(timestamp, timestamp_ms, message_hash, user_hash, toUInt8(indexOf(%s, name)), %s, %s)",
		nameList, strings.Join(flags, " + "), props)
	// The accounts: when every name has the same (a page, or a notice's
	// accounts on one journey), their range or list and the names; else
	// all of them, over the sort key, and each name's own.
	same := true
	for _, n := range names[1:] {
		same = same && need[n].contiguous == need[names[0]].contiguous && slices.Equal(need[n].ids, need[names[0]].ids)
	}
	var scope string
	var whereArgs []any
	if same {
		cond, condArgs := need[names[0]].where()
		scope, whereArgs = cond+" AND name IN ?", append(condArgs, chstore.In(names))
	} else {
		var all []string
		for _, n := range names {
			all = append(all, need[n].ids...)
		}
		slices.Sort(all)
		whereArgs = []any{chstore.In(slices.Compact(all))}
		var perName []string
		for _, n := range names {
			cond, condArgs := need[n].where()
			perName = append(perName, "(name = ? AND "+cond+")")
			whereArgs = append(append(whereArgs, n), condArgs...)
		}
		scope = "account_id IN ? AND (" + strings.Join(perName, " OR ") + ")"
	}
	// Each predicate's events, from s: the account's events, sorted, each
	// messageId of a name once.
	var parts []string
	for i, f := range plan {
		k := slices.Index(names, f.name)
		if k < 0 {
			continue
		}
		base := fmt.Sprintf("arrayFilter(r -> r.5 = %d, s)", k+1)
		if bits[i] >= 0 {
			base = fmt.Sprintf("arrayFilter(r -> r.5 = %d AND bitTest(r.6, %d), s)", k+1, bits[i])
		}
		if f.firstN > 0 {
			parts = append(parts, fmt.Sprintf("arraySlice(%s, 1, %d)", base, f.firstN))
		}
		if f.users > 0 {
			u := fmt.Sprintf("u%d", i)
			parts = append(parts, fmt.Sprintf("arraySlice(arrayFilter((r, c) -> c = 1, arrayFilter(r -> r.4 != 0, %s) AS %s, arrayEnumerateUniq(arrayMap(r -> r.4, %s))), 1, %d)",
				base, u, u, f.users))
		}
		if f.days {
			// Each day's first, up to the first day by which every window
			// holds (all of them when one never does): a threshold of n
			// days in w holds on day j when day j-n+1 is less than w days
			// before it. A milestone's walk stops where it is reached.
			b, d := fmt.Sprintf("b%d", i), fmt.Sprintf("d%d", i)
			days := fmt.Sprintf("arrayFilter((r, c) -> c = 1, %s AS %s, arrayEnumerateUniq(arrayMap(r -> toDate(r.1), %s))) AS %s", base, b, b, d)
			var reach []string
			for _, w := range f.windows {
				reach = append(reach, fmt.Sprintf("arrayFirstIndex((r, j) -> j >= %d AND toUInt32(toDate(r.1)) - toUInt32(toDate(%s[j - %d].1)) < %d, %s, arrayEnumerate(%s))",
					w.n, d, w.n-1, w.days, d, d))
			}
			until := fmt.Sprintf("if(has([%s] AS reach%d, 0), length(%s), arrayMax(reach%d))", strings.Join(reach, ", "), i, d, i)
			parts = append(parts, fmt.Sprintf("arraySlice(%s, 1, %s)", days, until))
		}
	}
	q := `SELECT account_id, toString(e.3), if(e.4 = 0, '', toString(e.4)), ` + nameList + `[e.5], e.1, e.2, e.7
		FROM (SELECT account_id, arrayConcat(` + strings.Join(parts, ", ") + `) AS es
			FROM (SELECT account_id, arraySort(groupArray(` + event + `)) AS sorted,
					arrayFilter((r, c) -> c = 1, sorted, arrayEnumerateUniq(arrayMap(r -> r.5, sorted), arrayMap(r -> r.3, sorted))) AS s
				FROM events_by_name WHERE tenant_id = ? AND ` + scope + `
					AND (timestamp < ? OR (timestamp = ? AND timestamp_ms <= ?))
				GROUP BY account_id))
		ARRAY JOIN es AS e`
	for _, n := range names {
		if need[n].oneThread {
			q += ` SETTINGS max_threads = 1`
			break
		}
	}
	all := append(slices.Clone(args[:len(names)]), args...) // the outer name list, then the inner query's
	all = append(append(all, tenant), whereArgs...)
	all = append(all, sec, sec, ms)
	return q, all, true
}

// sortedReads reads each predicate's events with a query of its own,
// sorted by account and time and reduced with LIMIT BY.
func sortedReads(ctx context.Context, db chstore.Store, tenant string, need map[string]accountSet, plan []*fetch, now time.Time) (map[string][]progress.Event, error) {
	out := map[string][]progress.Event{}
	now = now.UTC()
	sec, ms := now.Truncate(time.Second), uint16(now.Nanosecond()/1e6)
	withProps := map[string]bool{}
	for _, f := range plan {
		withProps[f.name] = withProps[f.name] || len(f.where) > 0
	}
	const order = "ORDER BY account_id, timestamp, timestamp_ms, message_hash, user_hash"
	type read struct {
		q         string
		args      []any
		withProps bool
		out       map[string][]progress.Event
	}
	var reads []*read
	for _, f := range plan {
		set, ok := need[f.name]
		if !ok {
			continue
		}
		cond, setArgs := set.where()
		props := "''"
		if withProps[f.name] {
			props = "properties"
		}
		// The rows as scanEvents reads them, with the hashes as text.
		cols := "account_id, toString(message_hash), if(user_hash = 0, '', toString(user_hash)), name, timestamp, timestamp_ms, props"
		// Each messageId once: its earliest row, as progress.Distinct keeps.
		distinct := `(SELECT account_id, message_hash, user_hash, name, timestamp, timestamp_ms, ` + props + ` AS props
			FROM events_by_name WHERE tenant_id = ? AND ` + cond + ` AND name = ?
				AND (timestamp < ? OR (timestamp = ? AND timestamp_ms <= ?))
			` + order + ` LIMIT 1 BY account_id, message_hash)`
		args := append(append([]any{tenant}, setArgs...), f.name, sec, sec, ms)
		if !f.all && len(f.where) > 0 {
			filter, filterArgs := whereSQL("props", f.where)
			distinct = `(SELECT * FROM ` + distinct + ` WHERE ` + filter + `)`
			args = append(args, filterArgs...)
		}
		add := func(q string, extra ...any) {
			reads = append(reads, &read{q: q, args: append(slices.Clone(args), extra...), withProps: withProps[f.name]})
		}
		if f.all {
			add(`SELECT ` + cols + ` FROM ` + distinct)
		} else {
			if f.firstN > 0 {
				add(`SELECT `+cols+` FROM `+distinct+` `+order+` LIMIT ? BY account_id`, f.firstN)
			}
			if f.users > 0 {
				add(`SELECT `+cols+` FROM (SELECT * FROM `+distinct+` WHERE user_hash != 0 `+order+` LIMIT 1 BY account_id, user_hash)
					`+order+` LIMIT ? BY account_id`, f.users)
			}
			if f.days {
				add(`SELECT ` + cols + ` FROM ` + distinct + ` ` + order + ` LIMIT 1 BY account_id, toDate(timestamp)`)
			}
		}
	}
	// The reads run at once, chstore.ReadsInFlight at a time, each into
	// its own map; they are merged in their order, so the result doesn't
	// depend on which finished first.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(chstore.ReadsInFlight)
	for _, r := range reads {
		g.Go(func() error {
			r.out = map[string][]progress.Event{}
			return scanEvents(gctx, db, r.q, r.args, r.withProps, r.out)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for _, r := range reads {
		for account, evs := range r.out {
			out[account] = append(out[account], evs...)
		}
	}
	return out, nil
}

// accountSetsOf wraps each name's accounts, as a part of round.
func accountSetsOf(need map[string][]string, round accountSet) map[string]accountSet {
	out := make(map[string]accountSet, len(need))
	for name, ids := range need {
		out[name] = accountSet{ids: ids, contiguous: round.contiguous, oneThread: round.oneThread}
	}
	return out
}

// scanEvents runs q and adds its events to out, by account.
func scanEvents(ctx context.Context, db chstore.Store, q string, args []any, withProps bool, out map[string][]progress.Event) error {
	rows, err := db.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("read milestone events: %w", err)
	}
	for rows.Next() {
		var account, rawProps string
		var ms uint16
		var e progress.Event
		if err := rows.Scan(&account, &e.MessageID, &e.User, &e.Name, &e.At, &ms, &rawProps); err != nil {
			return err
		}
		e.At = e.At.Add(time.Duration(ms) * time.Millisecond)
		if withProps && rawProps != "" {
			// Properties that are not a JSON object match no condition.
			_ = json.Unmarshal([]byte(rawProps), &e.Properties)
		}
		out[account] = append(out[account], e)
	}
	return nil
}

// rowColumns are account_onboarding's columns, in readRows' and
// insertRows' order.
var rowColumns = []string{"account_id", "journey_id", "status", "start", "first_event_at", "state", "evaluated_at"}

// ReadRows reads the latest stored evaluation of a tenant's accounts:
// those in ids, or all when ids is nil, narrowed by extra, an SQL
// fragment ("AND status = ? ORDER BY account_id LIMIT ?") with its args.
func ReadRows(ctx context.Context, db chstore.Store, tenant string, ids []string, extra string, args ...any) ([]Row, error) {
	q := "SELECT " + strings.Join(rowColumns, ", ") + " FROM account_onboarding FINAL WHERE tenant_id = ?"
	all := []any{tenant}
	if ids != nil {
		q += " AND account_id IN ?"
		all = append(all, chstore.In(ids))
	}
	q += " " + extra
	all = append(all, args...)
	rows, err := db.Query(ctx, q, all...)
	if err != nil {
		return nil, fmt.Errorf("read account onboarding: %w", err)
	}
	out := make([]Row, 0, rows.Len())
	for rows.Next() {
		var r Row
		var state string
		if err := rows.Scan(&r.AccountID, &r.JourneyID, &r.Status, &r.Start, &r.FirstEventAt, &state, &r.EvaluatedAt); err != nil {
			return nil, err
		}
		if state != "" {
			r.encoded = state
			r.State = &progress.State{}
			if err := json.Unmarshal([]byte(state), r.State); err != nil {
				return nil, fmt.Errorf("account %s: stored state: %w", r.AccountID, err)
			}
		}
		out = append(out, r)
	}
	return out, nil
}

func stateJSON(s *progress.State) string {
	if s == nil {
		return ""
	}
	b, _ := json.Marshal(s)
	return string(b)
}

// sameRow reports whether b would store nothing new over a.
func sameRow(a, b *Row) bool {
	return a.JourneyID == b.JourneyID && a.Status == b.Status &&
		a.Start.Equal(b.Start) && a.FirstEventAt.Equal(b.FirstEventAt) &&
		(a.State == nil) == (b.State == nil) && (a.State == nil || a.State.Equal(*b.State))
}

func insertRows(ctx context.Context, db chstore.Store, tenant string, rs []Row) error {
	if len(rs) == 0 {
		return nil
	}
	rows := make([][]any, len(rs))
	for i, r := range rs {
		rows[i] = []any{tenant, r.AccountID, r.JourneyID, r.Status, r.Start.UTC(), r.FirstEventAt.UTC(),
			r.stateText(), r.EvaluatedAt.UTC(), uint64(r.EvaluatedAt.UnixNano())}
	}
	cols := append([]string{"tenant_id"}, rowColumns...)
	if err := db.Insert(ctx, "account_onboarding", append(cols, "version"), rows); err != nil {
		return fmt.Errorf("store account onboarding: %w", err)
	}
	return nil
}
