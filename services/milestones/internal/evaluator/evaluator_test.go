package evaluator

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/signals"
	"github.com/stickpoint/stickpoint/pkg/specfile"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	ingest "github.com/stickpoint/stickpoint/services/ingest/migrations"
	"github.com/stickpoint/stickpoint/services/milestones/internal/journey"
	"github.com/stickpoint/stickpoint/services/milestones/internal/journeys"
	"github.com/stickpoint/stickpoint/services/milestones/internal/progress"
	"github.com/stickpoint/stickpoint/services/milestones/migrations"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

var now0 = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

func days(d float64) time.Duration { return time.Duration(d * float64(journey.Day)) }

type env struct {
	t    testing.TB
	db   chstore.Store
	bus  *natsjs.Bus
	js   *journeys.Store
	eval *Evaluator
	now  time.Time
	seq  int
}

func newEnv(t testing.TB, db chstore.Store) *env {
	t.Helper()
	ctx := t.Context()
	if _, err := chstore.Migrate(ctx, db, "ingest", ingest.FS); err != nil {
		t.Fatal(err)
	}
	if _, err := chstore.Migrate(ctx, db, signals.Component, signals.Migrations); err != nil {
		t.Fatal(err)
	}
	if _, err := chstore.Migrate(ctx, db, "milestones", migrations.FS); err != nil {
		t.Fatal(err)
	}
	bus := testutil.NATS(t)
	js, err := journeys.Open(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, db: db, bus: bus, js: js, now: now0}
	if e.eval, err = New(db, js, signals.NewEmitter(bus, db), testutil.Logger(t)); err != nil {
		t.Fatal(err)
	}
	e.eval.Now = func() time.Time { return e.now }
	return e
}

// event is a stored track event (or a group call when name is "").
type event struct {
	tenant, account, id, user, name string
	at                              time.Time
	props                           string
}

func (e *env) insert(evs ...event) {
	e.t.Helper()
	var rows [][]any
	for _, ev := range evs {
		typ := "track"
		if ev.name == "" {
			typ = "group"
		}
		if ev.id == "" {
			e.seq++
			ev.id = fmt.Sprintf("m-%d", e.seq)
		}
		rows = append(rows, []any{ev.tenant, ev.account, ev.id, typ, ev.name, ev.user, "", "src",
			ev.at.Truncate(time.Second), uint16(ev.at.Nanosecond() / 1e6), ev.at.Truncate(time.Second), ev.at.Truncate(time.Second), e.now.Truncate(time.Second), ev.props, "", "", ""})
	}
	cols := []string{"tenant_id", "account_id", "message_id", "type", "name", "user_id", "anonymous_id",
		"source_id", "timestamp", "timestamp_ms", "original_timestamp", "sent_at", "received_at", "properties", "traits", "context", "previous_id"}
	if err := e.db.Insert(e.t.Context(), "events", cols, rows); err != nil {
		e.t.Fatal(err)
	}
}

// group records a group call: its traits and its event.
func (e *env) group(tenant, account string, at time.Time, traits map[string]any) {
	e.t.Helper()
	raw, _ := json.Marshal(traits)
	e.seq++
	id := fmt.Sprintf("g-%d", e.seq)
	if err := e.db.Insert(e.t.Context(), "account_traits", accounts.TraitsColumns,
		[][]any{accounts.TraitsRow(tenant, account, raw, at, id)}); err != nil {
		e.t.Fatal(err)
	}
	e.insert(event{tenant: tenant, account: account, id: id, at: at})
}

func (e *env) put(tenant, source string) journeys.Stored {
	e.t.Helper()
	st, _, err := e.js.Put(e.t.Context(), tenant, []byte(source))
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

func (e *env) evaluate(tenant string, ids ...string) Result {
	e.t.Helper()
	return e.evaluateSince(time.Time{}, tenant, ids...)
}

// evaluateSince evaluates as a notice of events from since on does.
func (e *env) evaluateSince(since time.Time, tenant string, ids ...string) Result {
	e.t.Helper()
	r, err := e.eval.Evaluate(e.t.Context(), tenant, ids, "test", since)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *env) rows(tenant string) map[string]Row {
	e.t.Helper()
	rs, err := ReadRows(e.t.Context(), e.db, tenant, nil, "")
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]Row{}
	for _, r := range rs {
		out[r.AccountID] = r
	}
	return out
}

