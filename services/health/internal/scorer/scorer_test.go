package scorer

import (
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/signals"
	"github.com/stickpoint/stickpoint/pkg/specfile"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	signalsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/signals/v1"
	"github.com/stickpoint/stickpoint/services/health/internal/model"
	"github.com/stickpoint/stickpoint/services/health/internal/models"
	"github.com/stickpoint/stickpoint/services/health/internal/score"
	"github.com/stickpoint/stickpoint/services/health/migrations"
	ingest "github.com/stickpoint/stickpoint/services/ingest/migrations"
	milestones "github.com/stickpoint/stickpoint/services/milestones/migrations"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

const day = specfile.Day

// now0 is a Wednesday noon.
var now0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// testModel is the health issue's model, with the four key features.
const testModel = `health:
  key_features: [Report Built, Dashboard Shared, Alert Created, Source Connected]
fit:
  rules:
    - fit: bad
      when: [{trait: employees, op: lt, value: 5}]
    - fit: good
      when: [{trait: industry, op: in, value: [software, agency]}, {trait: employees, op: gte, value: 20}]
`

type env struct {
	t      testing.TB
	db     chstore.Store
	bus    *natsjs.Bus
	models *models.Store
	sc     *Scorer
	now    time.Time
}

func newEnv(t testing.TB, db chstore.Store) *env {
	t.Helper()
	ctx := t.Context()
	testutil.Migrate(t, db, testutil.Migrations{Component: "ingest", FS: ingest.FS}, testutil.Migrations{Component: signals.Component, FS: signals.Migrations},
		testutil.Migrations{Component: "milestones", FS: milestones.FS}, testutil.Migrations{Component: "health", FS: migrations.FS})
	bus := testutil.NATS(t)
	ms, err := models.Open(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, db: db, bus: bus, models: ms, now: now0}
	if e.sc, err = New(db, ms, signals.NewEmitter(bus, db), testutil.Logger(t)); err != nil {
		t.Fatal(err)
	}
	e.sc.Now = func() time.Time { return e.now }
	return e
}

func (e *env) putModel(tenant, src string) {
	e.t.Helper()
	if _, _, err := e.models.Put(e.t.Context(), tenant, []byte(src)); err != nil {
		e.t.Fatal(err)
	}
}

// score scores accounts as a notice of events of the last 60 days would.
func (e *env) score(tenant string, ids ...string) Result {
	e.t.Helper()
	r, err := e.sc.Score(e.t.Context(), tenant, ids, Span{From: e.now.Add(-60 * day), To: e.now}, "events")
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *env) row(tenant, id string) Row {
	e.t.Helper()
	rows, err := ReadRows(e.t.Context(), e.db, tenant, "AND account_id = ?", id)
	if err != nil || len(rows) != 1 {
		e.t.Fatalf("row of %s: %v %v", id, rows, err)
	}
	return rows[0]
}

// health is a row's health under the tenant's model.
func (e *env) health(tenant string, r Row) score.Health {
	e.t.Helper()
	st, err := e.models.Get(e.t.Context(), tenant)
	if err != nil {
		e.t.Fatal(err)
	}
	return r.Health(st.Spec)
}

func (e *env) signals(tenant, kind string) []*signalsv1.Signal {
	e.t.Helper()
	out, err := signals.List(e.t.Context(), e.db, tenant, signals.Filter{Kind: kind, Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// use stores an account's use of the four key features by two users on
// every weekday from first to last days ago.
func (e *env) use(tenant, account string, first, last int) {
	var evs []testutil.StoredEvent
	for ago := first; ago >= last; ago-- {
		d := e.now.Truncate(day).Add(-time.Duration(ago) * day)
		if wd := d.Weekday(); wd == time.Saturday || wd == time.Sunday {
			continue
		}
		for _, u := range []string{"u1", "u2"} {
			for _, f := range []string{"Report Built", "Dashboard Shared", "Alert Created", "Source Connected"} {
				evs = append(evs, testutil.StoredEvent{Tenant: tenant, Account: account, Name: f, User: account + "-" + u, At: d.Add(10 * time.Hour)})
			}
		}
	}
	testutil.InsertEvents(e.t, e.db, evs...)
}

func (e *env) group(tenant, account string, traits map[string]any) {
	testutil.InsertGroup(e.t, e.db, tenant, account, e.now.Add(-31*day), traits)
}

func TestTheDoneWhenAccountsAndTheirSignals(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		e := newEnv(t, db)
		e.putModel("t1", testModel)
		traits := map[string]any{"seats": 2, "industry": "software", "employees": 50}
		for _, a := range []string{"healthy-co", "collapsing-co", "leaving-co"} {
			e.group("t1", a, traits)
		}
		e.use("t1", "healthy-co", 30, 1)
		e.use("t1", "collapsing-co", 30, 8)
		e.use("t1", "leaving-co", 30, 1)
		var billing []testutil.StoredEvent
		for _, h := range []int{70, 50, 26, 5} {
			billing = append(billing, testutil.StoredEvent{Tenant: "t1", Account: "leaving-co", Type: "page", Name: "Billing", User: "leaving-co-u2",
				At: e.now.Add(-time.Duration(h) * time.Hour), Properties: `{"path":"/settings/billing/plans"}`})
		}
		testutil.InsertEvents(t, db, billing...)
		testutil.InsertEvents(t, db, testutil.StoredEvent{Tenant: "t1", Account: "leaving-co", Name: "Data Exported", User: "leaving-co-u1", At: e.now.Add(-4 * time.Hour), MessageID: "export-1"})

		ids := []string{"healthy-co", "collapsing-co", "leaving-co"}
		if r := e.score("t1", ids...); r.Accounts != 3 || r.Changed != 3 {
			t.Fatalf("first score: %+v", r)
		}
		healthy, collapsing, leaving := e.row("t1", "healthy-co"), e.row("t1", "collapsing-co"), e.row("t1", "leaving-co")
		if healthy.AtRisk || !collapsing.AtRisk || !leaving.AtRisk {
			t.Fatalf("at risk: healthy %v collapsing %v leaving %v", healthy.AtRisk, collapsing.AtRisk, leaving.AtRisk)
		}
		if healthy.Band != model.Green || healthy.Fit != model.FitGood {
			t.Errorf("healthy: %d %s %s: %+v", healthy.Score, healthy.Band, healthy.Fit, e.health("t1", healthy).Components)
		}
		// Collapsing: nothing in the 7 days before today against its
		// baseline: trend 0 and usage_drop on (55 of 50).
		if c, _ := e.health("t1", collapsing).Component(model.Trend); c.Score != 0 || collapsing.Intent != 55 {
			t.Errorf("collapsing: trend %+v, intent %v", c, collapsing.Intent)
		}
		// Leaving: four views (capped at 30) and an export 4 hours ago.
		li := e.health("t1", leaving).Intent
		if len(li.Signals) != 2 || li.Signals[0].ID != "billing_page" || li.Signals[0].Contribution != 30 || len(li.Signals[0].Hits) != 4 || li.Signals[1].ID != "export" {
			t.Fatalf("leaving intent: %+v", li)
		}
		if w := li.Signals[0].Words(); !strings.Contains(w, "4 times") || !strings.Contains(w, "by leaving-co-u2") {
			t.Errorf("evidence words: %s", w)
		}
		intent := e.signals("t1", KindCancelIntent)
		if len(intent) != 2 {
			t.Fatalf("cancel_intent signals: %v", intent)
		}
		for _, s := range intent {
			if s.GetAccountId() == "leaving-co" && !s.GetOccurredAt().AsTime().Equal(e.now.Add(-4*time.Hour)) {
				t.Errorf("leaving's intent occurred at %v, want the export's time", s.GetOccurredAt().AsTime())
			}
		}

		// A redelivered notice, or a rescore, signals nothing new.
		e.score("t1", ids...)
		if got := len(e.signals("t1", "")); got != 2 {
			t.Errorf("a rescore signalled again: %d signals", got)
		}

		// A cancellation request is an immediate signal, once.
		e.now = e.now.Add(time.Minute)
		testutil.InsertEvents(t, db, testutil.StoredEvent{Tenant: "t1", Account: "healthy-co", Name: "Cancellation Requested", User: "healthy-co-u1", At: e.now.Add(-time.Second), MessageID: "cancel-1"})
		// The immediate path signals it from the event as it arrives (one
		// without an account is left to the scorer); the scorer's own
		// signal of it is the same one.
		arriving := []events.Event{
			{TenantID: "t1", AccountID: "healthy-co", Type: "track", Name: "Cancellation Requested", UserID: "healthy-co-u1", MessageID: "cancel-1", Timestamp: e.now.Add(-time.Second)},
			{TenantID: "t1", Type: "track", Name: "Cancellation Requested", UserID: "someone", MessageID: "cancel-2", Timestamp: e.now.Add(-time.Second)},
			{TenantID: "t1", AccountID: "leaving-co", Type: "track", Name: "Report Built", MessageID: "other", Timestamp: e.now.Add(-time.Second)},
		}
		if n, err := e.sc.SignalRequests(t.Context(), "t1", arriving); err != nil || n != 1 {
			t.Fatalf("immediate path: %d %v", n, err)
		}
		// It is published at once, and recorded by the scorer (below).
		stream, err := e.bus.JS.Stream(t.Context(), natsjs.SignalsStream)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := stream.GetLastMsgForSubject(t.Context(), natsjs.SignalSubject("t1", KindCancellationRequested))
		if err != nil {
			t.Fatalf("immediate signal not on SIGNALS: %v", err)
		}
		if sig, err := signals.Decode(msg.Data); err != nil || sig.GetSummary() != "healthy-co requested cancellation (by healthy-co-u1)" {
			t.Fatalf("immediate signal: %v %v", sig, err)
		}
		e.score("t1", "healthy-co")
		e.score("t1", "healthy-co")
		reqs := e.signals("t1", KindCancellationRequested)
		if len(reqs) != 1 || reqs[0].GetCancelIntent().GetRequest().GetMessageId() != "cancel-1" || reqs[0].GetSeverity() != signalsv1.Severity_SEVERITY_HIGH {
			t.Fatalf("cancellation requested: %v", reqs)
		}

		// Leaving churns: foreseen by its cancel intent, 4 hours and a bit
		// ahead; healthy churns by trait, unforeseen.
		testutil.InsertEvents(t, db, testutil.StoredEvent{Tenant: "t1", Account: "leaving-co", Name: "Subscription Cancelled", User: "leaving-co-u1", At: e.now, Properties: `{"reason":"too expensive"}`})
		testutil.InsertGroup(t, db, "t1", "healthy-co", e.now, map[string]any{"status": "cancelled", "reason": "merged"})
		e.score("t1", "leaving-co", "healthy-co")
		churns := e.signals("t1", KindChurnRecorded)
		if len(churns) != 2 {
			t.Fatalf("churn signals: %v", churns)
		}
		for _, s := range churns {
			c := s.GetChurn()
			switch s.GetAccountId() {
			case "leaving-co":
				if !c.GetForeseen() || c.GetReason() != "too expensive" || c.GetFit() != model.FitGood || c.GetFirstRiskKind() != KindCancelIntent ||
					c.GetLeadTimeSeconds() != int64((4*time.Hour+time.Minute)/time.Second) || c.GetSource() != "event" {
					t.Errorf("leaving's churn: %v", c)
				}
			case "healthy-co":
				if c.GetForeseen() || c.GetSource() != "trait" || c.GetReason() != "merged" {
					t.Errorf("healthy's churn: %v", c)
				}
			}
		}
		rows, err := db.Query(t.Context(), "SELECT account_id, foreseen, lead_seconds FROM churn_records FINAL WHERE tenant_id = 't1' ORDER BY account_id")
		if err != nil || rows.Len() != 2 {
			t.Fatalf("churn records: %v", err)
		}
	})
}

func TestTheSweepDecaysWithoutReadingEventsAndSentimentExpires(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		e := newEnv(t, db)
		// Exports alone: the account stops using the product as the clock
		// moves on, and usage_drop would hold the intent up.
		e.putModel("t1", "cancel_intent: {signals: [{id: export, match: {event: Data Exported}, weight: 30, half_life: 14d}]}")
		e.group("t1", "a-co", map[string]any{"seats": 2})
		e.use("t1", "a-co", 30, 1)
		testutil.InsertEvents(t, db, testutil.StoredEvent{Tenant: "t1", Account: "a-co", Name: "Data Exported", User: "u1", At: e.now.Add(-time.Hour)},
			testutil.StoredEvent{Tenant: "t1", Account: "a-co", Name: "Data Exported", User: "u1", At: e.now.Add(-time.Hour)})
		e.score("t1", "a-co")
		// Two exports within the hour: 2 x 30, capped at 60, over 50.
		if r := e.row("t1", "a-co"); r.Intent < 59.9 || !r.AtRisk {
			t.Fatalf("intent %v at risk %v", r.Intent, r.AtRisk)
		}
		if err := PutSentiment(t.Context(), db, "t1", "a-co", score.Sentiment{Score: 20, Note: "champion left", Author: "ann", SetAt: e.now, ExpiresAt: e.now.Add(3 * day)}); err != nil {
			t.Fatal(err)
		}
		// The events are gone from the store's view: the sweep must not
		// need them.
		if err := db.Exec(t.Context(), "ALTER TABLE events DELETE WHERE name = 'Data Exported'"); err != nil {
			t.Fatal(err)
		}
		e.now = e.now.Add(day)
		if _, err := e.sc.Sweep(t.Context(), []string{"t1"}); err != nil {
			t.Fatal(err)
		}
		r := e.row("t1", "a-co")
		// A day of a 14-day half-life: 60 * 0.5^(25/336) = 56.9.
		if r.Intent < 56.5 || r.Intent > 57.2 {
			t.Errorf("decayed intent %v", r.Intent)
		}
		if c, _ := e.health("t1", r).Component(model.Sentiment); !c.Present || c.Score != 20 {
			t.Errorf("sentiment: %+v", c)
		}
		// 15 days on: 2 half-lives and more; the intent clears, once, and
		// the sentiment expired.
		e.now = e.now.Add(15 * day)
		for range 2 {
			if _, err := e.sc.Sweep(t.Context(), []string{"t1"}); err != nil {
				t.Fatal(err)
			}
		}
		r = e.row("t1", "a-co")
		if r.Intent >= 50 || len(e.signals("t1", KindCancelIntentCleared)) != 1 {
			t.Errorf("intent %v, cleared signals %v", r.Intent, e.signals("t1", KindCancelIntentCleared))
		}
		if c, _ := e.health("t1", r).Component(model.Sentiment); c.Present || !strings.Contains(c.Inputs, "expired") {
			t.Errorf("expired sentiment: %+v", c)
		}
		hist, err := db.Query(t.Context(), "SELECT count() FROM health_history FINAL WHERE tenant_id = 't1' AND account_id = 'a-co'")
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for hist.Next() {
			_ = hist.Scan(&n)
		}
		if n < 3 {
			t.Errorf("history has %d entries; every score change is kept", n)
		}
	})
}

