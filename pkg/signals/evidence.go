package signals

import (
	"fmt"
	"strings"
	"time"

	signalsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/signals/v1"
)

// Evidence says in a few lines what a signal is based on.
func Evidence(sig *signalsv1.Signal) []string {
	var out []string
	at := func(ts interface{ AsTime() time.Time }) string {
		return ts.AsTime().UTC().Format("2006-01-02 15:04 MST")
	}
	switch ev := sig.GetEvidence().(type) {
	case *signalsv1.Signal_Onboarding:
		o := ev.Onboarding
		if o.GetMilestoneId() != "" {
			name := o.GetMilestoneName()
			if name == "" {
				name = o.GetMilestoneId()
			}
			line := fmt.Sprintf("milestone %q of journey %s: %d of %d", name, o.GetJourneyId(), o.GetProgress(), o.GetRequired())
			if o.GetTargetAt() != nil {
				line += ", target " + at(o.GetTargetAt())
			}
			out = append(out, line)
		}
		if o.GetStatusAfter() != "" {
			out = append(out, fmt.Sprintf("onboarding %s → %s", orText(o.GetStatusBefore(), "new"), o.GetStatusAfter()))
		}
		if o.GetLastProgressAt() != nil {
			out = append(out, "last milestone progress "+at(o.GetLastProgressAt()))
		}
	case *signalsv1.Signal_Health:
		h := ev.Health
		out = append(out, fmt.Sprintf("health %d (%s) → %d (%s)", h.GetScoreBefore(), orText(h.GetBandBefore(), "-"), h.GetScoreAfter(), h.GetBandAfter()))
		for _, c := range h.GetComponentsAfter() {
			if c.GetPresent() && c.GetScore() < 60 {
				out = append(out, fmt.Sprintf("%s %d: %s", c.GetName(), c.GetScore(), c.GetInputs()))
			}
		}
	case *signalsv1.Signal_CancelIntent:
		ci := ev.CancelIntent
		if r := ci.GetRequest(); r != nil {
			out = append(out, fmt.Sprintf("cancellation requested %s by %s", at(r.GetAt()), orText(r.GetUserId(), "an anonymous user")))
		}
		if ci.GetThreshold() > 0 && (ci.GetRequest() == nil || ci.GetScore() > 0) {
			out = append(out, fmt.Sprintf("cancel-intent score %.2f (threshold %.2f)", ci.GetScore(), ci.GetThreshold()))
		}
		for _, s := range ci.GetSignals() {
			if s.GetWords() != "" {
				out = append(out, s.GetWords())
			}
		}
	case *signalsv1.Signal_Churn:
		c := ev.Churn
		line := fmt.Sprintf("churned %s", at(c.GetChurnedAt()))
		if c.GetReason() != "" {
			line += ": " + c.GetReason()
		}
		out = append(out, line)
		if c.GetForeseen() {
			out = append(out, fmt.Sprintf("foreseen by %s, %s before", c.GetFirstRiskKind(), time.Duration(c.GetLeadTimeSeconds())*time.Second))
		}
	}
	if len(out) == 0 && sig.GetSummary() != "" {
		out = append(out, sig.GetSummary())
	}
	if sig.GetOccurredAt() != nil {
		out = append(out, "occurred "+at(sig.GetOccurredAt()))
	}
	return out
}

func orText(s, def string) string {
	if strings.TrimSpace(s) == "" {
		return def
	}
	return s
}