// signals lists a tenant's recorded signals as "account kind milestone".
func (e *env) signals(tenant string) []string {
	e.t.Helper()
	sigs, err := signals.List(e.t.Context(), e.db, tenant, signals.Filter{Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, s := range sigs {
		out = append(out, s.GetAccountId()+" "+s.GetKind()+" "+s.GetOnboarding().GetMilestoneId())
	}
	slices.Sort(out)
	return out
}

// published counts the messages on the SIGNALS stream for a tenant.
func (e *env) published(tenant string) uint64 {
	e.t.Helper()
	s, err := e.bus.JS.Stream(e.t.Context(), natsjs.SignalsStream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(e.t.Context(), jetstream.WithSubjectFilter("signals."+tenant+".>"))
	if err != nil {
		e.t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

func TestTheDoneWhenAccounts(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		e := newEnv(t, db)
		e.put("t1", journey.Template)
		pro := func(created time.Time) map[string]any {
			return map[string]any{"plan": "pro", "created_at": created.Format(time.RFC3339), "csm_email": "ann@example.com"}
		}
		start := now0.Add(-days(40))
		e.group("t1", "complete", start, pro(start))
		chart := `{"kind":"chart"}`
		e.insert(
			event{tenant: "t1", account: "complete", user: "a", name: "Source Connected", at: start.Add(time.Hour)},
			event{tenant: "t1", account: "complete", user: "a", name: "Report Built", at: start.Add(2 * time.Hour), props: chart},
			event{tenant: "t1", account: "complete", user: "a", name: "Report Built", at: start.Add(3 * time.Hour), props: `{"kind":"table"}`},
			event{tenant: "t1", account: "complete", user: "a", name: "Report Viewed", at: start.Add(days(1))},
			event{tenant: "t1", account: "complete", user: "b", name: "Report Viewed", at: start.Add(days(1))},
			event{tenant: "t1", account: "complete", user: "c", name: "Report Viewed", at: start.Add(days(2))},
			event{tenant: "t1", account: "complete", user: "a", name: "Logged In", at: start.Add(days(3))},
			event{tenant: "t1", account: "complete", user: "a", name: "Logged In", at: start.Add(days(4))},
			event{tenant: "t1", account: "complete", user: "a", name: "Logged In", at: start.Add(days(5))},
		)
		first := now0.Add(-days(30))
		e.group("t1", "first-only", first, pro(first))
		e.insert(
			event{tenant: "t1", account: "first-only", user: "a", name: "Source Connected", at: first.Add(time.Hour)},
			event{tenant: "t1", account: "first-only", user: "a", name: "Report Built", id: "rb-1", at: first.Add(2 * time.Hour), props: chart},
			// The same messageId again, re-sent later: a second row must
			// not make the two reports the threshold needs.
			event{tenant: "t1", account: "first-only", user: "a", name: "Report Built", id: "rb-1", at: first.Add(5 * time.Hour), props: chart},
			// Not a chart or table: filtered out.
			event{tenant: "t1", account: "first-only", user: "a", name: "Report Built", at: first.Add(6 * time.Hour), props: `{"kind":"pie"}`},
		)
		e.group("t1", "idle-10", now0.Add(-days(10)), pro(now0.Add(-days(10))))
		e.group("t1", "idle-4", now0.Add(-days(4)), pro(now0.Add(-days(4))))
		// A free account follows no journey.
		e.group("t1", "free", now0.Add(-days(4)), map[string]any{"plan": "free"})

		ids := []string{"complete", "first-only", "idle-10", "idle-4", "free"}
		r := e.evaluate("t1", ids...)
		if r.Accounts != 5 || r.Changed != 5 {
			t.Fatalf("first evaluation: %+v", r)
		}
		rows := e.rows("t1")
		for id, want := range map[string]string{"complete": progress.Completed, "first-only": progress.Stalled, "idle-10": progress.Stalled, "idle-4": progress.Late, "free": ""} {
			if rows[id].Status != want {
				t.Errorf("%s: status %q, want %q", id, rows[id].Status, want)
			}
		}
		if c := rows["complete"]; !c.Start.Equal(start) || c.State.TimeToFirstValue != time.Hour {
			t.Errorf("complete: start %v ttfv %v", c.Start, c.State.TimeToFirstValue)
		}
		if fo := rows["first-only"].State.Milestones[1]; fo.Reached || fo.Progress != 1 {
			t.Errorf("first-only first_report: %+v (one distinct chart report)", fo)
		}
		want := []string{
			"complete milestone_reached connected", "complete milestone_reached first_report", "complete milestone_reached habit",
			"complete milestone_reached team", "complete onboarding_completed ",
			"first-only milestone_reached connected", "first-only onboarding_stalled ",
			"idle-10 onboarding_stalled connected", "idle-4 onboarding_late connected",
		}
		if got := e.signals("t1"); !slices.Equal(got, want) {
			t.Fatalf("signals:\n%v\nwant\n%v", got, want)
		}
		if n := e.published("t1"); n != uint64(len(want)) {
			t.Fatalf("%d signals published, want %d", n, len(want))
		}
		// Evaluated again (a redelivered notice, the sweep): nothing new.
		if r := e.evaluate("t1", ids...); r.Changed != 0 || r.Signals != 0 {
			t.Fatalf("re-evaluation: %+v", r)
		}
		if n := e.published("t1"); n != uint64(len(want)) {
			t.Fatalf("%d signals published after a re-evaluation, want %d", n, len(want))
		}
	})
}

func TestLateAndOutOfOrderEventsSignalEachTransitionOnce(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		e := newEnv(t, db)
		e.put("t1", "id: j\nstall_after: 30d\nmilestones:\n"+
			"  - {id: one, event: A, target: 10d}\n"+
			"  - {id: two, event: B, target: 20d, threshold: {distinct_users: 2}}\n")
		start := now0.Add(-days(15))
		e.group("t1", "acc", start, map[string]any{"created_at": start.Format(time.RFC3339)})
		// Newest first: B by u2, B by u1, then A, each evaluated as it lands.
		for _, ev := range []event{
			{tenant: "t1", account: "acc", user: "u2", name: "B", at: start.Add(days(6))},
			{tenant: "t1", account: "acc", user: "u1", name: "B", at: start.Add(days(3)), id: "b-1"},
			{tenant: "t1", account: "acc", user: "u1", name: "B", at: start.Add(days(3)), id: "b-1"}, // redelivered
			{tenant: "t1", account: "acc", user: "u1", name: "A", at: start.Add(days(1))},
		} {
			e.insert(ev)
			e.evaluateSince(ev.at, "t1", "acc")
			e.evaluateSince(ev.at, "t1", "acc") // a second notice of the same insert
		}
		got := e.signals("t1")
		want := []string{"acc milestone_reached one", "acc milestone_reached two", "acc onboarding_completed ", "acc onboarding_stalled one"}
		if !slices.Equal(got, want) {
			t.Fatalf("signals %v, want %v", got, want)
		}
		st := e.rows("t1")["acc"].State
		if !st.Milestones[1].ReachedAt.Equal(start.Add(days(6))) || !st.Milestones[0].ReachedAt.Equal(start.Add(days(1))) {
			t.Fatalf("reached times: %+v", st.Milestones)
		}
	})
}

func TestTimeAloneMovesAnAccountOnce(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		e := newEnv(t, db)
		e.put("t1", journey.Template)
		start := now0
		e.group("t1", "quiet", start, map[string]any{"plan": "team"})
		e.evaluate("t1", "quiet") // the group call's notice
		var seen []string
		for _, d := range []float64{0, 0.5, 1.5, 1.6, 3.5, 5, 6.5, 8, 20} {
			e.now = start.Add(days(d))
			if _, err := e.eval.Sweep(t.Context(), []string{"t1", "t2"}); err != nil {
				t.Fatal(err)
			}
			seen = append(seen, fmt.Sprintf("%.1f:%s", d, e.rows("t1")["quiet"].Status))
		}
		want := []string{"0.0:on_track", "0.5:on_track", "1.5:at_risk", "1.6:at_risk", "3.5:late", "5.0:late", "6.5:stalled", "8.0:stalled", "20.0:stalled"}
		if !slices.Equal(seen, want) {
			t.Fatalf("statuses %v, want %v", seen, want)
		}
		if got := e.signals("t1"); !slices.Equal(got, []string{"quiet onboarding_at_risk connected", "quiet onboarding_late connected", "quiet onboarding_stalled connected"}) {
			t.Fatalf("signals %v", got)
		}
	})
}