func TestASignUpIsNotRedBeforeItCouldUseTheProduct(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		e := newEnv(t, db)
		e.putModel("t1", testModel)
		e.group("t1", "old-co", map[string]any{"seats": 2})
		e.use("t1", "old-co", 30, 0) // the tenant's norm
		// Two sign-ups an hour ago: their group calls, nothing used yet.
		for _, a := range []string{"new-co", "idle-co"} {
			testutil.InsertGroup(t, db, "t1", a, e.now.Add(-time.Hour), map[string]any{"seats": 2})
		}
		e.score("t1", "old-co", "new-co", "idle-co")
		for _, a := range []string{"new-co", "idle-co"} {
			r := e.row("t1", a)
			if r.Band == model.Red || r.AtRisk {
				t.Errorf("%s at sign-up: %d %s, at risk %v: %+v", a, r.Score, r.Band, r.AtRisk, e.health("t1", r).Components)
			}
		}
		if red := e.signals("t1", KindHealthRed); len(red) != 0 {
			t.Fatalf("health_red at sign-up: %v", red)
		}

		// new-co's two users use the four key features the same day: judged
		// on that day against the norm for a day, it is green.
		e.now = e.now.Add(2 * time.Hour)
		var evs []testutil.StoredEvent
		for _, u := range []string{"u1", "u2"} {
			for _, f := range []string{"Report Built", "Dashboard Shared", "Alert Created", "Source Connected"} {
				evs = append(evs, testutil.StoredEvent{Tenant: "t1", Account: "new-co", Name: f, User: "new-co-" + u, At: e.now.Add(-time.Hour)})
			}
		}
		testutil.InsertEvents(t, db, evs...)
		e.score("t1", "new-co")
		if r := e.row("t1", "new-co"); r.Band != model.Green {
			t.Errorf("new-co after its first use: %d %s: %+v", r.Score, r.Band, e.health("t1", r).Components)
		}

		// idle-co uses nothing for a day: now it is judged, red, and
		// signalled by the sweep.
		e.now = e.now.Add(day)
		if _, err := e.sc.Sweep(t.Context(), []string{"t1"}); err != nil {
			t.Fatal(err)
		}
		if r := e.row("t1", "idle-co"); r.Band != model.Red {
			t.Errorf("idle-co a day after sign-up: %d %s", r.Score, r.Band)
		}
		red := e.signals("t1", KindHealthRed)
		if len(red) != 1 || red[0].GetAccountId() != "idle-co" {
			t.Errorf("health_red signals a day on: %v", red)
		}
	})
}

