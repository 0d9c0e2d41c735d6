// Package progress computes an account's onboarding state from its stored
// events, a journey and a clock: each milestone's progress and reached
// time, the onboarding status, time to first value and the stick point.
// It is a pure function (DESIGN.md, "Detection: recompute from stored
// events, never accumulate"), so live evaluation, redelivery, late events,
// the scheduled sweep and a backfill all give the same answer, and it
// keeps no counter a redelivery could bump twice: each messageId counts
// once, and events after now don't count.
package progress

import (
	"cmp"
	"slices"
	"time"

	"github.com/stickpoint/stickpoint/pkg/specfile"
	"github.com/stickpoint/stickpoint/services/milestones/internal/journey"
)

// Onboarding statuses, in the order Evaluate tries them.
const (
	Completed = "completed"
	Stalled   = "stalled"
	Late      = "late"
	AtRisk    = "at_risk"
	OnTrack   = "on_track"
)

// Statuses lists every status.
var Statuses = []string{Completed, Stalled, Late, AtRisk, OnTrack}

// Event is a stored event as the predicates see it.
type Event struct {
	MessageID string
	// User is the user id, else the anonymous id.
	User string
	Name string
	At   time.Time
	// Properties are the event's properties decoded from JSON (nil when
	// no milestone filters on them).
	Properties map[string]any
}

// Milestone is one milestone's state.
type Milestone struct {
	ID        string    `json:"id"`
	Reached   bool      `json:"reached"`
	ReachedAt time.Time `json:"reached_at,omitzero"`
	// Progress toward Required: matching events, distinct users, or the
	// most distinct days any window held (each capped at Required). It
	// depends on the events alone, not on when it is computed.
	Progress int       `json:"progress"`
	Required int       `json:"required"`
	TargetAt time.Time `json:"target_at"`
	// LastProgressAt is the time of the latest event that counted toward
	// the threshold, up to the one that reached it: a matching event, a
	// new user's first, a new UTC day's first. (An event by a user or on a
	// day already counted adds nothing; it is not progress, and the
	// evaluator needn't read it.)
	LastProgressAt time.Time `json:"last_progress_at,omitzero"`
}

// State is an account's onboarding state at a time.
type State struct {
	JourneyID      string      `json:"journey_id"`
	JourneyVersion int64       `json:"journey_version"`
	Start          time.Time   `json:"start"`
	Milestones     []Milestone `json:"milestones"`
	Status         string      `json:"status"`
	// StatusSince is when, in event time, the status became true.
	StatusSince time.Time `json:"status_since"`
	// Cause is the milestone behind a late, at_risk or stalled status
	// (empty for a stall by inactivity).
	Cause string `json:"cause,omitempty"`
	// TimeToFirstValue is from the start to the first milestone reached,
	// zero until then.
	TimeToFirstValue time.Duration `json:"time_to_first_value,omitempty"`
	StickPointAt     time.Time     `json:"stick_point_at"`
	PastStickPoint   bool          `json:"past_stick_point"`
}

// Evaluate computes the state at now of an account that started at start,
// from its events (any order, duplicates allowed). settled, which may be
// nil, holds milestones known to be reached (from an earlier evaluation
// of the same journey version, with no event since that is older than
// their reached time): they are kept as they are and evs needs none of
// their events.
func Evaluate(j journey.Journey, version int64, start time.Time, evs []Event, now time.Time, settled map[string]Milestone) State {
	evs = Distinct(evs, now)
	st := State{JourneyID: j.ID, JourneyVersion: version, Start: start.UTC(), StickPointAt: start.Add(j.StickPoint).UTC()}
	for _, m := range j.Milestones {
		if s, ok := settled[m.ID]; ok && s.Reached {
			s.TargetAt = start.Add(m.Target).UTC()
			st.Milestones = append(st.Milestones, s)
			continue
		}
		st.Milestones = append(st.Milestones, milestone(m, start, evs))
	}
	if first := st.Milestones[0]; first.Reached {
		st.TimeToFirstValue = max(first.ReachedAt.Sub(start), 0)
	}
	return Restatus(j, st, now)
}