// liveDay is one day of a generated live history: the events stored
// that day (in random order, some twice), the accounts the day's notices
// name, and the earliest event time they stored.
type liveDay struct {
	now    time.Time
	events []event
	ids    []string
	since  time.Time
}

// groupCall is an account's group call, with its traits.
type groupCall struct {
	account string
	at      time.Time
	traits  map[string]any
}

// liveHistory generates a tenant's accounts (a third days old, the
// others weeks; a third diligent) and their history, a day at a time
// until now0.
func liveHistory(seed uint64) (groups []groupCall, live []liveDay, ids []string) {
	r := rand.New(rand.NewPCG(seed, seed))
	start := now0.Add(-days(40))
	names := []string{"Source Connected", "Report Built", "Report Viewed", "Logged In", "Other"}
	var history []event
	for a := range 12 {
		id := fmt.Sprintf("acc-%02d", a)
		ids = append(ids, id)
		created := start.Add(days(float64(r.IntN(10))))
		if a%3 == 0 {
			created = now0.Add(-days(float64(r.IntN(3)) + 0.3))
		}
		groups = append(groups, groupCall{account: id, at: created, traits: map[string]any{"plan": "pro", "created_at": created.Format(time.RFC3339)}})
		if a%3 == 1 { // a diligent account: every milestone within a few days
			for i, name := range []string{"Source Connected", "Report Built", "Report Built", "Report Viewed", "Report Viewed", "Report Viewed", "Logged In", "Logged In", "Logged In"} {
				history = append(history, event{account: id, user: fmt.Sprintf("u%d", i%3), name: name,
					at: created.Add(days(float64(i)/2 + r.Float64()/3)), props: `{"kind":"chart"}`})
			}
		}
		for range r.IntN(25) {
			history = append(history, event{account: id, user: fmt.Sprintf("u%d", r.IntN(4)),
				name: names[r.IntN(len(names))], at: created.Add(time.Duration(r.Int64N(int64(days(30))))),
				props: []string{`{"kind":"chart"}`, `{"kind":"table"}`, `{}`}[r.IntN(3)]})
		}
	}
	slices.SortFunc(history, func(a, b event) int { return a.at.Compare(b.at) })
	for day := start; !day.After(now0); day = day.Add(journey.Day) {
		d := liveDay{now: day, since: day}
		dirty := map[string]bool{}
		for _, ev := range history {
			if !ev.at.After(day) && ev.at.After(day.Add(-journey.Day)) {
				ev.id = fmt.Sprintf("h-%s-%d", ev.account, ev.at.UnixNano())
				d.events = append(d.events, ev)
				if r.IntN(5) == 0 {
					d.events = append(d.events, ev)
				}
				dirty[ev.account] = true
				if ev.at.Before(d.since) {
					d.since = ev.at
				}
			}
		}
		for _, g := range groups { // the group call's own notice
			if !g.at.After(day) && g.at.After(day.Add(-journey.Day)) {
				dirty[g.account] = true
				if g.at.Before(d.since) {
					d.since = g.at
				}
			}
		}
		r.Shuffle(len(d.events), func(i, j int) { d.events[i], d.events[j] = d.events[j], d.events[i] })
		for id := range dirty {
			d.ids = append(d.ids, id)
		}
		slices.Sort(d.ids)
		live = append(live, d)
	}
	return groups, live, ids
}

