package scorer

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/stickpoint/stickpoint/pkg/signals"
	"github.com/stickpoint/stickpoint/pkg/specfile"
	signalsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/signals/v1"
	"github.com/stickpoint/stickpoint/services/health/internal/model"
	"github.com/stickpoint/stickpoint/services/health/internal/score"
)

// Signal kinds of health scoring.
const (
	KindHealthChanged         = "health_changed"
	KindHealthRed             = "health_red"
	KindCancelIntent          = "cancel_intent"
	KindCancelIntentCleared   = "cancel_intent_cleared"
	KindCancellationRequested = "cancellation_requested"
	KindChurnRecorded         = "churn_recorded"
)

// transitions compares a new state with the last one and returns its
// signals; it records on st the drop it signalled. Ids derive from the
// previous state's version (or the peak, or the event), so scoring again
// after a crash, before the new state was stored, finds the same ids.
func (s *Scorer) transitions(tenant, account string, m model.Model, old *Row, st *State, h score.Health, now time.Time) []*signalsv1.Signal {
	var out []*signalsv1.Signal
	identity := "first"
	if old != nil {
		identity = fmt.Sprint(old.Version)
	}
	// before is the last score, recomputed from its inputs only when a
	// health signal needs its components.
	before := func() score.Health {
		if old == nil {
			return score.Health{}
		}
		return old.Health(m)
	}
	// A first score is not a change: a new account starts red until it
	// uses the product (onboarding signals speak for it), and an import
	// of history would otherwise signal every red account at once.
	bandChanged := old != nil && old.Band != h.Band
	switch {
	case bandChanged:
		kind, sev := KindHealthChanged, signalsv1.Severity_SEVERITY_LOW
		if h.Band == model.Red {
			kind, sev = KindHealthRed, signalsv1.Severity_SEVERITY_MEDIUM
		}
		summary := fmt.Sprintf("%s health went from %s (%d) to %s (%d)", account, old.Band, old.Score, h.Band, h.Score)
		if why := h.Summary()[1:]; len(why) > 0 {
			summary += ": " + strings.Join(why, "; ")
		}
		out = append(out, healthSignal(tenant, account, kind, identity+"/"+h.Band, sev, summary, before(), h, 0, now))
		st.DropFrom = highest(st.Peaks).Day
	default:
		peak := highest(st.Peaks)
		if old != nil && peak.Score-h.Score >= m.Health.ChangedDrop && !peak.Day.Equal(st.DropFrom) {
			summary := fmt.Sprintf("%s health dropped %d points within %s, to %d (%s)", account, peak.Score-h.Score,
				specfile.FormatDuration(m.Health.ChangedWithin), h.Score, h.Band)
			out = append(out, healthSignal(tenant, account, KindHealthChanged, "drop/"+peak.Day.Format(time.DateOnly), signalsv1.Severity_SEVERITY_LOW, summary, before(), h, peak.Score, now))
			st.DropFrom = peak.Day
		}
	}
	wasOver := old != nil && old.State.IntentOver
	switch {
	case h.Intent.Over() && !wasOver:
		out = append(out, intentSignal(tenant, account, KindCancelIntent, identity, signalsv1.Severity_SEVERITY_HIGH, h.Intent, nil, intentAt(h.Intent, now), now))
	case !h.Intent.Over() && wasOver:
		out = append(out, intentSignal(tenant, account, KindCancelIntentCleared, identity, signalsv1.Severity_SEVERITY_INFO, h.Intent, nil, now, now))
	}
	return out
}

// intentAt is when cancel intent became true in event time: its latest
// event, or now for a computed signal alone.
func intentAt(i score.Intent, now time.Time) time.Time {
	var at time.Time
	for _, s := range i.Signals {
		for _, h := range s.Hits {
			if h.At.After(at) {
				at = h.At
			}
		}
	}
	if at.IsZero() {
		return now
	}
	return at
}

func healthSignal(tenant, account, kind, identity string, sev signalsv1.Severity, summary string, before, after score.Health, peak int, now time.Time) *signalsv1.Signal {
	ev := &signalsv1.HealthEvidence{ScoreBefore: int32(before.Score), ScoreAfter: int32(after.Score), BandBefore: before.Band, BandAfter: after.Band,
		ComponentsBefore: Components(before.Components), ComponentsAfter: Components(after.Components), Peak: int32(peak)}
	return &signalsv1.Signal{Id: signals.ID(tenant, account, kind, identity), TenantId: tenant, AccountId: account, Kind: kind,
		OccurredAt: timestamppb.New(now), DetectedAt: timestamppb.New(now), Severity: sev, Summary: summary,
		Evidence: &signalsv1.Signal_Health{Health: ev}}
}