// Restatus is the state st (computed by Evaluate with the same journey)
// at a later now, with no new event: the milestones stay as they were,
// and the status and stick point follow the clock. The sweep uses it, so
// that time passing costs no read of the events.
func Restatus(j journey.Journey, st State, now time.Time) State {
	st.PastStickPoint = !now.Before(st.StickPointAt)
	st.Status, st.StatusSince, st.Cause = status(j, st, now)
	return st
}

// Equal reports whether two states say the same: each field equal, times
// as instants. Evaluations compare a new state with the stored one this
// way to store only what changed, without encoding either (encoding every
// state to compare it was about 3% of a backtest's CPU).
// TestEqualSeesEveryField fails when a field is added here and not below.
func (s State) Equal(o State) bool {
	return s.JourneyID == o.JourneyID && s.JourneyVersion == o.JourneyVersion && s.Start.Equal(o.Start) &&
		slices.EqualFunc(s.Milestones, o.Milestones, Milestone.Equal) &&
		s.Status == o.Status && s.StatusSince.Equal(o.StatusSince) && s.Cause == o.Cause &&
		s.TimeToFirstValue == o.TimeToFirstValue && s.StickPointAt.Equal(o.StickPointAt) && s.PastStickPoint == o.PastStickPoint
}

// Equal reports whether two milestone states say the same.
func (m Milestone) Equal(o Milestone) bool {
	return m.ID == o.ID && m.Reached == o.Reached && m.ReachedAt.Equal(o.ReachedAt) && m.Progress == o.Progress &&
		m.Required == o.Required && m.TargetAt.Equal(o.TargetAt) && m.LastProgressAt.Equal(o.LastProgressAt)
}

// Moved reports whether cur, Restatus of old, differs from it: Restatus
// sets only these fields. The sweep compares every account this way, with
// no encoding of either state.
func Moved(old, cur State) bool {
	return cur.Status != old.Status || !cur.StatusSince.Equal(old.StatusSince) || cur.Cause != old.Cause ||
		cur.PastStickPoint != old.PastStickPoint
}

// Distinct sorts events by time and keeps each messageId of an event
// name once (its earliest row), dropping those after now. (The writer
// stores a messageId once whatever its name; keying by name too lets the
// evaluator dedup each name's events on their own in ClickHouse.)
func Distinct(evs []Event, now time.Time) []Event {
	out := make([]Event, 0, len(evs))
	for _, e := range evs {
		if !e.At.After(now) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b Event) int {
		return cmp.Or(a.At.Compare(b.At), cmp.Compare(a.MessageID, b.MessageID), cmp.Compare(a.User, b.User))
	})
	type key struct{ name, id string }
	seen := make(map[key]bool, len(out))
	kept := out[:0]
	for _, e := range out {
		if k := (key{e.Name, e.MessageID}); !seen[k] {
			seen[k] = true
			kept = append(kept, e)
		}
	}
	return kept
}

// milestone walks the matching events in time order until the threshold
// holds.
func milestone(m journey.Milestone, start time.Time, evs []Event) Milestone {
	out := Milestone{ID: m.ID, Required: m.Threshold.N, TargetAt: start.Add(m.Target).UTC()}
	users := map[string]bool{}
	var days []int64 // distinct UTC days seen, ascending
	for _, e := range evs {
		if e.Name != m.Event || !specfile.Matches(m.Where, e.Properties) {
			continue
		}
		if out.Reached {
			break
		}
		switch m.Threshold.Kind {
		case journey.Count:
			out.Progress++
			out.Reached = out.Progress >= m.Threshold.N
		case journey.DistinctUsers:
			if e.User == "" || users[e.User] {
				continue
			}
			users[e.User] = true
			out.Progress = len(users)
			out.Reached = out.Progress >= m.Threshold.N
		case journey.DistinctDays:
			day := dayOf(e.At)
			if len(days) > 0 && days[len(days)-1] == day {
				continue
			}
			days = append(days, day)
			// The distinct days of the window that ends today.
			inWindow := 0
			for i := len(days) - 1; i >= 0 && day-days[i] < int64(m.Threshold.Window/journey.Day); i-- {
				inWindow++
			}
			out.Progress = max(out.Progress, inWindow)
			out.Reached = inWindow >= m.Threshold.N
		}
		out.LastProgressAt = e.At
		if out.Reached {
			out.ReachedAt = e.At.UTC()
		}
	}
	if out.Reached {
		out.Progress = m.Threshold.N
	}
	out.Progress = min(out.Progress, m.Threshold.N)
	return out
}

