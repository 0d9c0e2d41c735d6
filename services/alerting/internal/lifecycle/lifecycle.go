// Package lifecycle is what happens to an alert: a signal opens, updates,
// reopens or (for a clearing signal) resolves it; a person acknowledges or
// resolves it; time escalates it. It is pure: each function takes the
// alert as stored, the input and the clock, and returns the alert to store
// and the notifications owed, so redelivery, restarts and tests all see
// the same decisions.
package lifecycle

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	alertsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/alerts/v1"
	signalsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/signals/v1"
	"github.com/stickpoint/stickpoint/services/alerting/internal/config"
)

// Changes: the step a change records.
const (
	Opened       = "opened"
	Updated      = "updated"
	Reopened     = "reopened"
	Acknowledged = "acknowledged"
	Resolved     = "resolved"
	AutoResolved = "auto_resolved"
	Escalated    = "escalated"
)

// Service is who the service's own steps are by.
const Service = "stickpoint"

// Bounds of what an alert keeps.
const (
	maxSteps      = 100
	maxDeliveries = 200
	maxSeen       = 64
)

// Record is an alert as stored, with what the service keeps beside it.
type Record struct {
	Alert *alertsv1.Alert
	// Tenant owns the alert.
	Tenant string
	// Seen are the ids of the latest signals applied, so a redelivered
	// signal changes nothing.
	Seen []string
	// Outbox holds the notifications a change owes, until they are handed
	// to delivery; Announce the change not yet published to watchers.
	Outbox   []Job
	Announce string
}

// Job is one notification owed: an alert's step, to one channel.
type Job struct {
	Tenant  string `json:"tenant"`
	AlertID string `json:"alert_id"`
	Channel string `json:"channel"`
	Trigger string `json:"trigger"`
	// DeliveryID is the same for every attempt, and for a re-sent job, so
	// receivers dedup on it (Stickpoint-Delivery-Id).
	DeliveryID string `json:"delivery_id"`
}

// recordJSON is a Record's stored form: the alert as protobuf.
type recordJSON struct {
	Alert    []byte   `json:"alert"`
	Tenant   string   `json:"tenant"`
	Seen     []string `json:"seen,omitempty"`
	Outbox   []Job    `json:"outbox,omitempty"`
	Announce string   `json:"announce,omitempty"`
}

// Marshal encodes a record for storage.
func (r *Record) Marshal() ([]byte, error) {
	a, err := proto.Marshal(r.Alert)
	if err != nil {
		return nil, err
	}
	return json.Marshal(recordJSON{Alert: a, Tenant: r.Tenant, Seen: r.Seen, Outbox: r.Outbox, Announce: r.Announce})
}

// Unmarshal decodes a stored record.
func Unmarshal(b []byte) (*Record, error) {
	var j recordJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("alert record: %w", err)
	}
	a := &alertsv1.Alert{}
	if err := proto.Unmarshal(j.Alert, a); err != nil {
		return nil, fmt.Errorf("alert record: %w", err)
	}
	return &Record{Alert: a, Tenant: j.Tenant, Seen: j.Seen, Outbox: j.Outbox, Announce: j.Announce}, nil
}

// Clone copies a record, so a function never changes its input.
func (r *Record) Clone() *Record {
	return &Record{Alert: proto.Clone(r.Alert).(*alertsv1.Alert), Tenant: r.Tenant, Seen: slices.Clone(r.Seen),
		Outbox: slices.Clone(r.Outbox), Announce: r.Announce}
}

// AlertID is the id of tenant's alert of kind about account: one per
// tenant, account and kind, reopened across episodes.
func AlertID(tenant, account, kind string) string {
	h := sha256.New()
	for _, part := range []string{tenant, account, kind} {
		fmt.Fprintf(h, "%d:%s", len(part), part)
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// DeliveryID is the id of one notification: the alert's episode, its
// step and the channel.
func DeliveryID(alertID string, episode int32, trigger, channel string) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s/%d/%s/%s", alertID, episode, trigger, channel))
	return "dlv_" + hex.EncodeToString(h[:12])
}

// Severity converts a configuration severity.
func Severity(s string) alertsv1.Severity {
	v, ok := alertsv1.Severity_value["SEVERITY_"+strings.ToUpper(s)]
	if !ok {
		return alertsv1.Severity_SEVERITY_UNSPECIFIED
	}
	return alertsv1.Severity(v)
}

// SeverityName is the configuration's name of a severity.
func SeverityName(s alertsv1.Severity) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "SEVERITY_"))
}

// StateName is a state's name for people: open, acknowledged, resolved.
func StateName(s alertsv1.State) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STATE_"))
}