func TestTheSweepTakesOnlyTheAccountsTimeCanMove(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		e := newEnv(t, db)
		e.putModel("t1", testModel)
		for _, a := range []string{"a-co", "b-co", "c-co"} {
			e.group("t1", a, map[string]any{"seats": 2})
		}
		e.use("t1", "a-co", 30, 0)
		e.use("t1", "b-co", 20, 0)
		e.use("t1", "c-co", 30, 0)
		testutil.InsertEvents(t, db, testutil.StoredEvent{Tenant: "t1", Account: "c-co", Name: "Data Exported", User: "u1", At: e.now.Add(-time.Hour)})
		e.score("t1", "a-co", "b-co", "c-co")
		sweep := func() Result {
			t.Helper()
			r, err := e.sc.Sweep(t.Context(), []string{"t1"})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		// unchanged checks that a full rescore from the events now would
		// change nothing: what the sweep left is what time and norms make.
		unchanged := func(when string) {
			t.Helper()
			if r, err := e.sc.ScoreAll(t.Context(), "t1", "check"); err != nil || r.Changed != 0 {
				t.Errorf("%s: a full rescore changed %d accounts (%v): the sweep left stale scores", when, r.Changed, err)
			}
		}
		// The same day, nothing new: only c-co, whose export decays.
		e.now = e.now.Add(5 * time.Minute)
		if r := sweep(); r.Accounts != 1 {
			t.Errorf("a sweep the same day took %d accounts, want 1 (the decaying one)", r.Accounts)
		}
		unchanged("the same day")
		// The next day moves every window: all three.
		e.now = e.now.Add(day)
		if r := sweep(); r.Accounts != 3 {
			t.Errorf("the first sweep of a day took %d accounts, want 3", r.Accounts)
		}
		if r := sweep(); r.Accounts != 1 {
			t.Errorf("the second sweep of a day took %d accounts, want 1", r.Accounts)
		}
		unchanged("the next day")
		// A new account's history, stored late, moves the tenant's norms
		// (the median of 4 accounts): every account scored with the old.
		e.use("t1", "d-co", 10, 1)
		e.score("t1", "d-co")
		if r := sweep(); r.Accounts != 4 {
			t.Errorf("a sweep after the norms moved took %d accounts, want 4", r.Accounts)
		}
		unchanged("after the norms moved")
	})
}

