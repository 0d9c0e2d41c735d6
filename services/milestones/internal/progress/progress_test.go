package progress

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stickpoint/stickpoint/pkg/specfile"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	"github.com/stickpoint/stickpoint/services/milestones/internal/journey"
)

var t0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

// reference is the brute-force answer: the first prefix of the distinct,
// time-ordered events whose matching events satisfy the threshold, checked
// from scratch for every prefix; and the last progress in that prefix (or
// in all the events when none does).
func reference(m journey.Milestone, evs []Event, now time.Time) (reached bool, at, lastProgress time.Time) {
	evs = Distinct(evs, now)
	upTo := evs
	for i := range evs {
		var matched []Event
		for _, e := range evs[:i+1] {
			if e.Name == m.Event && refMatches(m.Where, e.Properties) {
				matched = append(matched, e)
			}
		}
		if satisfied(m.Threshold, matched) {
			reached, at, upTo = true, evs[i].At, evs[:i+1]
			break
		}
	}
	// Progress is an event that counts: any matching one for a count, a
	// new user's first, a new day's first.
	counted := map[string]bool{}
	for _, e := range upTo {
		if e.Name != m.Event || !refMatches(m.Where, e.Properties) {
			continue
		}
		key := e.MessageID
		switch m.Threshold.Kind {
		case journey.DistinctUsers:
			key = e.User
		case journey.DistinctDays:
			key = e.At.Format("2006-01-02")
		}
		if key != "" && !counted[key] {
			counted[key] = true
			lastProgress = e.At
		}
	}
	return reached, at, lastProgress
}

func satisfied(t journey.Threshold, evs []Event) bool {
	switch t.Kind {
	case journey.Count:
		return len(evs) >= t.N
	case journey.DistinctUsers:
		users := map[string]bool{}
		for _, e := range evs {
			if e.User != "" {
				users[e.User] = true
			}
		}
		return len(users) >= t.N
	default:
		// Any window [d, d+W) of whole UTC days holding N distinct days.
		for _, start := range evs {
			d0 := start.At.Truncate(24 * time.Hour)
			days := map[string]bool{}
			for _, e := range evs {
				if !e.At.Before(d0) && e.At.Before(d0.Add(t.Window)) {
					days[e.At.Format("2006-01-02")] = true
				}
			}
			if len(days) >= t.N {
				return true
			}
		}
		return false
	}
}

// refMatches checks conditions through the JSON text of each value.
func refMatches(where []specfile.Condition, props map[string]any) bool {
	for _, c := range where {
		raw, _ := json.Marshal(props)
		var v any = props
		present := true
		for _, k := range c.Path {
			obj, ok := v.(map[string]any)
			if !ok {
				present = false
				break
			}
			if v, ok = obj[k]; !ok {
				present = false
				break
			}
		}
		_ = raw
		text := func(x any) string { b, _ := json.Marshal(x); return string(b) }
		var ok bool
		switch c.Op {
		case specfile.OpExists:
			ok = present == c.Exists
		case specfile.OpNe:
			ok = !present || text(v) != text(c.Value)
		case specfile.OpEq:
			ok = present && text(v) == text(c.Value)
		case specfile.OpIn:
			for _, w := range c.Values {
				ok = ok || (present && text(v) == text(w))
			}
		case specfile.OpPrefix:
			ok = present && strings.HasPrefix(text(v), `"`) && strings.HasPrefix(text(v), strings.TrimSuffix(text(c.Value), `"`))
		default:
			n, err := strconv.ParseFloat(text(v), 64)
			w := c.Value.(float64)
			ok = present && err == nil && map[string]bool{
				specfile.OpGt: n > w, specfile.OpGte: n >= w, specfile.OpLt: n < w, specfile.OpLte: n <= w}[c.Op]
		}
		if !ok {
			return false
		}
	}
	return true
}