// AccountOf decodes the account a signal carries, for rules and routing.
func AccountOf(sig *signalsv1.Signal) config.Account {
	acc := config.Account{Traits: map[string]any{}}
	if a := sig.GetAccount(); a != nil {
		_ = json.Unmarshal([]byte(a.GetTraitsJson()), &acc.Traits) // a malformed snapshot has no traits
		acc.Fit, acc.Band = a.GetFit(), a.GetBand()
	}
	return acc
}

// Owner is the account's owner: the text of its owner trait.
func Owner(acc config.Account, ownerTrait string) string {
	if s, ok := acc.Traits[ownerTrait].(string); ok {
		return s
	}
	return ""
}

// Link is the account's link, from the configuration's account_url or the
// service's default, with {account_id} replaced.
func Link(template, account string) string {
	if template == "" {
		return ""
	}
	return strings.ReplaceAll(template, "{account_id}", account)
}

// OnSignal applies a signal that a rule raises to the alert it concerns
// (rec nil when the tenant has none of that account and kind). It returns
// the record to store and its change, or nil when nothing changes: a
// redelivered signal, old evidence, or new evidence within the cooldown
// after a resolve.
func OnSignal(tenant string, rec *Record, sig *signalsv1.Signal, rule *config.Rule, cfg config.Config, linkTemplate string, now time.Time) (*Record, string) {
	if rec != nil && slices.Contains(rec.Seen, sig.GetId()) {
		return nil, ""
	}
	acc := AccountOf(sig)
	if rec == nil {
		a := &alertsv1.Alert{Id: AlertID(tenant, sig.GetAccountId(), sig.GetKind()), AccountId: sig.GetAccountId(), Kind: sig.GetKind()}
		rec = &Record{Alert: a, Tenant: tenant}
	} else {
		rec = rec.Clone()
	}
	a := rec.Alert
	rec.Seen = appendBounded(rec.Seen, sig.GetId(), maxSeen)
	if name := sig.GetAccount().GetName(); name != "" {
		a.AccountName = name
	}
	if owner := Owner(acc, cfg.OwnerTrait); owner != "" {
		a.Owner = owner
	}
	if link := Link(cfg.AccountURL, a.GetAccountId()); link != "" {
		a.Link = link
	} else {
		a.Link = Link(linkTemplate, a.GetAccountId())
	}
	change := ""
	switch {
	case a.GetEpisode() == 0: // new
		open(rec, sig, rule, 1, now)
		change = Opened
	case a.GetState() == alertsv1.State_STATE_RESOLVED:
		resolved := a.GetResolvedAt().AsTime()
		at := sig.GetOccurredAt().AsTime()
		if !at.After(resolved) || at.Before(resolved.Add(rule.Cooldown)) {
			return rec, "" // old evidence, or within the cooldown: remembered as seen, nothing else
		}
		open(rec, sig, rule, a.GetEpisode()+1, now)
		change = Reopened
	default:
		a.Count++
		a.Severity = Severity(rule.Severity)
		if !sig.GetOccurredAt().AsTime().Before(a.GetEvidence().GetOccurredAt().AsTime()) {
			a.Evidence, a.Summary = sig, sig.GetSummary()
		}
		step(rec, Updated, Service, "", sig.GetId(), now)
		change = Updated
	}
	a.UpdatedAt = timestamppb.New(now)
	a.Revision++
	rec.Announce = change
	return rec, change
}

// open starts an episode: open, count 1, and a notification per channel.
func open(rec *Record, sig *signalsv1.Signal, rule *config.Rule, episode int32, now time.Time) {
	a := rec.Alert
	trigger := Opened
	if episode > 1 {
		trigger = Reopened
	}
	a.Episode, a.State, a.Count, a.Escalated = episode, alertsv1.State_STATE_OPEN, 1, false
	a.Severity, a.Evidence, a.Summary = Severity(rule.Severity), sig, sig.GetSummary()
	a.OpenedAt, a.AcknowledgedAt, a.ResolvedAt = timestamppb.New(now), nil, nil
	step(rec, trigger, Service, sig.GetSummary(), sig.GetId(), now)
	notify(rec, trigger, rule.Channels)
}

func notify(rec *Record, trigger string, channels []string) {
	for _, ch := range channels {
		rec.Outbox = append(rec.Outbox, Job{Tenant: rec.Tenant, AlertID: rec.Alert.GetId(), Channel: ch, Trigger: trigger,
			DeliveryID: DeliveryID(rec.Alert.GetId(), rec.Alert.GetEpisode(), trigger, ch)})
	}
}

func step(rec *Record, action, by, note, signalID string, now time.Time) {
	s := &alertsv1.Step{Action: action, By: by, At: timestamppb.New(now), Note: note, SignalId: signalID}
	rec.Alert.Steps = appendBounded(rec.Alert.Steps, s, maxSteps)
}