func TestAChurnScoredBeforeTheEventsThatForesawItIsForeseen(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		e := newEnv(t, db)
		e.putModel("t1", testModel)
		e.group("t1", "late-co", map[string]any{"seats": 2})
		e.use("t1", "late-co", 30, 1)
		foreseen := func() (bool, string) {
			t.Helper()
			rows, err := db.Query(t.Context(), "SELECT foreseen, first_risk_kind FROM churn_records FINAL WHERE tenant_id = 't1' AND account_id = 'late-co'")
			if err != nil || rows.Len() != 1 {
				t.Fatalf("churn record: %d rows, %v", rows.Len(), err)
			}
			var f uint64
			var kind string
			for rows.Next() {
				if err := rows.Scan(&f, &kind); err != nil {
					t.Fatal(err)
				}
			}
			return f == 1, kind
		}
		// Another writer stores the churn first: no risk yet, unforeseen.
		testutil.InsertEvents(t, db, testutil.StoredEvent{Tenant: "t1", Account: "late-co", Name: "Subscription Cancelled", User: "u1", At: e.now.Add(-time.Hour)})
		e.score("t1", "late-co")
		if f, _ := foreseen(); f {
			t.Fatal("foreseen with no risk stored")
		}
		// Then the two exports of 3 hours before it: cancel intent, which
		// occurred before the churn.
		testutil.InsertEvents(t, db,
			testutil.StoredEvent{Tenant: "t1", Account: "late-co", Name: "Data Exported", User: "u1", At: e.now.Add(-3 * time.Hour)},
			testutil.StoredEvent{Tenant: "t1", Account: "late-co", Name: "Data Exported", User: "u1", At: e.now.Add(-3 * time.Hour)})
		e.score("t1", "late-co")
		if f, kind := foreseen(); !f || kind != KindCancelIntent {
			t.Errorf("after the earlier exports: foreseen %v by %q", f, kind)
		}
	})
}

