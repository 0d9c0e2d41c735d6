package api

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/signals"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	accountsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/accounts/v1"
	healthv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/health/v1"
	"github.com/stickpoint/stickpoint/services/health/internal/models"
	"github.com/stickpoint/stickpoint/services/health/internal/scorer"
	"github.com/stickpoint/stickpoint/services/health/migrations"
	ingest "github.com/stickpoint/stickpoint/services/ingest/migrations"
	milestones "github.com/stickpoint/stickpoint/services/milestones/migrations"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

const testModel = `health:
  key_features: [A, B]
fit:
  rules:
    - fit: good
      when: [{trait: industry, op: eq, value: software}]
    - fit: bad
      when: [{trait: industry, op: eq, value: retail}]
`

// apis scores five accounts of t1 that use 0 to 4 key-feature events a
// day with 1 to 5 users of 5 seats, and serves the APIs over them, Get
// keeping accounts in memory as the service does.
func apis(t *testing.T, db chstore.Store) (*Accounts, *Health, context.Context) {
	t.Helper()
	f := newFixture(t, db)
	return f.accounts, f.health, f.caller
}

type fixture struct {
	accounts *Accounts
	health   *Health
	caller   context.Context
	bus      *natsjs.Bus
	models   *models.Store
	scorer   *scorer.Scorer
}

