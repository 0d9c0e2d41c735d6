// Package events is the normalised usage event every Stickpoint service
// reads from the EVENTS stream, and its wire format.
//
// Ingest publishes one message per request and event type, holding that
// request's events of that type; downstream consumers decode it with
// Decode. Properties, traits and context stay raw JSON text, so numbers
// keep every digit (integers above 2^53 included).
package events

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"time"
)

// Types of Segment calls.
const (
	TypeTrack    = "track"
	TypePage     = "page"
	TypeScreen   = "screen"
	TypeIdentify = "identify"
	TypeGroup    = "group"
	TypeAlias    = "alias"
)

// Types lists every event type.
var Types = []string{TypeTrack, TypePage, TypeScreen, TypeIdentify, TypeGroup, TypeAlias}

// Event is one normalised call.
type Event struct {
	TenantID string `json:"tenant_id"`
	SourceID string `json:"source_id"`
	Type     string `json:"type"`
	// Name is the track event's name, or the page or screen name.
	Name        string `json:"name,omitempty"`
	MessageID   string `json:"message_id"`
	UserID      string `json:"user_id,omitempty"`
	AnonymousID string `json:"anonymous_id,omitempty"`
	// AccountID is the Segment group: the group call's groupId, or
	// context.groupId. Empty when unknown at ingest; the writer resolves it
	// from the user's last group call.
	AccountID string `json:"account_id,omitempty"`
	// PreviousID is an alias call's previous id.
	PreviousID string `json:"previous_id,omitempty"`

	// Timestamp is when it happened, corrected for client clock skew.
	Timestamp         time.Time `json:"timestamp"`
	OriginalTimestamp time.Time `json:"original_timestamp,omitzero"`
	SentAt            time.Time `json:"sent_at,omitzero"`
	ReceivedAt        time.Time `json:"received_at"`

	Properties json.RawMessage `json:"properties,omitempty"`
	Traits     json.RawMessage `json:"traits,omitempty"`
	Context    json.RawMessage `json:"context,omitempty"`
}

// Subject is the EVENTS subject of events of type typ for tenant.
func Subject(tenant, typ string) string { return "events." + tenant + "." + typ }

// DedupID is the Nats-Msg-Id of a message holding evs: the tenant, the type
// and a hash of the sorted messageIds. A client retrying a request sends
// the same messageIds, so the retry's messages carry the same ids and
// JetStream drops them; the tenant in the id means one tenant's messageIds
// never suppress another's.
func DedupID(tenant, typ string, evs []Event) string {
	ids := make([]string, len(evs))
	for i := range evs {
		ids[i] = evs[i].MessageID
	}
	slices.Sort(ids)
	h := sha256.New()
	for _, id := range ids {
		h.Write([]byte(id))
		h.Write([]byte{0})
	}
	return tenant + ":" + typ + ":" + hex.EncodeToString(h.Sum(nil)[:16])
}