func TestTenantsAreIsolatedAndDuplicateRowsCountOnce(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		e := newEnv(t, db)
		e.putModel("t1", testModel)
		e.use("t1", "same-co", 30, 1)
		testutil.InsertEvents(t, db, testutil.StoredEvent{Tenant: "t1", Account: "same-co", Name: "Data Exported", User: "u1", At: e.now.Add(-time.Hour), MessageID: "dup"},
			testutil.StoredEvent{Tenant: "t1", Account: "same-co", Name: "Data Exported", User: "u1", At: e.now.Add(-30 * time.Minute), MessageID: "dup"})
		testutil.InsertEvents(t, db, testutil.StoredEvent{Tenant: "t2", Account: "same-co", Name: "Logged In", User: "x", At: e.now.Add(-time.Hour)})
		e.score("t1", "same-co")
		e.score("t2", "same-co")
		// The export is one messageId in two rows: it counts once.
		if r := e.row("t1", "same-co"); r.Intent < 29 || r.Intent > 30 {
			t.Errorf("t1 intent %v: a duplicate row counted twice", r.Intent)
		}
		rows, err := db.Query(t.Context(), `SELECT sum(events) FROM account_day_usage FINAL WHERE tenant_id = 't1' AND has(names, 'Data Exported')`)
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for rows.Next() {
			_ = rows.Scan(&n)
		}
		if n != 1 {
			t.Errorf("rollup counts %d exports, want 1", n)
		}
		// t2 sees only its own event: no key feature, no intent.
		r2 := e.row("t2", "same-co")
		if c, _ := e.health("t2", r2).Component(model.Adoption); c.Score != 0 || r2.Intent != 0 || len(e.signals("t2", "")) != 0 {
			t.Errorf("t2 saw t1's events: %+v intent %v", c, r2.Intent)
		}
	})
}