// play stores a tenant's live history and evaluates it as the notices and
// the sweep would, a day at a time, with ev (the env's, or another).
func (e *env) play(ev *Evaluator, tenant string, groups []groupCall, live []liveDay, h *accounts.History) {
	e.t.Helper()
	for _, g := range groups {
		e.group(tenant, g.account, g.at, g.traits)
		if h != nil {
			raw, _ := json.Marshal(g.traits)
			h.Add([]events.Event{{TenantID: tenant, AccountID: g.account, MessageID: fmt.Sprintf("g-%s", g.account), Type: events.TypeGroup, Timestamp: g.at, Traits: raw}})
		}
	}
	for _, d := range live {
		e.now = d.now
		var today []event
		for _, x := range d.events {
			x.tenant = tenant
			today = append(today, x)
		}
		if len(today) > 0 {
			e.insert(today...)
		}
		if h != nil {
			var stored []events.Event
			for _, x := range today {
				stored = append(stored, events.Event{TenantID: tenant, AccountID: x.account, MessageID: x.id, Type: events.TypeTrack, Name: x.name,
					UserID: x.user, Timestamp: x.at, Properties: json.RawMessage(x.props)})
			}
			h.Add(stored)
		}
		if _, err := ev.Evaluate(e.t.Context(), tenant, d.ids, "test", d.since); err != nil {
			e.t.Fatal(err)
		}
		if _, err := ev.Sweep(e.t.Context(), []string{tenant}); err != nil {
			e.t.Fatal(err)
		}
	}
}

