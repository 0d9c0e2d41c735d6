package progress

import (
	"time"
)

// Signal kinds of onboarding, as published to SIGNALS.
const (
	KindMilestoneReached    = "milestone_reached"
	KindOnboardingAtRisk    = "onboarding_at_risk"
	KindOnboardingLate      = "onboarding_late"
	KindOnboardingStalled   = "onboarding_stalled"
	KindOnboardingCompleted = "onboarding_completed"
	KindOnboardingOnTrack   = "onboarding_on_track"
)

// Transition is a change between two states worth a signal.
type Transition struct {
	Kind string
	// Milestone is the milestone reached, or the one behind the status
	// (empty for a stall by inactivity or a status of the whole journey).
	Milestone string
	// At is when it became true, in event time.
	At time.Time
	// From is the status before, for a status change.
	From string
}

// Identity is what makes a transition itself, for its signal's dedup id:
// a recompute, a redelivery or a second replica finds the same identity
// for the same change, and a later, different change gets another.
func (t Transition) Identity() string {
	return t.Kind + "/" + t.Milestone + "/" + t.At.UTC().Format(time.RFC3339Nano)
}

// Transitions lists what changed from old to cur: each milestone newly
// reached, then a change of status. old is nil for an account not seen
// before: its first state signals every milestone reached and a status
// other than on_track. A state of another journey counts as none.
func Transitions(old *State, cur State) []Transition {
	if old != nil && old.JourneyID != cur.JourneyID {
		old = nil
	}
	reached := map[string]bool{}
	if old != nil {
		for _, m := range old.Milestones {
			reached[m.ID] = m.Reached
		}
	}
	var out []Transition
	for _, m := range cur.Milestones {
		if m.Reached && !reached[m.ID] {
			out = append(out, Transition{Kind: KindMilestoneReached, Milestone: m.ID, At: m.ReachedAt})
		}
	}
	from := OnTrack
	if old != nil {
		from = old.Status
	}
	if cur.Status != from {
		out = append(out, Transition{Kind: "onboarding_" + cur.Status, Milestone: cur.Cause, At: cur.StatusSince, From: from})
	}
	return out
}