func dayOf(t time.Time) int64 { return t.Unix() / 86400 }

// status is the first status that holds at now (the milestones issue's
// table), when it became true, and the milestone behind it.
func status(j journey.Journey, st State, now time.Time) (string, time.Time, string) {
	lastReached := lastReachedOf(st)
	if !slices.ContainsFunc(st.Milestones, func(m Milestone) bool { return !m.Reached }) {
		return Completed, lastReached, ""
	}
	// Stalled: no milestone for stall_after, or one late past its grace;
	// since the earliest of those.
	var stalledAt time.Time
	cause := ""
	if at := lastReached.Add(j.StallAfter); !now.Before(at) {
		stalledAt = at
	}
	for i, m := range st.Milestones {
		if at := m.TargetAt.Add(j.Milestones[i].Grace); !m.Reached && now.After(at) && (stalledAt.IsZero() || at.Before(stalledAt)) {
			stalledAt, cause = at, m.ID
		}
	}
	if !stalledAt.IsZero() {
		return Stalled, stalledAt, cause
	}
	// Late: a target passed unmet, within its grace; since the earliest.
	var lateAt time.Time
	for _, m := range st.Milestones {
		if !m.Reached && now.After(m.TargetAt) && (lateAt.IsZero() || m.TargetAt.Before(lateAt)) {
			lateAt, cause = m.TargetAt, m.ID
		}
	}
	if !lateAt.IsZero() {
		return Late, lateAt, cause
	}
	// At risk: the next unmet target (the nearest) is under at_risk_before away.
	var next *Milestone
	for i := range st.Milestones {
		if m := &st.Milestones[i]; !m.Reached && (next == nil || m.TargetAt.Before(next.TargetAt)) {
			next = m
		}
	}
	if at := next.TargetAt.Add(-j.AtRiskBefore); now.After(at) {
		return AtRisk, at, next.ID
	}
	return OnTrack, lastReached, ""
}

// NextChange is the earliest time after t at which Restatus gives st
// another status (Moved), or zero if no time will: a state's status
// follows the clock only at a few instants, the targets, their graces,
// the stall and at-risk deadlines and the stick point. A sweep need not
// look at an account again before then. It is exact: at the time it
// returns, the status has changed.
func NextChange(j journey.Journey, st State, t time.Time) time.Time {
	lastReached := lastReachedOf(st)
	// status compares now with each instant as now >= c or now > c: the
	// answer can change at c or a nanosecond after.
	instants := []time.Time{st.StickPointAt, lastReached.Add(j.StallAfter)}
	for i, m := range st.Milestones {
		if !m.Reached {
			instants = append(instants, m.TargetAt, m.TargetAt.Add(j.Milestones[i].Grace), m.TargetAt.Add(-j.AtRiskBefore))
		}
	}
	slices.SortFunc(instants, time.Time.Compare)
	at := Restatus(j, st, t)
	for _, c := range instants {
		for _, u := range []time.Time{c, c.Add(time.Nanosecond)} {
			if u.After(t) && Moved(at, Restatus(j, st, u)) {
				return u
			}
		}
	}
	return time.Time{}
}

// lastReachedOf is when the account last made a milestone: the latest
// reached time, or its start before any.
func lastReachedOf(st State) time.Time {
	last := st.Start
	for _, m := range st.Milestones {
		if m.Reached {
			last = maxTime(last, m.ReachedAt)
		}
	}
	return last
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