// TestTheUsageQuerySumsAsAggregateDoes checks the SQL sums of the rollups
// against score.Aggregate over the same rows, on random usage.
func TestTheUsageQuerySumsAsAggregateDoes(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		e := newEnv(t, db)
		m, err := model.Parse([]byte(testModel))
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(7, 7))
		names := []string{"Report Built", "Dashboard Shared", "Other", "Logged In"}
		var evs []testutil.StoredEvent
		for i := range 600 {
			evs = append(evs, testutil.StoredEvent{Tenant: "t1", Account: fmt.Sprintf("a%d", r.IntN(5)), Name: names[r.IntN(len(names))],
				Type: []string{"track", "track", "page"}[r.IntN(3)], User: fmt.Sprintf("u%d", r.IntN(6)),
				At: e.now.Add(-time.Duration(r.IntN(45*24)) * time.Hour), MessageID: fmt.Sprintf("m%d", i%550)}) // some repeat
		}
		testutil.InsertEvents(t, db, evs...)
		ids := []string{"a0", "a1", "a2", "a3", "a4"}
		set := accountSet{ids: ids}
		if err := rebuildUsage(t.Context(), db, "t1", set, e.now.Add(-60*day), e.now); err != nil {
			t.Fatal(err)
		}
		sp := score.SpansOf(m.Health, e.now)
		got, err := readUsage(t.Context(), db, "t1", set, sp, m.Health.KeyFeatures)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := db.Query(t.Context(), `SELECT account_id, toDateTime(day), argMax(events, version), argMax(names, version), argMax(users, version)
			FROM account_day_usage WHERE tenant_id = 't1' GROUP BY account_id, day`)
		if err != nil {
			t.Fatal(err)
		}
		byAccount := map[string][]score.DayUsage{}
		for rows.Next() {
			var id string
			var u score.DayUsage
			var n uint64
			if err := rows.Scan(&id, &u.Day, &n, &u.Names, &u.Users); err != nil {
				t.Fatal(err)
			}
			u.Events = int(n)
			byAccount[id] = append(byAccount[id], u)
		}
		for _, id := range ids {
			want := score.Aggregate(byAccount[id], m.Health.KeyFeatures, sp)
			g := got[id]
			slices.Sort(g.Features)
			slices.Sort(want.Features)
			if !reflect.DeepEqual(g, want) {
				t.Errorf("%s: query %+v, Aggregate %+v", id, g, want)
			}
		}
	})
}

