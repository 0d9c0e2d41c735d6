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
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/stickpoint/stickpoint/pkg/signals"
	alertsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/alerts/v1"
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
			Evidence: signals.Evidence(a.GetEvidence()), Signal: sig,
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

func or(s, def string) string {
	if strings.TrimSpace(s) == "" {
		return def
	}
	return s
}