func randomEvents(r *rand.Rand, n int) []Event {
	kinds := []any{"chart", "table", "chartX", 3.0, true, nil, map[string]any{"a": 1.0}}
	var out []Event
	for i := range n {
		props := map[string]any{}
		if r.IntN(4) > 0 {
			props["kind"] = kinds[r.IntN(len(kinds))]
		}
		if r.IntN(3) > 0 {
			props["n"] = float64(r.IntN(10))
		}
		if r.IntN(2) == 0 {
			props["plan"] = map[string]any{"name": []string{"pro", "team", "free"}[r.IntN(3)], "seats": float64(r.IntN(20))}
		}
		id := fmt.Sprintf("m%d", i)
		if i > 0 && r.IntN(8) == 0 { // a re-sent messageId
			id = fmt.Sprintf("m%d", r.IntN(i))
		}
		out = append(out, Event{
			MessageID:  id,
			User:       []string{"", "u1", "u2", "u3", "u4", "u5"}[r.IntN(6)],
			Name:       []string{"A", "B"}[r.IntN(2)],
			At:         t0.Add(time.Duration(r.Int64N(int64(20 * journey.Day)))),
			Properties: props,
		})
	}
	return out
}

func randomCondition(r *rand.Rand) specfile.Condition {
	paths := [][]string{{"kind"}, {"n"}, {"plan", "name"}, {"plan", "seats"}, {"missing"}, {"kind", "a"}}
	c := specfile.Condition{Path: paths[r.IntN(len(paths))], Op: specfile.Operators[r.IntN(len(specfile.Operators))]}
	scalars := []any{"chart", "table", "pro", 3.0, 5.0, true, nil}
	switch c.Op {
	case specfile.OpExists:
		c.Exists = r.IntN(2) == 0
	case specfile.OpIn:
		c.Values = []any{scalars[r.IntN(len(scalars))], scalars[r.IntN(len(scalars))]}
	case specfile.OpPrefix:
		c.Value = []string{"ch", "t", "p", ""}[r.IntN(4)]
	case specfile.OpGt, specfile.OpGte, specfile.OpLt, specfile.OpLte:
		c.Value = float64(r.IntN(12))
	default:
		c.Value = scalars[r.IntN(len(scalars))]
	}
	return c
}

func TestPredicatesAgreeWithTheBruteForceReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	reachedByKind := map[string]int{}
	for round := range 3000 {
		evs := randomEvents(r, 1+r.IntN(40))
		m := journey.Milestone{ID: "m", Event: "A", Target: 3 * journey.Day}
		switch r.IntN(3) {
		case 0:
			m.Threshold = journey.Threshold{Kind: journey.Count, N: 1 + r.IntN(6)}
		case 1:
			m.Threshold = journey.Threshold{Kind: journey.DistinctUsers, N: 1 + r.IntN(5)}
		default:
			w := 1 + r.IntN(7)
			m.Threshold = journey.Threshold{Kind: journey.DistinctDays, N: 1 + r.IntN(w), Window: time.Duration(w) * journey.Day}
		}
		for range r.IntN(3) {
			m.Where = append(m.Where, randomCondition(r))
		}
		now := t0.Add(time.Duration(r.Int64N(int64(22 * journey.Day))))
		got := milestone(m, t0, Distinct(evs, now))
		wantReached, wantAt, wantLast := reference(m, evs, now)
		if got.Reached != wantReached || !got.ReachedAt.Equal(wantAt) || !got.LastProgressAt.Equal(wantLast) {
			t.Fatalf("round %d: %+v where %+v: got reached=%v at %v, last progress %v; reference %v at %v, last progress %v",
				round, m.Threshold, m.Where, got.Reached, got.ReachedAt, got.LastProgressAt, wantReached, wantAt, wantLast)
		}
		for _, e := range evs {
			if specfile.Matches(m.Where, e.Properties) != refMatches(m.Where, e.Properties) {
				t.Fatalf("round %d: %+v on %v: Matches %v", round, m.Where, e.Properties, specfile.Matches(m.Where, e.Properties))
			}
		}
		if got.Reached {
			reachedByKind[m.Threshold.Kind]++
		}
	}
	// The random sets must exercise both outcomes of every kind.
	for _, k := range []string{journey.Count, journey.DistinctUsers, journey.DistinctDays} {
		if reachedByKind[k] < 100 || reachedByKind[k] > 900 {
			t.Errorf("%s reached in %d of about 1000 rounds: the random sets don't test it well", k, reachedByKind[k])
		}
	}
}

