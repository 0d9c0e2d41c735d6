package scorer

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/pkg/signals"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	signalsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/signals/v1"
	"github.com/stickpoint/stickpoint/services/health/internal/model"
	"github.com/stickpoint/stickpoint/services/health/internal/score"
)

// A backtest's scorer reads its accounts from memory: played the same
// live history (usage, pages, cancel-intent events, a cancellation and
// churns, onboarding statuses), a day at a time with the sweep, it stores
// the same scores and churn records and emits the same signals as the
// service's, which reads ClickHouse.
func TestTheMemoryStoreGivesTheAnswersOfClickHouse(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		e := newEnv(t, db)
		e.putModel("t1", testModel)
		e.putModel("t2", testModel)
		mem, err := New(db, e.models, signals.NewEmitter(e.bus, db), testutil.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		mem.Now = e.sc.Now
		h, sigs := accounts.NewHistory(), signals.NewMemory()
		onboarding := map[string]string{}
		kept := mem.UseMemory(h, sigs, func(_ string, ids []string) map[string]string {
			out := map[string]string{}
			for _, id := range ids {
				if st, ok := onboarding[id]; ok {
					out[id] = st
				}
			}
			return out
		})

		r := rand.New(rand.NewPCG(5, 6))
		start := now0.Add(-50 * day).Truncate(day)
		names := []string{"Report Built", "Dashboard Shared", "Alert Created", "Source Connected", "Other", "Data Exported", "Seats Removed"}
		var history []testutil.StoredEvent
		var ids []string
		for a := range 14 {
			id := fmt.Sprintf("acc-%02d", a)
			ids = append(ids, id)
			joined := start.Add(time.Duration(r.IntN(20*24)) * time.Hour)
			traits, _ := json.Marshal(map[string]any{"seats": 2 + r.IntN(8), "industry": []string{"software", "retail"}[r.IntN(2)], "employees": []int{3, 50}[r.IntN(2)]})
			history = append(history, testutil.StoredEvent{Tenant: "", Account: id, Type: "group", At: joined, Properties: string(traits)})
			quits := now0.Add(time.Hour)
			if a%4 == 0 {
				quits = joined.Add(time.Duration(10+r.IntN(20)) * day)
			}
			for at := joined; at.Before(quits) && at.Before(now0); at = at.Add(time.Duration(2+r.IntN(30)) * time.Hour) {
				// Times to the millisecond: the events table reads some in whole seconds.
				ev := testutil.StoredEvent{Account: id, Name: names[r.IntN(len(names))], User: fmt.Sprintf("%s-u%d", id, r.IntN(3)),
					At: at.Add(time.Duration(r.IntN(60_000)) * time.Millisecond)}
				switch r.IntN(8) {
				case 0:
					ev.Type, ev.Name, ev.Properties = "page", "Billing", `{"path":"/settings/billing/plan"}`
				case 1:
					ev.User = "" // anonymous
				}
				history = append(history, ev)
			}
			if a%4 == 0 && quits.Before(now0) {
				history = append(history, testutil.StoredEvent{Account: id, Name: "Subscription Cancelled", User: id + "-u0", At: quits, Properties: `{"reason":"price"}`})
			}
			if a%5 == 1 {
				onboarding[id] = []string{"on_track", "late", "stalled"}[r.IntN(3)]
			}
		}
		slices.SortStableFunc(history, func(a, b testutil.StoredEvent) int { return a.At.Compare(b.At) })
		for i := range history {
			history[i].MessageID = fmt.Sprintf("h-%d", i)
		}
		var rows [][]any
		for id, st := range onboarding {
			rows = append(rows, []any{"t1", id, "j", st, start, start, "", start, uint64(1)})
		}
		if err := db.Insert(t.Context(), "account_onboarding", []string{"tenant_id", "account_id", "journey_id", "status", "start", "first_event_at", "state", "evaluated_at", "version"}, rows); err != nil {
			t.Fatal(err)
		}

		// Live: a day at a time, the day's events are stored, their
		// accounts scored as their notice says, and the sweep runs.
		next := 0
		for now := start.Add(day + 12*time.Hour); !now.After(now0); now = now.Add(day) { // at noon: today has usage
			e.now = now
			var today []testutil.StoredEvent
			for ; next < len(history) && !history[next].At.After(now); next++ {
				today = append(today, history[next])
			}
			if len(today) > 0 {
				var stored []events.Event
				for _, ev := range today {
					if ev.Type == "group" {
						if err := db.Insert(t.Context(), "account_traits", accounts.TraitsColumns,
							[][]any{accounts.TraitsRow("t1", ev.Account, json.RawMessage(ev.Properties), ev.At, ev.MessageID)}); err != nil {
							t.Fatal(err)
						}
						testutil.InsertEvents(t, db, testutil.StoredEvent{Tenant: "t1", Account: ev.Account, MessageID: ev.MessageID, Type: "group", At: ev.At})
						stored = append(stored, events.Event{TenantID: "t2", AccountID: ev.Account, MessageID: ev.MessageID, Type: events.TypeGroup, Timestamp: ev.At, Traits: json.RawMessage(ev.Properties)})
						continue
					}
					ev.Tenant = "t1"
					testutil.InsertEvents(t, db, ev)
					if ev.Type == "" {
						ev.Type = "track"
					}
					stored = append(stored, events.Event{TenantID: "t2", AccountID: ev.Account, MessageID: ev.MessageID, Type: ev.Type, Name: ev.Name, UserID: ev.User,
						Timestamp: ev.At, Properties: json.RawMessage(ev.Properties)})
				}
				h.Add(stored)
				for _, n := range events.StoredNotices(stored) {
					span := Span{From: n.From, To: n.To}
					if _, err := e.sc.Score(t.Context(), "t1", n.Accounts, span, "events"); err != nil {
						t.Fatal(err)
					}
					if _, err := mem.Score(t.Context(), "t2", n.Accounts, span, "events"); err != nil {
						t.Fatal(err)
					}
				}
			}
			if _, err := e.sc.Sweep(t.Context(), []string{"t1"}); err != nil {
				t.Fatal(err)
			}
			if _, err := mem.Sweep(t.Context(), []string{"t2"}); err != nil {
				t.Fatal(err)
			}
		}

		// The rule events of windows that start and end at events, to the
		// second: before the lookback only the churn event counts, after
		// the end none.
		md, err := e.models.Get(t.Context(), "t2")
		if err != nil {
			t.Fatal(err)
		}
		ruleEvents := func(s Store, tenant string, lookback, until time.Time) []string {
			evs, err := s.RuleEvents(t.Context(), tenant, accountSet{ids: ids}, md.Spec, lookback, until)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, e := range evs {
				out = append(out, e.account+" "+e.messageID+" "+e.name+" "+e.at.Format(time.RFC3339Nano))
			}
			slices.Sort(out)
			return out
		}
		for _, w := range [][2]int{{len(history) / 4, len(history) / 2}, {len(history) / 2, len(history) * 3 / 4}, {len(history) * 3 / 4, len(history) - 1}} {
			lookback, until := history[w[0]].At.Truncate(time.Second), history[w[1]].At.Truncate(time.Second)
			for _, lb := range []time.Time{lookback, lookback.Add(time.Second)} {
				for _, u := range []time.Time{until, until.Add(-time.Second)} {
					want, got := ruleEvents(clickHouse{db: db}, "t1", lb, u), ruleEvents(kept, "t2", lb, u)
					if !slices.Equal(want, got) || len(want) == 0 {
						t.Errorf("rule events from %s to %s:\nClickHouse %q\nmemory     %q", lb, u, want, got)
					}
				}
			}
		}

		want, err := ReadRows(t.Context(), db, "t1", "ORDER BY account_id")
		if err != nil {
			t.Fatal(err)
		}
		got, err := mem.store.Rows(t.Context(), "t2", accountSet{ids: ids})
		if err != nil {
			t.Fatal(err)
		}
		if len(want) != len(ids) || len(got) != len(want) {
			t.Fatalf("%d accounts scored from ClickHouse, %d from memory, of %d", len(want), len(got), len(ids))
		}
		bands, churned := map[string]int{}, 0
		for i, w := range want {
			g := got[i]
			if w.AccountID != g.AccountID || w.Score != g.Score || w.Band != g.Band || w.Change != g.Change || w.Fit != g.Fit || w.Onboarding != g.Onboarding ||
				w.Intent != g.Intent || w.AtRisk != g.AtRisk || !w.ChurnedAt.Equal(g.ChurnedAt) || w.stateText() != g.stateText() || !w.EvaluatedAt.Equal(g.EvaluatedAt) {
				t.Errorf("%s:\nClickHouse %d %s %s %v\n%s\nmemory     %d %s %s %v\n%s", w.AccountID, w.Score, w.Band, w.Onboarding, w.ChurnedAt, w.stateText(),
					g.Score, g.Band, g.Onboarding, g.ChurnedAt, g.stateText())
			}
			bands[w.Band]++
			if !w.ChurnedAt.IsZero() {
				churned++
			}
		}
		if len(bands) < 2 || churned == 0 {
			t.Errorf("bands %v, %d churned: the history tests too little", bands, churned)
		}
		words := func(list []*signalsv1.Signal) []string {
			var out []string
			for _, s := range list {
				out = append(out, s.GetAccountId()+" "+s.GetKind()+" "+s.GetOccurredAt().AsTime().Format(time.RFC3339))
			}
			slices.Sort(out)
			return out
		}
		stored, err := signals.List(t.Context(), db, "t1", signals.Filter{Limit: 10000})
		if err != nil {
			t.Fatal(err)
		}
		keptSigs, err := sigs.Signals("t2")
		if err != nil {
			t.Fatal(err)
		}
		if w, g := words(stored), words(keptSigs); !slices.Equal(w, g) || len(w) == 0 {
			t.Errorf("signals differ:\nClickHouse %q\nmemory     %q", w, g)
		}
		// The churns kept are the churn records stored.
		recs, err := db.Query(t.Context(), `SELECT account_id, min(churned_at), argMin(reason, churned_at), argMin(foreseen, churned_at), argMin(first_risk_kind, churned_at)
			FROM churn_records WHERE tenant_id = 't1' GROUP BY account_id ORDER BY account_id`)
		if err != nil {
			t.Fatal(err)
		}
		var wantChurns, gotChurns []string
		for recs.Next() {
			var id, reason, kind string
			var at time.Time
			var foreseen uint64
			if err := recs.Scan(&id, &at, &reason, &foreseen, &kind); err != nil {
				t.Fatal(err)
			}
			wantChurns = append(wantChurns, fmt.Sprintf("%s %s %s %v %s", id, at.UTC().Format(time.RFC3339), reason, foreseen == 1, kind))
		}
		for _, k := range kept.Kept("t2") {
			if c := k.Churn; c != nil {
				gotChurns = append(gotChurns, fmt.Sprintf("%s %s %s %v %s", k.AccountID, c.At.UTC().Format(time.RFC3339), c.Reason, c.Foreseen, c.FirstRiskKind))
			}
		}
		if !slices.Equal(wantChurns, gotChurns) {
			t.Errorf("churns differ:\nClickHouse %q\nmemory     %q", wantChurns, gotChurns)
		}
		if n := len(words(mustList(t, db, "t2"))); n != 0 {
			t.Errorf("the memory store wrote %d signals to ClickHouse", n)
		}
	})
}