// Components is health components as protobuf.
func Components(cs []score.Component) []*signalsv1.HealthComponent {
	out := make([]*signalsv1.HealthComponent, len(cs))
	for i, c := range cs {
		out[i] = &signalsv1.HealthComponent{Name: c.Name, Weight: int32(c.Weight), Score: int32(c.Score), Present: c.Present, Inputs: c.Inputs}
	}
	return out
}

// IntentEvidence is cancel intent as protobuf.
func IntentEvidence(i score.Intent) *signalsv1.CancelIntentEvidence {
	ev := &signalsv1.CancelIntentEvidence{Score: i.Score, Threshold: i.Threshold}
	for _, s := range i.Signals {
		cs := &signalsv1.CancelIntentSignal{Id: s.ID, Name: s.Name, Contribution: s.Contribution, Share: s.Share, Detail: s.Detail, Words: s.Words()}
		for _, h := range s.Hits {
			cs.Hits = append(cs.Hits, hitProto(h))
		}
		ev.Signals = append(ev.Signals, cs)
	}
	return ev
}

func hitProto(h score.Hit) *signalsv1.CancelIntentHit {
	return &signalsv1.CancelIntentHit{At: timestamppb.New(h.At), UserId: h.User, MessageId: h.MessageID}
}

func intentSignal(tenant, account, kind, identity string, sev signalsv1.Severity, i score.Intent, request *score.Hit, at, now time.Time) *signalsv1.Signal {
	ev := IntentEvidence(i)
	var words []string
	for _, s := range i.Signals {
		words = append(words, s.Words())
	}
	summary := fmt.Sprintf("%s shows intent to cancel (score %.0f, threshold %.0f): %s", account, i.Score, i.Threshold, strings.Join(words, "; "))
	switch kind {
	case KindCancelIntentCleared:
		summary = fmt.Sprintf("%s cancel intent is below the threshold again (score %.0f of %.0f)", account, i.Score, i.Threshold)
	case KindCancellationRequested:
		ev.Request = hitProto(*request)
		summary = fmt.Sprintf("%s requested cancellation", account)
		if request.User != "" {
			summary += " (by " + request.User + ")"
		}
	}
	return &signalsv1.Signal{Id: signals.ID(tenant, account, kind, identity), TenantId: tenant, AccountId: account, Kind: kind,
		OccurredAt: timestamppb.New(at), DetectedAt: timestamppb.New(now), Severity: sev, Summary: summary,
		Evidence: &signalsv1.Signal_CancelIntent{CancelIntent: ev}}
}

func requestSignal(tenant, account string, i score.Intent, r score.Hit, now time.Time) *signalsv1.Signal {
	return intentSignal(tenant, account, KindCancellationRequested, r.MessageID, signalsv1.Severity_SEVERITY_HIGH, i, &r, r.At, now)
}

// ChurnEvidence is a churn as protobuf.
func ChurnEvidence(c *Churn) *signalsv1.ChurnEvidence {
	ev := &signalsv1.ChurnEvidence{ChurnedAt: timestamppb.New(c.At), Reason: c.Reason, Fit: c.Fit, Foreseen: c.Foreseen, FirstRiskKind: c.FirstRiskKind, Source: c.Source}
	if c.Foreseen {
		ev.FirstRiskAt = timestamppb.New(c.FirstRiskAt)
		ev.LeadTimeSeconds = int64(c.At.Sub(c.FirstRiskAt).Seconds())
	}
	return ev
}

func churnSignal(tenant, account string, c *Churn, now time.Time) *signalsv1.Signal {
	summary := fmt.Sprintf("%s churned (%s fit", account, c.Fit)
	if c.Reason != "" {
		summary += ", reason: " + c.Reason
	}
	if c.Foreseen {
		summary += fmt.Sprintf("); foreseen %s ahead by %s", specfile.FormatDuration(c.At.Sub(c.FirstRiskAt).Truncate(time.Minute)), c.FirstRiskKind)
	} else {
		summary += "); not foreseen"
	}
	return &signalsv1.Signal{Id: signals.ID(tenant, account, KindChurnRecorded, c.At.UTC().Format(time.RFC3339Nano)), TenantId: tenant, AccountId: account,
		Kind: KindChurnRecorded, OccurredAt: timestamppb.New(c.At), DetectedAt: timestamppb.New(now), Severity: signalsv1.Severity_SEVERITY_MEDIUM,
		Summary: summary, Evidence: &signalsv1.Signal_Churn{Churn: ChurnEvidence(c)}}
}