func TestBackfillEndsInTheStateOfLiveProcessing(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		e := newEnv(t, db)
		e.put("t1", journey.Template)
		groups, live, accounts := liveHistory(7)
		e.play(e.eval, "t1", groups, live, nil)
		liveRows := e.rows("t1")
		if err := db.Exec(t.Context(), "TRUNCATE TABLE account_onboarding"); err != nil {
			t.Fatal(err)
		}
		e.eval.pageSize = 5 // three pages, pagesInFlight at once
		res, err := e.eval.RunBackfill(t.Context(), "t1", "test")
		if err != nil || res.Accounts != len(accounts) {
			t.Fatalf("backfill: %+v %v", res, err)
		}
		back := e.rows("t1")
		statuses := map[string]int{}
		for _, id := range accounts {
			l, b := liveRows[id], back[id]
			if stateJSON(l.State) != stateJSON(b.State) || l.Status != b.Status || !l.Start.Equal(b.Start) || !l.FirstEventAt.Equal(b.FirstEventAt) {
				t.Errorf("%s: live %s %s\nbackfill %s %s", id, l.Status, stateJSON(l.State), b.Status, stateJSON(b.State))
			}
			statuses[l.Status]++
		}
		if len(statuses) < 2 {
			t.Errorf("every account ended %v: the history tests too little", statuses)
		}
		bf, ok, err := e.js.Backfill(t.Context(), "t1")
		if err != nil || !ok || !bf.Finished || bf.Total != int64(len(accounts)) || bf.Done != int64(len(accounts)) || bf.Err != "" {
			t.Fatalf("backfill status: %+v", bf)
		}
	})
}

// A backtest's evaluator reads its accounts from memory: played the same
// live history, it stores the same evaluations and emits the same
// signals as the service's, which reads ClickHouse.
func TestTheMemoryStoreGivesTheAnswersOfClickHouse(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		e := newEnv(t, db)
		e.put("t1", journey.Template)
		e.put("t2", journey.Template)
		groups, live, ids := liveHistory(9)
		e.play(e.eval, "t1", groups, live, nil)
		mem, err := New(db, e.js, signals.NewEmitter(e.bus, db), testutil.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		mem.Now = e.eval.Now
		h, sigs := accounts.NewHistory(), signals.NewMemory()
		kept := mem.UseMemory(h, sigs)
		e.play(mem, "t2", groups, live, h)

		want := e.rows("t1")
		rows, err := kept.Rows(t.Context(), "t2", accountSet{ids: ids})
		if err != nil || len(rows) != len(ids) {
			t.Fatalf("memory rows: %d of %d, %v", len(rows), len(ids), err)
		}
		statuses := map[string]int{}
		for _, g := range rows {
			w := want[g.AccountID]
			if stateJSON(w.State) != stateJSON(g.State) || w.Status != g.Status || !w.Start.Equal(g.Start) || !w.FirstEventAt.Equal(g.FirstEventAt) ||
				!w.EvaluatedAt.Equal(g.EvaluatedAt) {
				t.Errorf("%s: ClickHouse %s %s %s %s\nmemory     %s %s %s %s", g.AccountID, w.Status, w.Start, w.FirstEventAt, stateJSON(w.State),
					g.Status, g.Start, g.FirstEventAt, stateJSON(g.State))
			}
			if g.encoded != "" && g.encoded != stateJSON(g.State) { // encoded lazily; never stale
				t.Errorf("%s: kept encoded as %s, its state is %s", g.AccountID, g.encoded, stateJSON(g.State))
			}
			if st := kept.Statuses("t2", []string{g.AccountID}); st[g.AccountID] != w.Status {
				t.Errorf("%s: status %q, want %q", g.AccountID, st[g.AccountID], w.Status)
			}
			statuses[w.Status]++
		}
		if len(statuses) < 2 {
			t.Errorf("every account ended %v: the history tests too little", statuses)
		}
		var recorded []string
		keptSigs, err := sigs.Signals("t2")
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range keptSigs {
			recorded = append(recorded, s.GetAccountId()+" "+s.GetKind()+" "+s.GetOnboarding().GetMilestoneId())
		}
		slices.Sort(recorded)
		if w := e.signals("t1"); !slices.Equal(w, recorded) || len(w) == 0 {
			t.Errorf("signals differ:\nClickHouse %q\nmemory     %q", w, recorded)
		}
		if n, m := len(e.rows("t2")), len(e.signals("t2")); n != 0 || m != 0 {
			t.Errorf("the memory store wrote %d rows and %d signals to ClickHouse", n, m)
		}
	})
}