func newFixture(t *testing.T, db chstore.Store) fixture {
	t.Helper()
	ctx := t.Context()
	testutil.Migrate(t, db, testutil.Migrations{Component: "ingest", FS: ingest.FS}, testutil.Migrations{Component: signals.Component, FS: signals.Migrations},
		testutil.Migrations{Component: "milestones", FS: milestones.FS}, testutil.Migrations{Component: "health", FS: migrations.FS})
	bus := testutil.NATS(t)
	ms, err := models.Open(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ms.Put(ctx, "t1", []byte(testModel)); err != nil {
		t.Fatal(err)
	}
	sc, err := scorer.New(db, ms, signals.NewEmitter(bus, db), testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	var ids []string
	for i := range 5 {
		id := fmt.Sprintf("acc-%d", i)
		ids = append(ids, id)
		industry := []string{"software", "retail", "media"}[i%3]
		testutil.InsertGroup(t, db, "t1", id, now.Add(-40*24*time.Hour), map[string]any{"seats": 5, "industry": industry, "csm_email": fmt.Sprintf("csm%d@x", i%2)})
		var evs []testutil.StoredEvent
		for ago := 1; ago <= 35; ago++ {
			for u := range i + 1 {
				evs = append(evs, testutil.StoredEvent{Tenant: "t1", Account: id, Name: []string{"A", "B"}[u%2], User: fmt.Sprintf("u%d", u), At: now.Add(-time.Duration(ago) * 24 * time.Hour)})
			}
		}
		if i == 0 { // acc-0 exports twice: cancel intent
			evs = append(evs, testutil.StoredEvent{Tenant: "t1", Account: id, Name: "Data Exported", User: "u0", At: now.Add(-time.Hour)},
				testutil.StoredEvent{Tenant: "t1", Account: id, Name: "Data Exported", User: "u0", At: now.Add(-2 * time.Hour)})
		}
		testutil.InsertEvents(t, db, evs...)
	}
	if _, err := sc.Score(ctx, "t1", ids, scorer.Span{From: now.Add(-60 * 24 * time.Hour), To: now}, "events"); err != nil {
		t.Fatal(err)
	}
	caller := tenancy.WithPrincipal(ctx, tenancy.Principal{TenantID: "t1", TokenID: "tok-1"})
	a := NewAccounts(db, ms, owner)
	sc.Changed = accounts.NewNotifier(bus.NC)
	if err := a.Follow(bus.NC, sc, 100, testutil.Logger(t)); err != nil {
		t.Fatal(err)
	}
	return fixture{accounts: a, health: NewHealth(db, ms, sc, func(string, string) {}), caller: caller, bus: bus, models: ms, scorer: sc}
}

func owner(string) string { return "csm_email" }

func list(t *testing.T, a *Accounts, ctx context.Context, req *accountsv1.ListRequest) []*accountsv1.Account {
	t.Helper()
	var out []*accountsv1.Account
	for page := 0; ; page++ {
		resp, err := a.List(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, resp.GetAccounts()...)
		if resp.GetNextPageToken() == "" {
			return out
		}
		if page > 10 {
			t.Fatal("paging does not end")
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

func ids(as []*accountsv1.Account) string {
	var out []string
	for _, a := range as {
		out = append(out, a.GetId())
	}
	return strings.Join(out, " ")
}

func TestListFiltersSortsAndPages(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		a, _, ctx := apis(t, db)
		all := list(t, a, ctx, &accountsv1.ListRequest{PageSize: 2})
		if ids(all) != "acc-0 acc-1 acc-2 acc-3 acc-4" {
			t.Fatalf("by id: %s", ids(all))
		}
		// By health, lowest first, two a page: every account once, in
		// order of score.
		byHealth := list(t, a, ctx, &accountsv1.ListRequest{PageSize: 2, Sort: accountsv1.Sort_SORT_HEALTH})
		if len(byHealth) != 5 {
			t.Fatalf("by health: %s", ids(byHealth))
		}
		scores := make([]int32, len(byHealth))
		for i, acc := range byHealth {
			scores[i] = acc.GetHealth().GetScore()
		}
		if !slices.IsSorted(scores) {
			t.Errorf("scores not ascending: %v", scores)
		}
		// acc-0 has cancel intent (two exports); more users score higher.
		if got := ids(list(t, a, ctx, &accountsv1.ListRequest{CancelIntent: true})); got != "acc-0" {
			t.Errorf("cancel intent: %s", got)
		}
		if got := ids(list(t, a, ctx, &accountsv1.ListRequest{AtRisk: true})); !strings.Contains(got, "acc-0") || strings.Contains(got, "acc-4") {
			t.Errorf("at risk: %s", got)
		}
		if got := ids(list(t, a, ctx, &accountsv1.ListRequest{Fit: "good"})); got != "acc-0 acc-3" {
			t.Errorf("good fit: %s", got)
		}
		if got := ids(list(t, a, ctx, &accountsv1.ListRequest{Owner: "csm1@x"})); got != "acc-1 acc-3" {
			t.Errorf("owner: %s", got)
		}
		for _, band := range []string{"red", "yellow", "green"} {
			for _, acc := range list(t, a, ctx, &accountsv1.ListRequest{Band: band}) {
				if acc.GetHealth().GetBand() != band {
					t.Errorf("band %s lists %s (%s)", band, acc.GetId(), acc.GetHealth().GetBand())
				}
			}
		}
		if _, err := a.List(ctx, &accountsv1.ListRequest{Band: "blue"}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("band blue: %v", err)
		}
		got, err := a.Get(ctx, &accountsv1.GetRequest{AccountId: "acc-4"})
		if err != nil {
			t.Fatal(err)
		}
		h := got.GetAccount().GetHealth()
		if h.GetActiveUsers() != 5 || h.GetSeats() != 5 || len(h.GetComponents()) != 7 || got.GetAccount().GetFit() != "bad" || got.GetAccount().GetOwner() != "csm0@x" {
			t.Errorf("acc-4: %v", got.GetAccount())
		}
		if _, err := a.Get(ctx, &accountsv1.GetRequest{AccountId: "nope"}); status.Code(err) != codes.NotFound {
			t.Errorf("unknown account: %v", err)
		}
		usage, err := a.Usage(ctx, &accountsv1.UsageRequest{AccountId: "acc-4", Days: 3})
		if err != nil {
			t.Fatal(err)
		}
		if len(usage.GetDays()) != 2 || usage.GetDays()[0].GetEvents() != 5 || usage.GetDays()[0].GetActiveUsers() != 5 || usage.GetDays()[0].GetByEvent()["A"] != 3 {
			t.Errorf("usage: %v", usage)
		}
	})
}

func TestChurnReportAndSentimentAndModelErrors(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		_, h, ctx := apis(t, db)
		now := time.Now().UTC().Truncate(time.Second)
		var rows [][]any
		for i, c := range []struct {
			fit      string
			foreseen bool
			lead     time.Duration
		}{{"good", true, 2 * time.Hour}, {"good", false, 0}, {"bad", true, 6 * time.Hour}, {"stretch", true, 4 * time.Hour}} {
			rows = append(rows, []any{"t1", fmt.Sprintf("gone-%d", i), now.Add(-time.Duration(i+1) * time.Hour), "event", "price", c.fit, c.foreseen, "cancel_intent",
				now.Add(-time.Duration(i+1)*time.Hour - c.lead), int64(c.lead / time.Second), now})
		}
		rows = append(rows, []any{"t1", "old", now.Add(-200 * 24 * time.Hour), "event", "", "good", false, "", time.Unix(0, 0), int64(0), now})
		if err := db.Insert(ctx, "churn_records", []string{"tenant_id", "account_id", "churned_at", "source", "reason", "fit", "foreseen", "first_risk_kind", "first_risk_at", "lead_seconds", "recorded_at"}, rows); err != nil {
			t.Fatal(err)
		}
		r, err := h.ChurnReport(ctx, &healthv1.ChurnReportRequest{})
		if err != nil {
			t.Fatal(err)
		}
		// 90 days: four churns, three foreseen, leads 2h, 4h, 6h: median 4h.
		if o := r.GetOverall(); o.GetChurns() != 4 || o.GetForeseen() != 3 || o.GetMedianLeadTimeSeconds() != 4*3600 || o.GetForeseenShare() != 0.75 {
			t.Errorf("overall: %v", o)
		}
		if g := r.GetByFit()["good"]; g.GetChurns() != 2 || g.GetForeseen() != 1 || g.GetMedianLeadTimeSeconds() != 2*3600 {
			t.Errorf("good fit: %v", g)
		}
		if len(r.GetWorst()) != 1 || r.GetWorst()[0].GetAccountId() != "gone-1" {
			t.Errorf("worst: %v", r.GetWorst())
		}

		// Risk signals stored after the churns were recorded: gone-1's
		// onboarding stalled 3 h before it churned (a journey put later), so
		// it was foreseen; gone-3's health went red 5 h before it churned,
		// earlier than its recorded first risk. A risk after a churn, and a
		// signal of another kind, foresee nothing.
		sig := func(account, kind string, at time.Time) []any {
			return []any{"t1", account, account + kind, kind, "medium", at, now, "", ""}
		}
		if err := db.Insert(ctx, "signals", []string{"tenant_id", "account_id", "signal_id", "kind", "severity", "occurred_at", "detected_at", "summary", "payload"}, [][]any{
			sig("gone-1", "onboarding_stalled", now.Add(-5*time.Hour)), sig("gone-1", "milestone_reached", now.Add(-9*time.Hour)),
			sig("gone-3", "health_red", now.Add(-9*time.Hour)), sig("gone-0", "health_red", now),
		}); err != nil {
			t.Fatal(err)
		}
		if r, err = h.ChurnReport(ctx, &healthv1.ChurnReportRequest{}); err != nil {
			t.Fatal(err)
		}
		// Leads now 2h (gone-0), 3h (gone-1), 6h (gone-2), 5h (gone-3): median 4h.
		if o := r.GetOverall(); o.GetChurns() != 4 || o.GetForeseen() != 4 || o.GetMedianLeadTimeSeconds() != 4*3600 {
			t.Errorf("overall with the later signals: %v", o)
		}
		if len(r.GetWorst()) != 0 {
			t.Errorf("worst with the later signals: %v", r.GetWorst())
		}
		for _, rec := range r.GetRecords() {
			want := map[string]string{"gone-0": "cancel_intent", "gone-1": "onboarding_stalled", "gone-2": "cancel_intent", "gone-3": "health_red"}[rec.GetAccountId()]
			if got := rec.GetChurn().GetFirstRiskKind(); got != want {
				t.Errorf("%s: first risk %q, want %q", rec.GetAccountId(), got, want)
			}
		}

		if _, err := h.PutSentiment(ctx, &healthv1.PutSentimentRequest{AccountId: "acc-1", Score: 101}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("score 101: %v", err)
		}
		if _, err := h.PutSentiment(ctx, &healthv1.PutSentimentRequest{AccountId: "acc-1", Score: 10, Note: "budget cut"}); err != nil {
			t.Fatal(err)
		}
		hist, err := h.History(ctx, &healthv1.HistoryRequest{AccountId: "acc-1"})
		if err != nil {
			t.Fatal(err)
		}
		var sentiment string
		for _, c := range hist.GetEntries()[0].GetComponents() {
			if c.GetName() == "sentiment" && c.GetPresent() {
				sentiment = c.GetInputs()
			}
		}
		if len(hist.GetEntries()) == 0 || !strings.Contains(sentiment, `CSM sentiment 10 by token tok-1`) || !strings.Contains(sentiment, "budget cut") {
			t.Errorf("history after sentiment: %v", hist)
		}

		_, err = h.PutModel(ctx, &healthv1.PutModelRequest{Source: "health:\n  window: 1x\n"})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `line 2: health.window: "1x" is not a duration`) {
			t.Errorf("bad model: %v", err)
		}
		got, err := h.GetModel(ctx, &healthv1.GetModelRequest{})
		if err != nil || got.GetVersion() != 1 || got.GetSource() != testModel {
			t.Errorf("model: %v %v", got, err)
		}
	})
}