// issueJourney is the milestones issue's example journey.
func issueJourney(t *testing.T) journey.Journey {
	j, err := journey.Parse([]byte(journey.Template))
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func ev(id, user, name string, at time.Time, props map[string]any) Event {
	return Event{MessageID: id, User: user, Name: name, At: at, Properties: props}
}

func TestStatusesOfTheDoneWhenAccounts(t *testing.T) {
	j := issueJourney(t)
	now := t0.Add(60 * journey.Day)
	day := func(d float64) time.Time { return now.Add(time.Duration(d * float64(journey.Day))) }
	start := day(-40)
	chart := map[string]any{"kind": "chart"}
	completer := []Event{
		ev("1", "a", "Source Connected", start.Add(time.Hour), nil),
		ev("2", "a", "Report Built", start.Add(2*time.Hour), chart),
		ev("3", "a", "Report Built", start.Add(3*time.Hour), map[string]any{"kind": "table"}),
		ev("4", "a", "Report Viewed", start.Add(journey.Day), nil),
		ev("5", "b", "Report Viewed", start.Add(journey.Day), nil),
		ev("6", "c", "Report Viewed", start.Add(2*journey.Day), nil),
		ev("7", "a", "Logged In", start.Add(3*journey.Day), nil),
		ev("8", "a", "Logged In", start.Add(4*journey.Day), nil),
		ev("9", "a", "Logged In", start.Add(10*journey.Day), nil),
		ev("10", "a", "Logged In", start.Add(11*journey.Day), nil),
		ev("11", "a", "Logged In", start.Add(12*journey.Day+time.Hour), nil),
	}
	st := Evaluate(j, 1, start, completer, now, nil)
	if st.Status != Completed || !st.StatusSince.Equal(start.Add(12*journey.Day+time.Hour)) {
		t.Fatalf("completer: %s since %v", st.Status, st.StatusSince)
	}
	if st.TimeToFirstValue != time.Hour || !st.PastStickPoint == (now.Sub(start) >= 90*journey.Day) {
		t.Fatalf("ttfv %v past %v", st.TimeToFirstValue, st.PastStickPoint)
	}
	if h := st.Milestones[3]; !h.ReachedAt.Equal(start.Add(12*journey.Day+time.Hour)) || h.Progress != 3 {
		t.Fatalf("habit: %+v (days 3, 4, 10, 11, 12: the first 3 within 7 days end on day 12)", h)
	}

	firstOnly := Evaluate(j, 1, start, completer[:1], now, nil)
	if firstOnly.Status != Stalled || firstOnly.Milestones[1].Reached || !firstOnly.Milestones[0].Reached {
		t.Fatalf("first only: %+v", firstOnly)
	}
	// Stalled since the first of: 7 days without a milestone (start+1h+7d),
	// first_report 3 days past its 7-day target (start+10d).
	if !firstOnly.StatusSince.Equal(start.Add(time.Hour+7*journey.Day)) || firstOnly.Cause != "" {
		t.Fatalf("first only since %v cause %q", firstOnly.StatusSince, firstOnly.Cause)
	}

	idle10 := Evaluate(j, 1, day(-10), nil, now, nil)
	if idle10.Status != Stalled {
		t.Fatalf("idle 10 days: %s", idle10.Status)
	}
	idle4 := Evaluate(j, 1, day(-4), nil, now, nil)
	if idle4.Status != Late || idle4.Cause != "connected" || !idle4.StatusSince.Equal(day(-1)) {
		t.Fatalf("idle 4 days: %s since %v cause %s", idle4.Status, idle4.StatusSince, idle4.Cause)
	}
	if p := idle4.Milestones[0]; p.Reached || p.Progress != 0 || p.Required != 1 || !p.TargetAt.Equal(day(-1)) {
		t.Fatalf("pending milestone: %+v", p)
	}
}

func TestStatusFollowsTheClockAlone(t *testing.T) {
	j := issueJourney(t)
	start := t0
	at := func(d float64) time.Time { return start.Add(time.Duration(d * float64(journey.Day))) }
	for _, c := range []struct {
		day  float64
		want string
	}{{0.5, OnTrack}, {1.5, AtRisk}, {3.5, Late}, {5.5, Late}, {6.5, Stalled}, {30, Stalled}} {
		if got := Evaluate(j, 1, start, nil, at(c.day), nil).Status; got != c.want {
			t.Errorf("day %.1f with no events: %s, want %s", c.day, got, c.want)
		}
	}
	// Past 3 days of grace after the 3-day target: stalled since day 6,
	// before the 7 days of inactivity.
	if st := Evaluate(j, 1, start, nil, at(6.5), nil); !st.StatusSince.Equal(at(6)) || st.Cause != "connected" {
		t.Errorf("stalled since %v by %q", st.StatusSince, st.Cause)
	}
	// Reaching the first milestone on day 1 moves the next target to 7d.
	evs := []Event{ev("1", "a", "Source Connected", at(1), nil)}
	for _, c := range []struct {
		day  float64
		want string
	}{{2, OnTrack}, {5.5, AtRisk}, {7.5, Late}, {8, Stalled}} {
		if got := Evaluate(j, 1, start, evs, at(c.day), nil).Status; got != c.want {
			t.Errorf("day %.1f after connecting on day 1: %s, want %s", c.day, got, c.want)
		}
	}
	// Events after now don't count: the state is the state at now.
	if got := Evaluate(j, 1, start, evs, at(0.5), nil); got.Milestones[0].Reached {
		t.Error("an event after now counted")
	}
}

func TestTransitionsHappenOnce(t *testing.T) {
	j := issueJourney(t)
	start := t0
	at := func(d float64) time.Time { return start.Add(time.Duration(d * float64(journey.Day))) }
	evs := []Event{ev("1", "a", "Source Connected", at(1), nil)}
	first := Evaluate(j, 1, start, evs, at(2), nil)
	got := Transitions(nil, first)
	if len(got) != 1 || got[0].Kind != KindMilestoneReached || got[0].Milestone != "connected" || !got[0].At.Equal(at(1)) {
		t.Fatalf("first state: %+v", got)
	}
	// The same events again, re-sent or redelivered: nothing new.
	again := Evaluate(j, 1, start, append(evs, evs...), at(2), nil)
	if got := Transitions(&first, again); len(got) != 0 {
		t.Fatalf("recompute: %+v", got)
	}
	// Time passes: at risk, then late, then stalled, each once.
	var kinds []string
	prev := again
	for d := 2.0; d <= 12; d += 0.25 {
		cur := Evaluate(j, 1, start, evs, at(d), nil)
		for _, tr := range Transitions(&prev, cur) {
			kinds = append(kinds, tr.Kind+":"+tr.Milestone)
		}
		prev = cur
	}
	want := "onboarding_at_risk:first_report onboarding_late:first_report onboarding_stalled:"
	if strings.Join(kinds, " ") != want {
		t.Fatalf("transitions %v, want %s", kinds, want)
	}
	// A late event, back in time, reaches first_report: the account is
	// judged by its new state.
	late := append(evs, ev("2", "a", "Report Built", at(2), map[string]any{"kind": "chart"}), ev("3", "a", "Report Built", at(2.1), map[string]any{"kind": "chart"}))
	cur := Evaluate(j, 1, start, late, at(12), nil)
	trs := Transitions(&prev, cur)
	if len(trs) != 1 || trs[0].Kind != KindMilestoneReached || trs[0].Milestone != "first_report" || !trs[0].At.Equal(at(2.1)) {
		t.Fatalf("late event: %+v (status %s)", trs, cur.Status)
	}
	if trs[0].Identity() == Transitions(&prev, Evaluate(j, 2, start, late, at(12), nil))[0].Identity() != true {
		t.Fatal("identity changes with the journey version")
	}
}

func TestRestatusEqualsEvaluateWithoutNewEvents(t *testing.T) {
	j := issueJourney(t)
	r := rand.New(rand.NewPCG(3, 4))
	unmoved := 0
	defer func() {
		if unmoved == 0 || unmoved == 500 {
			t.Errorf("%d of 500 states unmoved by the clock: the rounds don't test Moved both ways", unmoved)
		}
	}()
	for round := range 500 {
		var evs []Event
		for i := range r.IntN(12) {
			evs = append(evs, ev(fmt.Sprint(i), fmt.Sprintf("u%d", r.IntN(3)),
				[]string{"Source Connected", "Report Built", "Report Viewed", "Logged In"}[r.IntN(4)],
				t0.Add(time.Duration(r.Int64N(int64(20*journey.Day)))), map[string]any{"kind": "chart"}))
		}
		then := t0.Add(time.Duration(r.Int64N(int64(25 * journey.Day))))
		later := then.Add(time.Duration(r.Int64N(int64(100 * journey.Day))))
		// Events after then have not arrived yet at then.
		var arrived []Event
		for _, e := range evs {
			if !e.At.After(then) {
				arrived = append(arrived, e)
			}
		}
		old := Evaluate(j, 1, t0, arrived, then, nil)
		got := Restatus(j, old, later)
		want := Evaluate(j, 1, t0, arrived, later, nil)
		if got.Status != want.Status || !got.StatusSince.Equal(want.StatusSince) || got.Cause != want.Cause || got.PastStickPoint != want.PastStickPoint {
			t.Fatalf("round %d: restatus %s %v %s, evaluate %s %v %s", round, got.Status, got.StatusSince, got.Cause, want.Status, want.StatusSince, want.Cause)
		}
		// Moved sees every change Restatus makes, and only those.
		oldJSON, _ := json.Marshal(old)
		gotJSON, _ := json.Marshal(got)
		if changed := string(oldJSON) != string(gotJSON); Moved(old, got) != changed {
			t.Fatalf("round %d: Moved %v, the states differ: %v", round, Moved(old, got), changed)
		}
		if !Moved(old, got) {
			unmoved++
		}
	}
}

// Settled milestones (reached before every new event) need none of their
// events: the state is the one all events give.
func TestSettledMilestonesNeedNoEvents(t *testing.T) {
	j := issueJourney(t)
	r := rand.New(rand.NewPCG(5, 6))
	names := []string{"Source Connected", "Report Built", "Report Viewed", "Logged In"}
	for round := range 500 {
		var old, recent []Event
		cut := t0.Add(time.Duration(r.Int64N(int64(15 * journey.Day))))
		for i := range r.IntN(30) {
			e := ev(fmt.Sprint(i), fmt.Sprintf("u%d", r.IntN(4)), names[r.IntN(4)],
				t0.Add(time.Duration(r.Int64N(int64(30*journey.Day)))), map[string]any{"kind": "chart"})
			if e.At.Before(cut) {
				old = append(old, e)
			} else {
				recent = append(recent, e)
			}
		}
		now := t0.Add(31 * journey.Day)
		before := Evaluate(j, 1, t0, old, now, nil)
		settled := map[string]Milestone{}
		for _, m := range before.Milestones {
			if m.Reached && m.ReachedAt.Before(cut) {
				settled[m.ID] = m
			}
		}
		// What the evaluator fetches: only the events of unsettled milestones.
		var fetched []Event
		for _, e := range append(slices.Clone(old), recent...) {
			for i, m := range j.Milestones {
				if _, ok := settled[m.ID]; !ok && e.Name == j.Milestones[i].Event {
					fetched = append(fetched, e)
					break
				}
			}
		}
		got := Evaluate(j, 1, t0, fetched, now, settled)
		want := Evaluate(j, 1, t0, append(old, recent...), now, nil)
		if a, b := fmt.Sprintf("%+v", got), fmt.Sprintf("%+v", want); a != b {
			t.Fatalf("round %d:\nsettled %s\nall     %s", round, a, b)
		}
	}
}

// The stored state's JSON is read outside this service: health scoring's
// Success Vector counts milestones by "milestones", "reached" and
// "reached_at" (services/health/internal/api, journeyState). Renaming them
// breaks it.
func TestStateJSONKeepsWhatHealthReads(t *testing.T) {
	st := State{JourneyID: "j", Milestones: []Milestone{{ID: "connect", Reached: true, ReachedAt: t0}, {ID: "invite"}}}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var read struct {
		Milestones []struct {
			Reached   bool      `json:"reached"`
			ReachedAt time.Time `json:"reached_at"`
		} `json:"milestones"`
	}
	if err := json.Unmarshal(b, &read); err != nil {
		t.Fatal(err)
	}
	if len(read.Milestones) != 2 || !read.Milestones[0].Reached || !read.Milestones[0].ReachedAt.Equal(t0) || read.Milestones[1].Reached {
		t.Errorf("health reads %+v from %s", read, b)
	}
}

// Equal is what decides whether an evaluation stores a state: a field it
// does not compare would be lost whenever only that field changed. Each
// field of State and of its milestones, changed on its own, must make it
// false.
func TestEqualSeesEveryField(t *testing.T) {
	at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	st := State{JourneyID: "onboarding", JourneyVersion: 2, Start: at, Status: "on_track", StatusSince: at, Cause: "connected",
		TimeToFirstValue: time.Hour, StickPointAt: at, PastStickPoint: true,
		Milestones: []Milestone{{ID: "connected", Reached: true, ReachedAt: at, Progress: 1, Required: 1, TargetAt: at, LastProgressAt: at}}}
	if !st.Equal(st) {
		t.Fatal("a state is not equal to itself")
	}
	for path, changed := range testutil.Variants(t, st) {
		if st.Equal(changed) {
			t.Errorf("%s changed, and Equal says the same", path)
		}
	}
	// Times are compared as instants, whatever their zone.
	moved := st
	moved.Start = at.In(time.FixedZone("CET", 3600))
	if !st.Equal(moved) {
		t.Error("the same instant in another zone is not equal")
	}
}

// NextChange against a scan of the clock: on random journeys and states
// (whole hours), the first hour at which the status has moved is the
// first hour at or after the change NextChange names, and the status
// moves exactly there.
func TestNextChangeIsTheFirstMoveOfTheClock(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 9))
	hours := func(max int) time.Duration { return time.Duration(r.IntN(max)) * time.Hour }
	for round := range 300 {
		j := issueJourney(t)
		j.StallAfter, j.AtRiskBefore, j.StickPoint = hours(20*24)+time.Hour, hours(5*24), hours(120*24)
		start := t0.Add(hours(1000))
		st := State{Start: start, StickPointAt: start.Add(j.StickPoint)}
		for i := range j.Milestones {
			j.Milestones[i].Target, j.Milestones[i].Grace = hours(40*24)+time.Hour, hours(10*24)
			m := Milestone{ID: j.Milestones[i].ID, TargetAt: start.Add(j.Milestones[i].Target)}
			if r.IntN(3) == 0 {
				m.Reached, m.ReachedAt = true, start.Add(hours(60*24))
			}
			st.Milestones = append(st.Milestones, m)
		}
		from := start.Add(hours(150*24) - 20*24*time.Hour)
		at := Restatus(j, st, from)
		var first time.Time // the first whole hour after from at which it moved
		for h := from.Add(time.Hour); h.Before(from.Add(400 * journey.Day)); h = h.Add(time.Hour) {
			if Moved(at, Restatus(j, st, h)) {
				first = h
				break
			}
		}
		got := NextChange(j, st, from)
		switch {
		case first.IsZero() && !got.IsZero() && got.Before(from.Add(400*journey.Day)):
			t.Fatalf("round %d: NextChange %s, and the clock moves nothing", round, got)
		case first.IsZero():
		case got.IsZero() || got.After(first) || !got.After(first.Add(-time.Hour)):
			t.Fatalf("round %d: NextChange %s, and the status first moved by %s", round, got, first)
		case !Moved(at, Restatus(j, st, got)) || Moved(at, Restatus(j, st, got.Add(-time.Nanosecond))):
			t.Fatalf("round %d: NextChange %s is not where the status moves", round, got)
		}
	}
}
