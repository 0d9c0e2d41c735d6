// Package delivery sends alert notifications to channels (signed webhooks,
// Slack incoming webhooks, e-mail) and runs the dispatcher that takes them
// from the DELIVERIES stream: per-channel timeouts, retries with
// exponential backoff and jitter honouring Retry-After, a dead letter after
// a bounded number of tries, and a delivery log on the alert.
package delivery

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	alertsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/alerts/v1"
	signalsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/signals/v1"
	"github.com/stickpoint/stickpoint/services/alerting/internal/lifecycle"
)

// Webhook headers.
const (
	HeaderSignature  = "Stickpoint-Signature"
	HeaderDeliveryID = "Stickpoint-Delivery-Id"
)

// Payload is the JSON body of a webhook notification.
type Payload struct {
	// DeliveryID is the same across retries (also Stickpoint-Delivery-Id).
	DeliveryID string `json:"delivery_id"`
	// Trigger is the alert's step notified: opened, reopened or escalated.
	Trigger string       `json:"trigger"`
	Alert   PayloadAlert `json:"alert"`
	SentAt  time.Time    `json:"sent_at"`
}

// PayloadAlert is the alert in a notification.
type PayloadAlert struct {
	ID       string         `json:"id"`
	Kind     string         `json:"kind"`
	Severity string         `json:"severity"`
	State    string         `json:"state"`
	Summary  string         `json:"summary"`
	Count    int32          `json:"count"`
	Episode  int32          `json:"episode"`
	Account  PayloadAccount `json:"account"`
	// Evidence is the latest signal behind the alert, in words; Signal is
	// the signal itself (stickpoint.signals.v1.Signal as protobuf JSON).
	Evidence  []string        `json:"evidence"`
	Signal    json.RawMessage `json:"signal"`
	OpenedAt  time.Time       `json:"opened_at"`
	UpdatedAt time.Time       `json:"updated_at"`
	Link      string          `json:"link,omitempty"`
}

// PayloadAccount is the alert's account.
type PayloadAccount struct {
	ID    string `json:"id"`
	Name  string `json:"name,omitempty"`
	Owner string `json:"owner,omitempty"`
}

// NewPayload is the notification of job about alert a.
func NewPayload(a *alertsv1.Alert, job lifecycle.Job, now time.Time) Payload {
	sig, _ := protojson.Marshal(a.GetEvidence())
	return Payload{
		DeliveryID: job.DeliveryID, Trigger: job.Trigger, SentAt: now.UTC(),
		Alert: PayloadAlert{
			ID: a.GetId(), Kind: a.GetKind(), Severity: lifecycle.SeverityName(a.GetSeverity()), State: lifecycle.StateName(a.GetState()),
			Summary: a.GetSummary(), Count: a.GetCount(), Episode: a.GetEpisode(),
			Account:  PayloadAccount{ID: a.GetAccountId(), Name: a.GetAccountName(), Owner: a.GetOwner()},
			Evidence: Evidence(a.GetEvidence()), Signal: sig,
			OpenedAt: a.GetOpenedAt().AsTime().UTC(), UpdatedAt: a.GetUpdatedAt().AsTime().UTC(), Link: a.GetLink(),
		},
	}
}

// Sign is the Stickpoint-Signature header of body sent at t: Stripe's
// scheme, t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

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
			out = append(out, fmt.Sprintf("onboarding %s → %s", or(o.GetStatusBefore(), "new"), o.GetStatusAfter()))
		}
		if o.GetLastProgressAt() != nil {
			out = append(out, "last milestone progress "+at(o.GetLastProgressAt()))
		}
	case *signalsv1.Signal_Health:
		h := ev.Health
		out = append(out, fmt.Sprintf("health %d (%s) → %d (%s)", h.GetScoreBefore(), or(h.GetBandBefore(), "-"), h.GetScoreAfter(), h.GetBandAfter()))
		for _, c := range h.GetComponentsAfter() {
			if c.GetPresent() && c.GetScore() < 60 {
				out = append(out, fmt.Sprintf("%s %d: %s", c.GetName(), c.GetScore(), c.GetInputs()))
			}
		}
	case *signalsv1.Signal_CancelIntent:
		ci := ev.CancelIntent
		if r := ci.GetRequest(); r != nil {
			out = append(out, fmt.Sprintf("cancellation requested %s by %s", at(r.GetAt()), or(r.GetUserId(), "an anonymous user")))
		}
		if ci.GetThreshold() > 0 {
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

func or(s, def string) string {
	if strings.TrimSpace(s) == "" {
		return def
	}
	return s
}