func TestTenantsAreIsolated(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		e := newEnv(t, db)
		e.put("t1", "id: j\nmilestones: [{id: one, event: A, target: 1d}]\n")
		for _, tenant := range []string{"t1", "t2"} {
			e.group(tenant, "acme", now0.Add(-days(2)), map[string]any{})
			e.insert(event{tenant: tenant, account: "acme", user: "u", name: "A", at: now0.Add(-days(1))})
			e.evaluate(tenant, "acme")
		}
		if got := e.signals("t1"); !slices.Equal(got, []string{"acme milestone_reached one", "acme onboarding_completed "}) {
			t.Fatalf("t1 signals %v", got)
		}
		if got := e.signals("t2"); len(got) != 0 {
			t.Fatalf("t2 has no journey, yet signals %v", got)
		}
		if e.published("t2") != 0 {
			t.Fatal("t2 signals published")
		}
		if r := e.rows("t2")["acme"]; r.Status != "" || r.State != nil {
			t.Fatalf("t2 acme: %+v", r)
		}
		if _, err := e.js.Get(t.Context(), "t2", "j"); err != journeys.ErrNotFound {
			t.Fatalf("t2 sees t1's journey: %v", err)
		}
	})
}

func TestSweepAndReconcileCatchWhatNoNoticeSaid(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		e := newEnv(t, db)
		e.put("t1", "id: j\nmilestones: [{id: one, event: A, target: 5d}]\n")
		e.group("t1", "acc", now0.Add(-days(1)), map[string]any{})
		e.evaluate("t1", "acc")
		// An event whose notice was lost: the sweep, which reads no
		// events, doesn't see it; the reconcile does.
		e.insert(event{tenant: "t1", account: "acc", user: "u", name: "A", at: now0.Add(-time.Hour)})
		if _, err := e.eval.Sweep(t.Context(), []string{"t1"}); err != nil {
			t.Fatal(err)
		}
		if st := e.rows("t1")["acc"].Status; st != progress.OnTrack {
			t.Fatalf("after the sweep: %s", st)
		}
		if _, err := e.eval.Reconcile(t.Context(), "t1", e.now.Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		if st := e.rows("t1")["acc"].Status; st != progress.Completed {
			t.Fatalf("after the reconcile: %s", st)
		}
		// A new journey version: the sweep evaluates states of the old one
		// in full (the backfill does too; this is the net under it).
		e.put("t1", "id: j\nmilestones: [{id: one, event: A, target: 5d}, {id: two, event: B, target: 5d}]\n")
		if _, err := e.eval.Sweep(t.Context(), []string{"t1"}); err != nil {
			t.Fatal(err)
		}
		row := e.rows("t1")["acc"]
		if row.State.JourneyVersion != 2 || len(row.State.Milestones) != 2 || row.Status != progress.OnTrack {
			t.Fatalf("after a new version and a sweep: %+v", row.State)
		}
		if got := e.signals("t1"); !slices.Equal(got, []string{"acc milestone_reached one", "acc onboarding_completed ", "acc onboarding_on_track "}) {
			t.Fatalf("signals %v", got)
		}
	})
}