// An account's first and last event come from its scored state, which a
// later event moves; a row scored before the state held them falls back to
// the events. Either way they are the events' own first and last times.
func TestFirstAndLastEventAreTheAccountsEvents(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		a, h, ctx := apis(t, db)
		span := func(id string) (first, last time.Time) {
			t.Helper()
			r, err := db.Query(ctx, "SELECT min(timestamp), max(timestamp) FROM events WHERE tenant_id = 't1' AND account_id = ?", id)
			if err != nil || !r.Next() {
				t.Fatal(err)
			}
			if err := r.Scan(&first, &last); err != nil {
				t.Fatal(err)
			}
			return first, last
		}
		check := func(id, when string) {
			t.Helper()
			first, last := span(id)
			got, err := a.Get(ctx, &accountsv1.GetRequest{AccountId: id})
			if err != nil {
				t.Fatal(err)
			}
			acc := got.GetAccount()
			if !acc.GetFirstEventAt().AsTime().Equal(first) || !acc.GetLastEventAt().AsTime().Equal(last) {
				t.Errorf("%s, %s: Get says %v to %v, the events %v to %v", id, when, acc.GetFirstEventAt().AsTime(), acc.GetLastEventAt().AsTime(), first, last)
			}
			for _, listed := range list(t, a, ctx, &accountsv1.ListRequest{}) {
				if listed.GetId() == id && (!listed.GetFirstEventAt().AsTime().Equal(first) || !listed.GetLastEventAt().AsTime().Equal(last)) {
					t.Errorf("%s, %s: List says %v to %v, the events %v to %v", id, when, listed.GetFirstEventAt().AsTime(), listed.GetLastEventAt().AsTime(), first, last)
				}
			}
		}
		check("acc-0", "as scored")

		now := time.Now().UTC()
		testutil.InsertEvents(t, db, testutil.StoredEvent{Tenant: "t1", Account: "acc-2", Name: "A", User: "u0", At: now.Add(-time.Minute)})
		if _, err := h.scorer.Score(ctx, "t1", []string{"acc-2"}, scorer.Span{From: now.Add(-time.Hour), To: now}, "events"); err != nil {
			t.Fatal(err)
		}
		check("acc-2", "after a later event")
		if rows, err := scorer.ReadRows(ctx, db, "t1", "AND account_id = ?", "acc-2"); err != nil || len(rows) != 1 || !rows[0].State.LastEvent.Equal(now.Add(-time.Minute).Truncate(time.Second)) {
			t.Errorf("acc-2's state does not hold its last event: %v %v", rows, err)
		}

		// acc-3's row as an earlier version stored it: no last_event.
		if err := db.Exec(ctx, `INSERT INTO account_health SELECT tenant_id, account_id, score, band, change, fit, onboarding_status, intent_score, at_risk,
				churned_at, replaceRegexpOne(state, ',"last_event":"[^"]*"', ''), evaluated_at, version + 1
			FROM account_health FINAL WHERE tenant_id = 't1' AND account_id = 'acc-3'`); err != nil {
			t.Fatal(err)
		}
		rows, err := scorer.ReadRows(ctx, db, "t1", "AND account_id = ?", "acc-3")
		if err != nil || len(rows) != 1 || !rows[0].State.LastEvent.IsZero() {
			t.Fatalf("acc-3's row still has a last event: %v %v", rows, err)
		}
		check("acc-3", "scored before the state kept its last event")
	})
}