func mustList(t *testing.T, db chstore.Store, tenant string) []*signalsv1.Signal {
	t.Helper()
	out, err := signals.List(t.Context(), db, tenant, signals.Filter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The memory store keeps each account's usage sum between reads: events
// stored later the same day, which rebuild the account's rollups, must
// show in the next sum.
func TestKeptUsageSumsFollowRebuiltRollups(t *testing.T) {
	h := accounts.NewHistory()
	m := NewMemoryStore(h, signals.NewMemory(), func(string, []string) map[string]string { return nil })
	at := time.Date(2026, 3, 10, 6, 0, 0, 0, time.UTC)
	sp := score.SpansOf(model.Default().Health, at)
	keys := []string{"Report Built", "Dashboard Shared"}
	set := accountSet{ids: []string{"a1", "a2"}}
	add := func(account, user, name string, at time.Time) {
		h.Add([]events.Event{{TenantID: "t1", AccountID: account, Type: events.TypeTrack, Name: name, UserID: user,
			MessageID: fmt.Sprint(account, user, name, at.UnixNano()), Timestamp: at}})
	}
	sum := func() map[string]score.Usage {
		t.Helper()
		if err := m.RebuildUsage(t.Context(), "t1", set, at.Add(-30*day), at); err != nil {
			t.Fatal(err)
		}
		u, err := m.Usage(t.Context(), "t1", set, sp, keys)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	add("a1", "u1", "Report Built", at.Add(-2*day))
	first := sum()
	if u := first["a1"]; u.Events != 1 || u.Users != 1 || u.ActiveDays != 1 || !slices.Equal(u.Features, []string{"Report Built"}) {
		t.Fatalf("a1 after one event: %+v", u)
	}
	if _, ok := first["a2"]; ok {
		t.Fatal("a2 has no event, and a usage")
	}
	// Later the same day: new events, the same days summed.
	add("a1", "u2", "Dashboard Shared", at.Add(-time.Hour))
	add("a2", "u1", "Report Built", at.Add(-time.Hour))
	second := sum()
	if u := second["a1"]; u.Events != 2 || u.Users != 2 || u.ActiveDays != 2 || !slices.Equal(u.Features, []string{"Dashboard Shared", "Report Built"}) {
		t.Errorf("a1 after a second event: %+v, want the kept sum moved", u)
	}
	if u := second["a2"]; u.Events != 1 {
		t.Errorf("a2 after its first event: %+v", u)
	}
}

// The memory store numbers an account's users as they come: a day's
// users are its UserSet while they are among the first 64; a day with a
// later one has none (Aggregate compares its ids).
func TestUserNumbersSetTheFirst64(t *testing.T) {
	n := userNumbers{}
	var users []string
	for i := range 70 {
		users = append(users, fmt.Sprintf("u%d", i))
	}
	if got := n.set(users[:3]); got != 0b111 {
		t.Errorf("first day: %b, want 111", got)
	}
	if got := n.set([]string{"u2", "u0"}); got != 0b101 {
		t.Errorf("again: %b, want 101", got)
	}
	if got := n.set(users[:64]); got != ^uint64(0) {
		t.Errorf("64 users: %b, want every bit", got)
	}
	if got := n.set([]string{"u1", "u64"}); got != 0 {
		t.Errorf("a 65th user: %b, want none", got)
	}
	if got := n.set([]string{"u63"}); got != 1<<63 {
		t.Errorf("the 64th user: %b", got)
	}
}