// allEvents reads every event of the accounts, the reference the reduced
// fetches must agree with.
func allEvents(t *testing.T, db chstore.Store, tenant string, ids []string) map[string][]progress.Event {
	t.Helper()
	out := map[string][]progress.Event{}
	err := scanEvents(t.Context(), db, `SELECT account_id, message_id, if(user_id != '', user_id, anonymous_id), name, timestamp, timestamp_ms, properties FROM events
		WHERE tenant_id = ? AND account_id IN ? AND type IN ('track', 'page', 'screen')`, []any{tenant, chstore.In(ids)}, true, out)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReducedFetchesGiveTheAnswerOfEveryEvent(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		e := newEnv(t, db)
		r := rand.New(rand.NewPCG(11, 12))
		names := []string{"A", "B", "C"}
		var ids []string
		var evs []event
		for a := range 60 {
			id := fmt.Sprintf("acc-%02d", a)
			ids = append(ids, id)
			var own []event
			for i := range r.IntN(30) {
				ev := event{tenant: "t1", account: id, id: fmt.Sprintf("%s-%d", id, i), user: []string{"", "u1", "u2", "u3", "u4"}[r.IntN(5)], name: names[r.IntN(3)],
					at: now0.Add(-days(20)).Add(time.Duration(r.Int64N(int64(days(21))))), props: []string{`{"k":1}`, `{"k":2}`, `{}`}[r.IntN(3)]}
				switch {
				case i > 0 && r.IntN(5) == 0: // a re-sent event, at another time
					src := own[r.IntN(i)]
					ev.id, ev.name, ev.user, ev.props = src.id, src.name, src.user, src.props
				case i > 0 && r.IntN(10) == 0: // a messageId used again by another event
					ev.id = own[r.IntN(i)].id
				}
				own = append(own, ev)
			}
			evs = append(evs, own...)
		}
		e.insert(evs...)
		for round := range 16 {
			var src string
			for m := range 1 + r.IntN(5) {
				threshold := []string{"{count: %d}", "{distinct_users: %d}", "{distinct_days: %d, window: 7d}", "{distinct_days: %d, window: 4d}", "{distinct_days: %d, window: 30d}"}[r.IntN(5)]
				where := ""
				if r.IntN(4) == 0 {
					where = ", where: [{property: k, op: eq, value: 1}]"
				}
				src += fmt.Sprintf("  - {id: m%d, event: %s, target: %dd, threshold: %s%s}\n", m, names[r.IntN(3)], 1+r.IntN(20),
					fmt.Sprintf(threshold, 1+r.IntN(4)), where)
			}
			st := e.put("t1", fmt.Sprintf("id: j%d\nmilestones:\n%s", round, src))
			now := now0.Add(-time.Duration(r.Int64N(int64(days(15)))))
			need := map[string]accountSet{}
			oneThread := round%4 == 0 // as a backfill page's read
			for i, n := range st.Journey.Events() {
				need[n] = accountSet{ids: ids, oneThread: oneThread}
				if i == 0 && round%2 == 1 { // names with accounts of their own, as a notice's on several journeys
					need[n] = accountSet{ids: append(slices.Clone(ids), "acc-without-events")}
				}
			}
			plan := fetches([]journeys.Stored{st}, db.Version().AtLeast(jsonFunctions))
			// Both ways of reading: the one pass where the engine has it,
			// and the sorted reads of older servers.
			reads := map[string]func() (map[string][]progress.Event, error){
				"sorted reads": func() (map[string][]progress.Event, error) {
					return sortedReads(t.Context(), db, "t1", need, plan, now)
				},
			}
			if db.Version().AtLeast(jsonFunctions) {
				reads["one pass"] = func() (map[string][]progress.Event, error) {
					return milestoneEvents(t.Context(), db, "t1", need, plan, now)
				}
			}
			all := allEvents(t, db, "t1", ids)
			start := now0.Add(-days(21))
			for way, read := range reads {
				reduced, err := read()
				if err != nil {
					t.Fatal(err)
				}
				for _, id := range ids {
					got := progress.Evaluate(st.Journey, 1, start, reduced[id], now, nil)
					want := progress.Evaluate(st.Journey, 1, start, all[id], now, nil)
					if stateJSON(&got) != stateJSON(&want) {
						t.Fatalf("%s, round %d, %s, journey\n%s\nreduced: %s\nall:     %s", way, round, id, st.Source, stateJSON(&got), stateJSON(&want))
					}
				}
			}
		}
	})
}

// The one-pass read flags each filtered predicate's events with a bit of
// a UInt64: past 64 of them, the evaluation takes the sorted reads.
func TestOnePassReadHoldsUpTo64FilteredPredicates(t *testing.T) {
	plan := func(n int) []*fetch {
		var out []*fetch
		for i := range n {
			out = append(out, &fetch{name: "A", firstN: 1, where: []specfile.Condition{{Path: []string{"k"}, Op: specfile.OpEq, Value: float64(i)}}})
		}
		return out
	}
	need := map[string]accountSet{"A": {ids: []string{"acc-1"}}}
	if _, _, ok := onePassRead("t1", need, plan(65), now0); ok {
		t.Error("65 filtered predicates: a one-pass read, with more flags than bits")
	}
	// The 64th predicate's bit is the word's last: an event that matches
	// only it is read.
	db := testutil.Store(t, chstore.EngineEmbedded)
	e := newEnv(t, db)
	e.insert(event{tenant: "t1", account: "acc-1", name: "A", at: now0.Add(-time.Hour), props: `{"k":63}`},
		event{tenant: "t1", account: "acc-1", name: "A", at: now0.Add(-time.Hour), props: `{"k":64}`})
	q, args, ok := onePassRead("t1", need, plan(64), now0)
	if !ok {
		t.Fatal("64 filtered predicates: no one-pass read")
	}
	got := map[string][]progress.Event{}
	if err := scanEvents(t.Context(), db, q, args, true, got); err != nil {
		t.Fatal(err)
	}
	if evs := got["acc-1"]; len(evs) != 1 || evs[0].Properties["k"] != float64(63) {
		t.Errorf("read %+v, want the one event with k 63", evs)
	}
}