// TestBackfillScoresEventsStoredBeforeTheServiceRan: events with no
// rollups are rolled up and scored once; a second start does nothing.
func TestBackfillScoresEventsStoredBeforeTheServiceRan(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		e := newEnv(t, db)
		e.putModel("t1", testModel)
		e.use("t1", "old-co", 30, 1)
		testutil.InsertGroup(t, db, "t1", "traits-only-co", e.now.Add(-day), map[string]any{"seats": 3})
		ran, err := e.sc.Backfill(t.Context(), "t1")
		if err != nil || !ran {
			t.Fatalf("backfill: %v %v", ran, err)
		}
		if r := e.row("t1", "old-co"); r.Band != model.Green {
			t.Errorf("old-co: %d %s", r.Score, r.Band)
		}
		// An account with traits and no usage is scored too: it is red.
		if r := e.row("t1", "traits-only-co"); r.Band != model.Red {
			t.Errorf("traits-only-co: %d %s", r.Score, r.Band)
		}
		if ran, err := e.sc.Backfill(t.Context(), "t1"); err != nil || ran {
			t.Errorf("second backfill ran: %v %v", ran, err)
		}
	})
}

// An account's first and last event stay its stored events' own min and
// max as notices come: a later event moves the last, a late one the first,
// and a state without them (an older version's) has them again.
func TestFirstAndLastEventFollowTheStoredEvents(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		e := newEnv(t, db)
		e.putModel("t1", testModel)
		e.group("t1", "acc", map[string]any{"seats": 2})
		e.use("t1", "acc", 20, 10)
		truth := func() [2]time.Time {
			t.Helper()
			r, err := db.Query(t.Context(), "SELECT min(timestamp), max(timestamp) FROM events WHERE tenant_id = 't1' AND account_id = 'acc'")
			var span [2]time.Time
			if err == nil && r.Next() {
				err = r.Scan(&span[0], &span[1])
			}
			if err != nil {
				t.Fatal(err)
			}
			return span
		}
		notice := func(from, to time.Time) {
			t.Helper()
			if _, err := e.sc.Score(t.Context(), "t1", []string{"acc"}, Span{From: from, To: to}, "events"); err != nil {
				t.Fatal(err)
			}
		}
		check := func(when string, want [2]time.Time) {
			t.Helper()
			st := e.row("t1", "acc").State
			if !st.FirstEvent.Equal(want[0]) || !st.LastEvent.Equal(want[1]) {
				t.Errorf("%s: state has %v to %v, want %v to %v", when, st.FirstEvent, st.LastEvent, want[0], want[1])
			}
		}
		e.score("t1", "acc")
		check("first scored", truth())

		later := e.now.Add(-time.Hour).Truncate(time.Second)
		testutil.InsertEvents(t, db, testutil.StoredEvent{Tenant: "t1", Account: "acc", Name: "Report Built", User: "acc-u1", At: later})
		notice(later, later)
		check("after a later event", truth())

		late := e.now.Add(-45 * day).Truncate(time.Second)
		testutil.InsertEvents(t, db, testutil.StoredEvent{Tenant: "t1", Account: "acc", Name: "Report Built", User: "acc-u1", At: late})
		notice(late, late)
		check("after a late event", truth())

		// They are every stored event's (account_activity's), not the
		// notice's span: an event before the span counts too.
		earlier := e.now.Add(-50 * day).Truncate(time.Second)
		testutil.InsertEvents(t, db, testutil.StoredEvent{Tenant: "t1", Account: "acc", Name: "Report Built", User: "acc-u1", At: earlier})
		notice(later, later)
		check("with an event before the span", [2]time.Time{earlier, later})

		// A state without them, as an older version stored it, has them again.
		if err := db.Exec(t.Context(), `INSERT INTO account_health SELECT tenant_id, account_id, score, band, change, fit, onboarding_status, intent_score, at_risk,
				churned_at, replaceRegexpOne(state, ',"last_event":"[^"]*"', ''), evaluated_at, version + 1
			FROM account_health FINAL WHERE tenant_id = 't1' AND account_id = 'acc'`); err != nil {
			t.Fatal(err)
		}
		if !e.row("t1", "acc").State.LastEvent.IsZero() {
			t.Fatal("the state still has its last event")
		}
		notice(later, later)
		check("from a state without them", truth())
	})
}

