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
	"encoding/binary"
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

// IsUsage reports whether an event type records use of the product (track,
// page, screen), as opposed to who a user or account is.
func IsUsage(typ string) bool { return typ == TypeTrack || typ == TypePage || typ == TypeScreen }

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
// and a hash of the sorted messageIds. A client retrying a request as it
// was sends the same messageIds, so JetStream drops the retry's messages
// within its duplicate window; the tenant in the id means one tenant's
// messageIds never suppress another's. (The writer's dedup index is what
// stores each messageId once beyond that: this only spares it the work.)
//
// Each messageId is hashed with its length before it, so no two lists
// encode alike: a messageId may contain any byte, so with a separator
// ["a", "b"] and ["a\x00b"] would collide, and the second request would
// be dropped as a duplicate of the first.
func DedupID(tenant, typ string, evs []Event) string {
	ids := make([]string, len(evs))
	for i := range evs {
		ids[i] = evs[i].MessageID
	}
	slices.Sort(ids)
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for _, id := range ids {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(id)))])
		h.Write([]byte(id))
	}
	return tenant + ":" + typ + ":" + hex.EncodeToString(h.Sum(nil)[:16])
}