// An account's first event (its start, without a start trait) stays the
// earliest of its stored events as notices come: a later event leaves it,
// a late one moves it.
func TestTheFirstEventFollowsTheStoredEvents(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		e := newEnv(t, db)
		e.put("t1", "id: j\nstart: none\nmilestones:\n  - {id: one, event: A, target: 10d}\n")
		first := now0.Add(-days(5))
		e.insert(event{tenant: "t1", account: "acc", user: "u1", name: "B", at: first})
		e.evaluateSince(first, "t1", "acc")
		check := func(when string, want time.Time) {
			t.Helper()
			r := e.rows("t1")["acc"]
			if !r.FirstEventAt.Equal(want) || !r.Start.Equal(want) {
				t.Errorf("%s: first event %v, start %v, want %v", when, r.FirstEventAt, r.Start, want)
			}
		}
		check("first evaluated", first)

		later := now0.Add(-days(1))
		e.insert(event{tenant: "t1", account: "acc", user: "u1", name: "B", at: later})
		e.evaluateSince(later, "t1", "acc")
		check("after a later event", first)

		late := now0.Add(-days(8))
		e.insert(event{tenant: "t1", account: "acc", user: "u1", name: "B", at: late})
		e.evaluateSince(late, "t1", "acc")
		check("after a late event", late)

		// The first event is every stored event's (account_activity's), not
		// the notice's span: an event before the span counts too.
		e.insert(event{tenant: "t1", account: "acc", user: "u1", name: "B", at: now0.Add(-days(9))})
		e.evaluateSince(later, "t1", "acc")
		check("with an event before the span", now0.Add(-days(9)))
		e.evaluate("t1", "acc")
		check("reconciled", now0.Add(-days(9)))
	})
}

// Every stored evaluation is announced on accounts.changed, so the
// accounts API's copies in memory drop it; an evaluation that stores
// nothing new announces nothing.
func TestStoredEvaluationsAreAnnounced(t *testing.T) {
	e := newEnv(t, testutil.Store(t, chstore.EngineEmbedded))
	e.eval.Changed = accounts.NewNotifier(e.bus.NC)
	got := make(chan accounts.Changed, 10)
	if _, err := accounts.Listen(e.bus.NC, func(c accounts.Changed) { got <- c }); err != nil {
		t.Fatal(err)
	}
	next := func(what string) string {
		t.Helper()
		select {
		case c := <-got:
			return c.Tenant + ":" + strings.Join(c.Accounts, ",")
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: nothing announced", what)
			return ""
		}
	}
	e.put("t1", journey.Template)
	e.group("t1", "quiet", now0, map[string]any{"plan": "team"})
	e.evaluate("t1", "quiet")
	if c := next("first evaluation"); c != "t1:quiet" {
		t.Errorf("first evaluation announced %s", c)
	}
	e.now = now0.Add(days(1.5)) // at risk
	if _, err := e.eval.Sweep(t.Context(), []string{"t1"}); err != nil {
		t.Fatal(err)
	}
	if c := next("sweep"); c != "t1:quiet" {
		t.Errorf("sweep announced %s", c)
	}
	e.now = now0.Add(days(1.6)) // still at risk: nothing stored
	if _, err := e.eval.Sweep(t.Context(), []string{"t1"}); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-got:
		t.Errorf("an unchanged sweep announced %s:%v", c.Tenant, c.Accounts)
	case <-time.After(200 * time.Millisecond):
	}
}

// A start trait is a string in one of four layouts, or Unix seconds or
// milliseconds; anything else is no time.
func TestParseTimeReadsTheStartTraitsLayouts(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for raw, want := range map[string]time.Time{
		`"2026-03-04T05:06:07Z"`:         at,
		`"2026-03-04T07:06:07.5+02:00"`:  at.Add(500 * time.Millisecond),
		`"2026-03-04T05:06:07"`:          at,
		`"2026-03-04 05:06:07"`:          at,
		`"2026-03-04"`:                   at.Truncate(24 * time.Hour),
		`"2026-03-04T05:06:07\u005a"`:    at, // escaped: decoded as JSON
		fmt.Sprint(at.Unix()):            at,
		fmt.Sprint(at.UnixMilli() + 250): at.Add(250 * time.Millisecond),
		`1.7725e9`:                       time.Unix(1_772_500_000, 0).UTC(),
		`0`:                              {},
		`-5`:                             {},
		`"yesterday"`:                    {},
		`""`:                             {},
		`true`:                           {},
		`null`:                           {},
		`{"at": "2026-03-04"}`:           {},
		``:                               {},
	} {
		got, ok := ParseTime(json.RawMessage(raw))
		if !got.Equal(want) || ok != !want.IsZero() {
			t.Errorf("%s: %v %v, want %v", raw, got, ok, want)
		}
	}
}