// Equal is what decides whether a scoring stores a state: a field it does
// not compare would be lost whenever only that field changed. Each field
// of State, at any depth, changed on its own, must make it false.
func TestEqualSeesEveryField(t *testing.T) {
	at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	st := State{ModelVersion: 3, FirstEvent: at, LastEvent: at, Seats: 10,
		Usage:      score.Usage{ActiveDays: 4, Events: 40, Users: 3, Features: []string{"Report Built"}, Recent: 10, Baseline: 20},
		Norms:      score.Norms{ActiveDays: 5, Events: 50},
		Onboarding: "on_track", Sentiment: &score.Sentiment{Score: 2, Note: "n", Author: "a", SetAt: at, ExpiresAt: at},
		Hits: []score.Hit{{Signal: "export", At: at, User: "u", MessageID: "m"}}, IntentOver: true,
		Peaks: []Peak{{Day: at, Score: 80}}, DropFrom: at, CancelRequestedAt: at,
		Churn: &Churn{At: at, Source: "event", Reason: "r", Fit: "good", Foreseen: true, FirstRiskKind: "health_red", FirstRiskAt: at}}
	if !st.Equal(st) {
		t.Fatal("a state is not equal to itself")
	}
	for path, changed := range testutil.Variants(t, st) {
		if st.Equal(changed) {
			t.Errorf("%s changed, and Equal says the same", path)
		}
	}
}