func TestSuccessVectorArithmetic(t *testing.T) {
	now := time.Date(2026, 6, 30, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	reached := []time.Time{now.Add(-time.Hour), now.Add(-29 * day), now.Add(-31 * day), now.Add(-61 * day), now.Add(time.Hour)}
	// Scores 50, 60, 70 on three days: 10 points a day; a point from
	// before the 30 days is left out.
	d0 := float64(now.Add(-10*day).Unix()) / 86400
	history := [][2]float64{{d0 - 25, 0}, {d0, 50}, {d0 + 1, 60}, {d0 + 2, 70}}
	v := successVector(reached, history, now)
	if v.GetMilestonesLast_30D() != 2 || v.GetMilestonesPrevious_30D() != 1 || v.GetMilestonesChange() != 1 || v.GetHealthSlope() != 10 || !v.GetPositive() {
		t.Errorf("two reached in the last 30 days, one in the 30 before, one earlier, one ahead, +10 a day: %v", v)
	}
	// Fewer milestones than the month before: not positive, whatever the slope.
	v = successVector([]time.Time{now.Add(-40 * day)}, history, now)
	if v.GetMilestonesChange() != -1 || v.GetPositive() {
		t.Errorf("one milestone the month before, none since: %v", v)
	}
	// Scores within a day make no trend; no milestones either: not positive.
	v = successVector(nil, [][2]float64{{d0, 40}, {d0 + 0.5, 90}}, now)
	if v.GetHealthSlope() != 0 || v.GetPositive() {
		t.Errorf("history within one day: %v", v)
	}
	// A falling score: negative slope, not positive.
	v = successVector([]time.Time{now.Add(-day)}, [][2]float64{{d0 - 5, 80}, {d0 + 5, 60}}, now)
	if v.GetHealthSlope() != -2 || v.GetPositive() {
		t.Errorf("-2 a day with a milestone more: %v", v)
	}
}

// The Success Vector's milestones come from milestone tracking's latest
// state: a journey edited since, which moved a milestone's reached time,
// still counts it once; the slope comes from the health history.
func TestSuccessVectorReadsTheJourneysLatestState(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		a, _, ctx := apis(t, db)
		now := time.Now().UTC().Truncate(time.Second)
		day := 24 * time.Hour
		// As milestone tracking stores it (progress.State as JSON): first
		// with "connect" reached 5 days ago, then, after a journey edit,
		// 3 days ago; "invite" 40 days ago; "report" not reached.
		state := func(connect time.Time) string {
			return fmt.Sprintf(`{"journey_id":"j","journey_version":1,"start":%q,"milestones":[`+
				`{"id":"connect","reached":true,"reached_at":%q,"progress":1,"required":1,"target_at":%q},`+
				`{"id":"invite","reached":true,"reached_at":%q,"progress":3,"required":3,"target_at":%q},`+
				`{"id":"report","reached":false,"progress":0,"required":1,"target_at":%q}],"status":"on_track"}`,
				now.Add(-50*day).Format(time.RFC3339), connect.Format(time.RFC3339), now.Format(time.RFC3339),
				now.Add(-40*day).Format(time.RFC3339), now.Format(time.RFC3339), now.Format(time.RFC3339))
		}
		cols := []string{"tenant_id", "account_id", "journey_id", "status", "start", "first_event_at", "state", "evaluated_at", "version"}
		for v, connect := range []time.Time{now.Add(-5 * day), now.Add(-3 * day)} {
			if err := db.Insert(ctx, "account_onboarding", cols, [][]any{{"t1", "acc-1", "j", "on_track", now.Add(-50 * day), now.Add(-50 * day),
				state(connect), now, uint64(v + 1)}}); err != nil {
				t.Fatal(err)
			}
		}
		// History rising 1 point a day before today's score.
		var hist [][]any
		for d := 20; d >= 2; d-- {
			hist = append(hist, []any{"t1", "acc-1", now.Add(-time.Duration(d) * day), uint8(80 - d), "green", 0.0, "[]"})
		}
		if err := db.Insert(ctx, "health_history", []string{"tenant_id", "account_id", "at", "score", "band", "intent_score", "components"}, hist); err != nil {
			t.Fatal(err)
		}
		got, err := a.Get(ctx, &accountsv1.GetRequest{AccountId: "acc-1"})
		if err != nil {
			t.Fatal(err)
		}
		v := got.GetAccount().GetSuccessVector()
		if v.GetMilestonesLast_30D() != 1 || v.GetMilestonesPrevious_30D() != 1 || v.GetMilestonesChange() != 0 {
			t.Errorf("milestones: %v", v)
		}
		if v.GetHealthSlope() <= 0 || !v.GetPositive() {
			t.Errorf("rising history: %v", v)
		}
		if got.GetAccount().GetJourneyId() != "j" || !got.GetAccount().GetStart().AsTime().Equal(now.Add(-50*day)) {
			t.Errorf("journey and start: %v %v", got.GetAccount().GetJourneyId(), got.GetAccount().GetStart().AsTime())
		}
	})
}
