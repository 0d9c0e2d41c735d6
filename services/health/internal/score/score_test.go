package score

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stickpoint/stickpoint/pkg/specfile"
	"github.com/stickpoint/stickpoint/services/health/internal/model"
)

const day = specfile.Day

var now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// today is now's UTC day.
var today = now.Truncate(day)

func testModel(t *testing.T, src string) model.Model {
	t.Helper()
	m, err := model.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// onlyWeights is a model scoring the named components with these weights.
func onlyWeights(t *testing.T, comps string) model.Model {
	return testModel(t, "health:\n  key_features: [A, B, C, D]\n  components: {"+comps+"}\n")
}

// daily is n events of name on each of the days ago in [from, to), by users.
func daily(name string, n, from, to int, users ...string) []DayUsage {
	var out []DayUsage
	for ago := from; ago < to; ago++ {
		out = append(out, DayUsage{Day: today.Add(-time.Duration(ago) * day), Names: []string{name}, Events: n, Users: users})
	}
	return out
}

// agg sums rollup rows as the scorer's query does.
func agg(m model.Model, rows []DayUsage) Usage {
	return Aggregate(rows, m.Health.KeyFeatures, SpansOf(m.Health, now))
}

func component(t *testing.T, h Health, name string) Component {
	t.Helper()
	c, ok := h.Component(name)
	if !ok {
		t.Fatalf("no %s component in %+v", name, h.Components)
	}
	return c
}

func TestEachComponentsArithmetic(t *testing.T) {
	m := onlyWeights(t, "adoption: {weight: 1}, engagement: {weight: 1}, users: {weight: 1, seats_trait: seats}, trend: {weight: 1, recent: 7d, baseline: 28d}")
	var usage []DayUsage
	usage = append(usage, daily("A", 1, 0, 1, "u1")...)
	usage = append(usage, daily("B", 1, 3, 4, "u2")...)
	usage = append(usage, daily("C", 1, 29, 30, "u3")...)
	usage = append(usage, daily("D", 1, 30, 31, "u4")...) // outside the 30-day window
	// Trend, over whole days before today: 1 a day in the 7 days before
	// today, 2 a day in the 28 before them; the first event 40 days ago.
	usage = append(usage, daily("Other", 2, 8, 36, "u1")...)
	usage = append(usage, daily("Other", 1, 1, 8, "u1")...)
	in := Inputs{Usage: agg(m, usage), FirstEvent: today.Add(-40 * day), Seats: 5, Norms: Norms{ActiveDays: 46, Events: 100}}
	h := Compute(m, in, now)

	// A, B and C in the window; D 30 days ago is out.
	if c := component(t, h, model.Adoption); c.Score != 75 || !strings.Contains(c.Inputs, "used 3 of 4 key features in 30d: A, B, C; not used: D") {
		t.Errorf("adoption: %+v", c)
	}
	// Active every day of the 30 (Other on days 1-29, A today):
	// 22*2 + 7*1 + A, B, C = 54 events. Days min(1, 30/46) = 0.652,
	// events 0.54: 59.6.
	if c := component(t, h, model.Engagement); c.Score != 60 || !strings.Contains(c.Inputs, "active 30 of 30 days with 54 events") {
		t.Errorf("engagement: %+v", c)
	}
	// u1, u2, u3 of 5 seats.
	if c := component(t, h, model.Users); c.Score != 60 || c.Inputs != "3 active users of 5 seats" {
		t.Errorf("users: %+v", c)
	}
	// Recent (days 1-7): 7 of Other and B = 8 over 7 days; baseline (days
	// 8-35): 28 days of 2, C and D = 58 over 28. 1.143 / 2.071 = 55%.
	// Today's A counts in the window, not in the trend.
	if c := component(t, h, model.Trend); c.Score != 55 || !strings.Contains(c.Inputs, "7d before today: 1.1 events/day against 2.1 in the 28 days before (55%)") {
		t.Errorf("trend: %+v", c)
	}
	// (75 + 60 + 60 + 55) / 4 = 62.5, yellow.
	if h.Score != 63 || h.Band != model.Yellow {
		t.Errorf("score %d %s", h.Score, h.Band)
	}
}

func TestMissingInputsAreLeftOutAndTheRestReNormalised(t *testing.T) {
	m := onlyWeights(t, "adoption: {weight: 20}, users: {weight: 15}, trend: {weight: 15}, milestones: {weight: 15}, sentiment: {weight: 10}")
	in := Inputs{Usage: agg(m, daily("A", 1, 0, 1, "u1")), FirstEvent: today}
	h := Compute(m, in, now)
	// Only adoption (1 of 4: 25) has inputs: no seats, no baseline, no
	// journey, no sentiment. 25, not 20*25/75.
	for _, name := range []string{model.Users, model.Trend, model.Milestones, model.Sentiment} {
		if c := component(t, h, name); c.Present || c.Inputs == "" {
			t.Errorf("%s should be left out with a reason: %+v", name, c)
		}
	}
	if h.Score != 25 || h.Band != model.Red {
		t.Errorf("score %d %s", h.Score, h.Band)
	}
	// With onboarding late (30): (20*25 + 15*30) / 35 = 27.1.
	in.Onboarding = "late"
	if h := Compute(m, in, now); h.Score != 27 || component(t, h, model.Milestones).Inputs != "onboarding late" {
		t.Errorf("with onboarding: %d %+v", h.Score, h.Components)
	}
}

func TestANewAccountIsJudgedOnTheDaysItHasLived(t *testing.T) {
	m := onlyWeights(t, "adoption: {weight: 20}, engagement: {weight: 20}, users: {weight: 15, seats_trait: seats}, milestones: {weight: 15}, risk: {weight: 15}")
	norms := Norms{ActiveDays: 15, Events: 300} // the median account: 15 of 30 days, 300 events

	// Signed up 2 hours ago (its group call), nothing used yet: usage is
	// not judged, so it is not red at sign-up. Onboarding on track and no
	// cancel intent: 100.
	signup := Inputs{FirstEvent: now.Add(-2 * time.Hour), Seats: 10, Norms: norms, Onboarding: "on_track"}
	h := Compute(m, signup, now)
	for _, name := range []string{model.Adoption, model.Engagement, model.Users} {
		if c := component(t, h, name); c.Present || c.Inputs != "no usage yet, onboarding on track: judged from its first use, or once onboarding is late" {
			t.Errorf("%s at sign-up: %+v", name, c)
		}
	}
	if h.Score != 100 || h.Band != model.Green {
		t.Errorf("at sign-up: %d %s", h.Score, h.Band)
	}
	// Days on, unused, its onboarding speaks for it while on track; once
	// late, usage is judged too: (15*30 + 15*100) / 85 = 23, red.
	if h := Compute(m, signup, now.Add(3*day)); h.Score != 100 {
		t.Errorf("3 days unused, onboarding on track: %d %+v", h.Score, h.Components)
	}
	signup.Onboarding = "late"
	if h := Compute(m, signup, now.Add(5*day)); h.Score != 23 || h.Band != model.Red || !component(t, h, model.Engagement).Present {
		t.Errorf("5 days unused, onboarding late: %d %+v", h.Score, h.Components)
	}
	// With no journey, a day's grace: then adoption, engagement and users
	// are 0: 15*100 / 70 = 21, red.
	signup.Onboarding = ""
	if c := component(t, Compute(m, signup, now), model.Users); c.Present || !strings.Contains(c.Inputs, "no usage yet, under a day after its first event") {
		t.Errorf("users at sign-up with no journey: %+v", c)
	}
	if h := Compute(m, signup, now.Add(22*time.Hour)); h.Score != 21 || h.Band != model.Red || !component(t, h, model.Users).Present {
		t.Errorf("a day after sign-up with no use and no journey: %d %+v", h.Score, h.Components)
	}

	// Three days old (the day before yesterday, yesterday, today), active
	// on 2 of them with 20 events of A (1 of the 4 key features: 25) by 3
	// users: against the median account in 3 days, 1.5 days and 30
	// events: (1 + 0.667) / 2 = 83. Users 3 of 10: 30.
	// (20*25 + 20*83 + 15*30 + 15*100 + 15*100) / 85 = 66, yellow.
	young := Inputs{Usage: agg(m, append(daily("A", 10, 0, 1, "u1", "u2"), daily("A", 10, 2, 3, "u3")...)), FirstEvent: today.Add(-2*day + time.Hour),
		Seats: 10, Norms: norms, Onboarding: "on_track"}
	h = Compute(m, young, now)
	if c := component(t, h, model.Engagement); c.Score != 83 || c.Inputs != "active 2 of the 3 days since its first event, with 20 events; the tenant's median account in as many days: 1.5 days, 30 events" {
		t.Errorf("engagement of a 3-day-old account: %+v", c)
	}
	if h.Score != 66 || h.Band != model.Yellow {
		t.Errorf("3 days old: %d %s", h.Score, h.Band)
	}
	// Judged against the whole window, as an old account is, it reads
	// (2/15 + 20/300) / 2 = 10 and scores (500 + 200 + 450 + 3000) / 85
	// = 48.8.
	young.FirstEvent = today.Add(-40 * day)
	if h := Compute(m, young, now); h.Score != 49 {
		t.Errorf("an old account with the same usage: %d %s", h.Score, h.Band)
	}
	if c := component(t, Compute(m, young, now), model.Engagement); c.Score != 10 || !strings.Contains(c.Inputs, "active 2 of 30 days with 20 events; the tenant's median account: 15 days, 300 events") {
		t.Errorf("engagement of an old account: %+v", c)
	}
}

func TestSentimentCountsUntilItExpires(t *testing.T) {
	m := onlyWeights(t, "adoption: {weight: 10}, sentiment: {weight: 10}")
	s := &Sentiment{Score: 30, Note: "champion left", Author: "ann@vendor.example", SetAt: now.Add(-day), ExpiresAt: now.Add(day)}
	in := Inputs{Usage: agg(m, daily("A", 1, 0, 1)), Sentiment: s}
	h := Compute(m, in, now)
	if c := component(t, h, model.Sentiment); !c.Present || c.Score != 30 || !strings.Contains(c.Inputs, `by ann@vendor.example, until 2026-12-01: "champion left"`) {
		t.Errorf("sentiment: %+v", c)
	}
	if h.Score != 28 { // (25 + 30) / 2 = 27.5
		t.Errorf("score %d", h.Score)
	}
	later := Compute(m, in, now.Add(2*day))
	if c := component(t, later, model.Sentiment); c.Present || !strings.Contains(c.Inputs, "expired on 2026-12-01") {
		t.Errorf("expired sentiment: %+v", c)
	}
}

func TestCancelIntentDecaysCapsAndShowsItsEvidence(t *testing.T) {
	m := testModel(t, model.Template)
	// One billing-page view 7 days ago (a half-life): 7.5 of 15.
	in := Inputs{Hits: []Hit{{Signal: "billing_page", At: now.Add(-7 * day), User: "u1", MessageID: "m1"}}}
	if i := Compute(m, in, now).Intent; i.Score != 7.5 || len(i.Signals) != 1 || i.Signals[0].Share != 1 {
		t.Errorf("one decayed view: %+v", i)
	}
	// Ten views now add 150, capped at twice the weight: 30. An export
	// 14 days ago adds 15. 45 is under the threshold of 50.
	in.Hits = nil
	for i := range 10 {
		in.Hits = append(in.Hits, Hit{Signal: "billing_page", At: now.Add(-time.Duration(i) * time.Minute), User: "u2", MessageID: string(rune('a' + i))})
	}
	in.Hits = append(in.Hits, Hit{Signal: "export", At: now.Add(-14 * day), User: "u3", MessageID: "x"})
	i := Compute(m, in, now).Intent
	if i.Score != 45 || i.Over() || len(i.Signals) != 2 || i.Signals[0].Contribution != 30 || math.Abs(i.Signals[0].Share-0.667) > 1e-9 {
		t.Errorf("capped: %+v", i)
	}
	if w := i.Signals[0].Words(); !strings.Contains(w, "Viewed the billing or cancel page 10 times, last on 2026-11-30 12:00 by u2 (67% of the cancel-intent score)") {
		t.Errorf("evidence words: %s", w)
	}
	// Events after now don't count.
	in.Hits = append(in.Hits, Hit{Signal: "export", At: now.Add(time.Hour), MessageID: "future"})
	if got := Compute(m, in, now).Intent.Score; got != 45 {
		t.Errorf("a future event counted: %v", got)
	}
}

func TestUsageDropIsComputedFromTheAccountsOwnBaseline(t *testing.T) {
	m := testModel(t, model.Template)
	busy := daily("A", 10, 8, 35, "u1") // 10 a day until 8 days ago
	in := Inputs{Usage: agg(m, busy), FirstEvent: today.Add(-34 * day), Seats: 5}
	h := Compute(m, in, now)
	if len(h.Intent.Signals) != 1 || h.Intent.Signals[0].ID != "usage_drop" || h.Intent.Score != 55 || !h.Intent.Over() {
		t.Fatalf("intent: %+v", h.Intent)
	}
	// The baseline is days 8-34 (the first event), 10 a day.
	if d := h.Intent.Signals[0].Detail; !strings.Contains(d, "0 events/day in the 7d before today against a baseline of 10 (100% lower") {
		t.Errorf("detail: %s", d)
	}
	if c := component(t, h, model.Risk); c.Score != 0 {
		t.Errorf("risk at the threshold should be 0: %+v", c)
	}
	// Half the baseline's rate is still on (50% drop); above it is off.
	steady := append(daily("A", 10, 7, 35, "u1"), daily("A", 6, 0, 7, "u1")...)
	if h := Compute(m, Inputs{Usage: agg(m, steady), FirstEvent: today.Add(-34 * day)}, now); len(h.Intent.Signals) != 0 {
		t.Errorf("a 40%% drop turned usage_drop on: %+v", h.Intent)
	}
}

// The norms are exact medians: the middle value, the mean of the two
// middle values for an even count, zero with no active account.
func TestNormsAreExactMedians(t *testing.T) {
	for _, c := range []struct {
		days, events []float64
		want         Norms
	}{
		{nil, nil, Norms{}},
		{[]float64{3}, []float64{40}, Norms{ActiveDays: 3, Events: 40}},
		{[]float64{9, 1, 4}, []float64{10, 300, 20}, Norms{ActiveDays: 4, Events: 20}},
		{[]float64{5, 1, 2, 8}, []float64{7, 1, 100, 2}, Norms{ActiveDays: 3.5, Events: 4.5}},
	} {
		in := slices.Clone(c.days)
		if got := NormsOf(c.days, c.events); got != c.want {
			t.Errorf("NormsOf(%v, %v) = %+v, want %+v", c.days, c.events, got, c.want)
		}
		if !slices.Equal(in, c.days) {
			t.Errorf("NormsOf sorted its input: %v", c.days)
		}
	}
}

// Aggregate counts what a set would: the days, events and distinct users
// of the window, the key features used, and the trend's events, on random
// rollups of few users and of many (past the count it keeps in an array).
func TestAggregateCountsAsSetsWould(t *testing.T) {
	m := testModel(t, "health:\n  key_features: [A, B, C]\n")
	sp := SpansOf(m.Health, now)
	r := rand.New(rand.NewPCG(3, 3))
	for _, pool := range []int{3, 31, 32, 33, 200} {
		for range 50 {
			var rows []DayUsage
			for ago := range 80 {
				if r.IntN(3) == 0 {
					continue
				}
				for range 1 + r.IntN(2) { // a day can have a row per name
					d := DayUsage{Day: today.Add(-time.Duration(ago) * day), Events: 1 + r.IntN(20)}
					for range r.IntN(12) {
						d.Users = append(d.Users, fmt.Sprintf("u%d", r.IntN(pool)))
					}
					d.Names = []string{[]string{"A", "B", "C", "Z"}[r.IntN(4)]}
					rows = append(rows, d)
				}
			}
			var want Usage
			users, features, days := map[string]bool{}, map[string]bool{}, map[time.Time]bool{}
			for _, d := range rows {
				if !d.Day.Before(sp.Window.From) && !d.Day.After(sp.Window.To) {
					days[d.Day] = true
					want.Events += d.Events
					for _, u := range d.Users {
						users[u] = true
					}
					for _, n := range d.Names {
						if n != "Z" {
							features[n] = true
						}
					}
				}
				switch {
				case !d.Day.Before(sp.Recent.From) && !d.Day.After(sp.Recent.To):
					want.Recent += d.Events
				case !d.Day.Before(sp.Baseline.From) && !d.Day.After(sp.Baseline.To):
					want.Baseline += d.Events
				}
			}
			want.Users, want.ActiveDays = len(users), len(days)
			got := Aggregate(rows, m.Health.KeyFeatures, sp)
			gotFeatures := slices.Sorted(slices.Values(got.Features))
			wantFeatures := slices.Sorted(maps.Keys(features))
			got.Features, want.Features = nil, nil
			if !got.Equal(want) || !slices.Equal(gotFeatures, wantFeatures) {
				t.Fatalf("users from %d: Aggregate %+v %v; want %+v %v", pool, got, gotFeatures, want, wantFeatures)
			}
			// The same, with each day's users as a UserSet too: user uN is
			// bit N, and a day with a user past 63 has none (past a pool of
			// 64, windows mix the two).
			for i := range rows {
				rows[i].UserSet = 0
				for _, u := range rows[i].Users {
					n, _ := strconv.Atoi(strings.TrimPrefix(u, "u"))
					if n >= 64 {
						rows[i].UserSet = 0
						break
					}
					rows[i].UserSet |= 1 << n
				}
			}
			if got := Aggregate(rows, m.Health.KeyFeatures, sp); got.Users != want.Users {
				t.Fatalf("users from %d, as sets: Aggregate counts %d; want %d", pool, got.Users, want.Users)
			}
		}
	}
}

// The components' words are joined by hand, not formatted: they read as
// the fmt formats they replaced.
func TestComponentWordsReadAsFormatted(t *testing.T) {
	for _, f := range []float64{0, 0.04, 0.05, 0.96, 1, 1.25, 2.5, 12.349, 100, -3.5, 1e9, math.NaN(), math.Inf(1)} {
		if got, want := trim(f), strings.TrimSuffix(fmt.Sprintf("%.1f", f), ".0"); got != want {
			t.Errorf("trim(%v) = %q, want %q", f, got, want)
		}
	}
	m := testModel(t, "health:\n  key_features: [A]\n")
	sp := SpansOf(m.Health, now)
	r := rand.New(rand.NewPCG(8, 8))
	for range 200 {
		in := Inputs{Usage: Usage{ActiveDays: r.IntN(31), Events: r.IntN(5000), Users: r.IntN(40), Recent: 1 + r.IntN(300), Baseline: 1 + r.IntN(900)},
			Norms: Norms{ActiveDays: float64(1+r.IntN(300)) / 10, Events: float64(1+r.IntN(90000)) / 10}, Seats: float64(1 + r.IntN(50)),
			FirstEvent: now.Add(-time.Duration(1+r.IntN(90*24)) * time.Hour)}
		if _, ok, got := engagement(in, sp.Window, now); ok {
			days := lived(sp.Window, in.FirstEvent)
			share := days.count() / sp.Window.count()
			want := fmt.Sprintf("active %d of %d days with %d events; the tenant's median account: %s days, %s events",
				in.Usage.ActiveDays, int(sp.Window.count()), in.Usage.Events, trim(in.Norms.ActiveDays), trim(in.Norms.Events))
			if share < 1 {
				want = fmt.Sprintf("active %d of the %d days since its first event, with %d events; the tenant's median account in as many days: %s days, %s events",
					in.Usage.ActiveDays, int(days.count()), in.Usage.Events, trim(in.Norms.ActiveDays*share), trim(in.Norms.Events*share))
			}
			if got != want {
				t.Errorf("engagement:\n%s\nwant\n%s", got, want)
			}
		}
		if _, ok, got := users(in, "seats", now); ok {
			if want := fmt.Sprintf("%d active users of %s seats", in.Usage.Users, trim(in.Seats)); got != want {
				t.Errorf("users: %q, want %q", got, want)
			}
		}
		if tr := trendOf(m.Health, in, sp); tr.present {
			base := sp.Baseline
			if first := in.FirstEvent.UTC().Truncate(day); first.After(base.From) {
				base.From = first
			}
			want := fmt.Sprintf("%s before today: %s events/day against %s in the %d days before (%d%%)",
				specfile.FormatDuration(m.Health.Recent), trim(tr.recent), trim(tr.baseline), int(base.count()), int(math.Round(100*tr.recent/tr.baseline)))
			if tr.words != want {
				t.Errorf("trend: %q, want %q", tr.words, want)
			}
		}
	}
}