func appendBounded[T any](list []T, v T, limit int) []T {
	list = append(list, v)
	if len(list) > limit {
		list = slices.Clone(list[len(list)-limit:])
	}
	return list
}

// Clears returns the alert kinds a signal shows are over: an onboarding
// status ends the alerts of the other statuses, a cleared cancel intent
// ends cancel_intent, and health leaving red ends health_red.
func Clears(sig *signalsv1.Signal) []string {
	onboarding := []string{"onboarding_at_risk", "onboarding_late", "onboarding_stalled"}
	switch k := sig.GetKind(); k {
	case "onboarding_on_track", "onboarding_completed", "onboarding_at_risk", "onboarding_late", "onboarding_stalled":
		return slices.DeleteFunc(slices.Clone(onboarding), func(o string) bool { return o == k })
	case "cancel_intent_cleared":
		return []string{"cancel_intent"}
	case "health_changed":
		if sig.GetHealth().GetBandAfter() != "red" {
			return []string{"health_red"}
		}
	}
	return nil
}

// AutoResolve resolves an alert whose condition a signal shows is over,
// or returns nil when it is already resolved, the signal was applied, or
// the signal is older than the alert's evidence (two replicas may apply
// signals out of order; a stale "back on track" must not end a newer
// stall).
func AutoResolve(rec *Record, sig *signalsv1.Signal, now time.Time) *Record {
	if rec.Alert.GetState() == alertsv1.State_STATE_RESOLVED || slices.Contains(rec.Seen, sig.GetId()) ||
		sig.GetOccurredAt().AsTime().Before(rec.Alert.GetEvidence().GetOccurredAt().AsTime()) {
		return nil
	}
	rec = rec.Clone()
	rec.Seen = appendBounded(rec.Seen, sig.GetId(), maxSeen)
	resolve(rec, AutoResolved, Service, sig.GetSummary(), sig.GetId(), now)
	return rec
}

func resolve(rec *Record, action, by, note, signalID string, now time.Time) {
	a := rec.Alert
	a.State, a.ResolvedAt, a.UpdatedAt = alertsv1.State_STATE_RESOLVED, timestamppb.New(now), timestamppb.New(now)
	a.Revision++
	step(rec, action, by, note, signalID, now)
	rec.Announce = action
}

// ErrState is a lifecycle step the alert's state doesn't allow.
type ErrState struct{ Msg string }

func (e ErrState) Error() string { return e.Msg }

// Acknowledge records that by is on it; escalation stops.
func Acknowledge(rec *Record, by, note string, now time.Time) (*Record, error) {
	switch rec.Alert.GetState() {
	case alertsv1.State_STATE_RESOLVED:
		return nil, ErrState{"alert " + rec.Alert.GetId() + " is resolved"}
	case alertsv1.State_STATE_ACKNOWLEDGED:
		return nil, ErrState{"alert " + rec.Alert.GetId() + " is already acknowledged"}
	}
	rec = rec.Clone()
	a := rec.Alert
	a.State, a.AcknowledgedAt, a.UpdatedAt = alertsv1.State_STATE_ACKNOWLEDGED, timestamppb.New(now), timestamppb.New(now)
	a.Revision++
	step(rec, Acknowledged, by, note, "", now)
	rec.Announce = Acknowledged
	return rec, nil
}

// Resolve closes the alert.
func Resolve(rec *Record, by, note string, now time.Time) (*Record, error) {
	if rec.Alert.GetState() == alertsv1.State_STATE_RESOLVED {
		return nil, ErrState{"alert " + rec.Alert.GetId() + " is already resolved"}
	}
	rec = rec.Clone()
	resolve(rec, Resolved, by, note, "", now)
	return rec, nil
}

// Escalate notifies the escalation's channels about an alert still open
// (not acknowledged) after esc.After, once per episode; nil when not due.
func Escalate(rec *Record, esc *config.Escalation, now time.Time) *Record {
	a := rec.Alert
	if esc == nil || a.GetState() != alertsv1.State_STATE_OPEN || a.GetEscalated() || now.Before(a.GetOpenedAt().AsTime().Add(esc.After)) {
		return nil
	}
	rec = rec.Clone()
	rec.Alert.Escalated, rec.Alert.UpdatedAt = true, timestamppb.New(now)
	rec.Alert.Revision++
	step(rec, Escalated, Service, fmt.Sprintf("not acknowledged within %s", esc.After), "", now)
	notify(rec, Escalated, esc.Channels)
	rec.Announce = Escalated
	return rec
}

// RecordDelivery adds an attempt to the alert's delivery log.
func RecordDelivery(rec *Record, d *alertsv1.Delivery) *Record {
	rec = rec.Clone()
	rec.Alert.Deliveries = appendBounded(rec.Alert.Deliveries, d, maxDeliveries)
	return rec
}
