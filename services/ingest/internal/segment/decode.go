// Package segment decodes Segment-spec HTTP API calls (track, identify,
// group, page, screen, alias, batch) into normalised events. It is pure: the
// caller gives it the body and the time the request was received.
package segment

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/stickpoint/stickpoint/pkg/events"
)

// Limits bound what one request may hold. The defaults are Segment's.
type Limits struct {
	MaxEventBytes  int `json:"max_event_bytes"`
	MaxBatchEvents int `json:"max_batch_events"`
	// MaxDepth bounds the nesting of objects and arrays.
	MaxDepth int `json:"max_depth"`
	// FutureSkew is how far past the receive time a timestamp may be.
	FutureSkew time.Duration `json:"future_skew"`
	// PastLimit is how far before the receive time a timestamp may be
	// (historical imports are fine, up to this floor).
	PastLimit time.Duration `json:"past_limit"`
}

// DefaultLimits are 32 KB per event, 2,500 events per batch, depth 32,
// 24 h of future skew and 10 years of history.
func DefaultLimits() Limits {
	return Limits{MaxEventBytes: 32 << 10, MaxBatchEvents: 2500, MaxDepth: 32,
		FutureSkew: 24 * time.Hour, PastLimit: 10 * 365 * 24 * time.Hour}
}

// Validate reports the first invalid field by name.
func (l Limits) Validate() error {
	switch {
	case l.MaxEventBytes < 1024:
		return fmt.Errorf("limits.max_event_bytes: %d is below 1024", l.MaxEventBytes)
	case l.MaxBatchEvents < 1:
		return fmt.Errorf("limits.max_batch_events: %d is below 1", l.MaxBatchEvents)
	case l.MaxDepth < 2:
		return fmt.Errorf("limits.max_depth: %d is below 2", l.MaxDepth)
	case l.FutureSkew < 0:
		return fmt.Errorf("limits.future_skew: negative")
	case l.PastLimit <= 0:
		return fmt.Errorf("limits.past_limit: must be positive")
	}
	return nil
}

// Error is a rejected request: the HTTP status, the field or limit at fault
// and a message that says what to change.
type Error struct {
	Status int    `json:"-"`
	Code   string `json:"code"`
	Field  string `json:"field,omitempty"`
	Msg    string `json:"message"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Msg
	}
	return e.Msg
}

func bad(field, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "invalid_request", Field: field, Msg: fmt.Sprintf(format, args...)}
}

func tooBig(field, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "limit_exceeded", Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Request is a decoded call or batch.
type Request struct {
	Events []events.Event
	// WriteKey is the writeKey found in the body, if any (browser SDKs
	// send it there instead of in an Authorization header).
	WriteKey string
}

// Decode reads the body of a call to /v1/<kind>: "batch" or an event type.
// The events it returns lack TenantID and SourceID, which come from the
// write key.
func Decode(kind string, body []byte, receivedAt time.Time, lim Limits) (*Request, error) {
	if err := validateJSON(body, lim.MaxDepth); err != nil {
		return nil, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, bad("", "the body must be a JSON object")
	}
	req := &Request{}
	var err error
	if req.WriteKey, err = optString(top, "writeKey", "writeKey"); err != nil {
		return nil, err
	}
	receivedAt = receivedAt.UTC()
	if kind != "batch" {
		ev, err := decodeCall(top, kind, "", nil, nil, receivedAt, lim, body)
		if err != nil {
			return nil, err
		}
		req.Events = []events.Event{ev}
		return req, nil
	}

	rawBatch, ok := top["batch"]
	if !ok {
		return nil, bad("batch", "required: a batch request carries its events in a \"batch\" array")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(rawBatch, &items); err != nil {
		return nil, bad("batch", "must be an array of calls")
	}
	if len(items) == 0 {
		return nil, bad("batch", "is empty")
	}
	if len(items) > lim.MaxBatchEvents {
		return nil, tooBig("batch", "holds %d events, over the limit of %d events per batch", len(items), lim.MaxBatchEvents)
	}
	batchSentAt, err := optTime(top, "sentAt", "sentAt")
	if err != nil {
		return nil, err
	}
	var batchContext map[string]json.RawMessage
	if raw, ok := top["context"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &batchContext); err != nil {
			return nil, bad("context", "must be an object")
		}
	}
	req.Events = make([]events.Event, 0, len(items))
	for i, item := range items {
		field := fmt.Sprintf("batch[%d]", i)
		var call map[string]json.RawMessage
		if err := json.Unmarshal(item, &call); err != nil {
			return nil, bad(field, "must be an object")
		}
		typ, err := optString(call, "type", field+".type")
		if err != nil {
			return nil, err
		}
		if typ == "" {
			return nil, bad(field+".type", "required in a batch: one of %s", strings.Join(events.Types, ", "))
		}
		ev, err := decodeCall(call, typ, field+".", batchSentAt, batchContext, receivedAt, lim, item)
		if err != nil {
			return nil, err
		}
		req.Events = append(req.Events, ev)
	}
	return req, nil
}

// validateJSON checks the whole body before anything reads it: valid JSON,
// valid UTF-8, no duplicate object keys (which decoders resolve
// differently, so they could smuggle a second value past validation), and
// nesting no deeper than maxDepth.
func validateJSON(body []byte, maxDepth int) error {
	dec := jsontext.NewDecoder(bytes.NewReader(body))
	for {
		_, err := dec.ReadToken()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			msg := err.Error()
			var se *jsontext.SyntacticError
			if errors.As(err, &se) {
				msg = strings.TrimPrefix(se.Error(), "jsontext: ")
			}
			return bad("", "malformed JSON: %s", msg)
		}
		if dec.StackDepth() > maxDepth {
			return tooBig(string(dec.StackPointer()), "nested deeper than the limit of %d levels", maxDepth)
		}
	}
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

func decodeCall(call map[string]json.RawMessage, typ, field string, batchSentAt *time.Time,
	batchContext map[string]json.RawMessage, receivedAt time.Time, lim Limits, raw []byte,
) (events.Event, error) {
	ev := events.Event{Type: typ, ReceivedAt: receivedAt}
	if len(raw) > lim.MaxEventBytes {
		return ev, tooBig(strings.TrimSuffix(field, "."), "event is %d bytes, over the limit of %d bytes per event", len(raw), lim.MaxEventBytes)
	}
	known := false
	for _, t := range events.Types {
		known = known || t == typ
	}
	if !known {
		return ev, bad(field+"type", "unknown type %q: want one of %s", typ, strings.Join(events.Types, ", "))
	}
	var err error
	if ev.MessageID, err = optString(call, "messageId", field+"messageId"); err != nil {
		return ev, err
	}
	if len(ev.MessageID) > 256 {
		return ev, tooBig(field+"messageId", "is %d bytes, over the limit of 256", len(ev.MessageID))
	}
	if ev.UserID, err = optID(call, "userId", field+"userId"); err != nil {
		return ev, err
	}
	if ev.AnonymousID, err = optID(call, "anonymousId", field+"anonymousId"); err != nil {
		return ev, err
	}
	if ev.UserID == "" && ev.AnonymousID == "" {
		return ev, bad(field+"userId", "every call needs a userId or an anonymousId")
	}

	switch typ {
	case events.TypeTrack:
		if ev.Name, err = optString(call, "event", field+"event"); err != nil {
			return ev, err
		}
		if ev.Name == "" {
			return ev, bad(field+"event", "required: the name of the tracked event")
		}
	case events.TypePage, events.TypeScreen:
		if ev.Name, err = optString(call, "name", field+"name"); err != nil {
			return ev, err
		}
	case events.TypeGroup:
		if ev.AccountID, err = optID(call, "groupId", field+"groupId"); err != nil {
			return ev, err
		}
		if ev.AccountID == "" {
			return ev, bad(field+"groupId", "required: the account (group) id")
		}
	case events.TypeAlias:
		if ev.PreviousID, err = optID(call, "previousId", field+"previousId"); err != nil {
			return ev, err
		}
		if ev.PreviousID == "" || ev.UserID == "" {
			return ev, bad(field+"previousId", "an alias call needs previousId and userId")
		}
	}

	if ev.Properties, err = optObject(call, "properties", field+"properties"); err != nil {
		return ev, err
	}
	if ev.Traits, err = optObject(call, "traits", field+"traits"); err != nil {
		return ev, err
	}
	ctx, err := mergeContext(call, batchContext, field)
	if err != nil {
		return ev, err
	}
	ev.Context = ctx
	if ev.AccountID == "" && len(ctx) > 0 {
		var c struct {
			GroupID json.RawMessage `json:"groupId"`
		}
		if json.Unmarshal(ctx, &c) == nil && len(c.GroupID) > 0 {
			if ev.AccountID, err = idText(c.GroupID, field+"context.groupId"); err != nil {
				return ev, err
			}
		}
	}

	if err := setTimes(&ev, call, field, batchSentAt, lim); err != nil {
		return ev, err
	}
	if ev.MessageID == "" {
		// No messageId: derive one from the call's bytes, so a client's
		// retry of the same call is still stored once.
		sum := sha256.Sum256(raw)
		ev.MessageID = "api-" + hex.EncodeToString(sum[:16])
	}
	return ev, nil
}

// setTimes applies skew correction and the timestamp bounds:
// timestamp = receivedAt - (sentAt - eventTime) when sentAt is known.
//
// The event time is "timestamp" when present: SDKs set it at the call, and
// a caller sets it to back-date an event. "originalTimestamp" is only a
// fallback: Segment's own server adds it, and RudderStack's SDK always sends
// it as the call time even when the caller back-dated "timestamp".
func setTimes(ev *events.Event, call map[string]json.RawMessage, field string, batchSentAt *time.Time, lim Limits) error {
	orig, err := optTime(call, "timestamp", field+"timestamp")
	if err != nil {
		return err
	}
	origField := field + "timestamp"
	if orig == nil {
		if orig, err = optTime(call, "originalTimestamp", field+"originalTimestamp"); err != nil {
			return err
		}
		origField = field + "originalTimestamp"
	}
	sentAt, err := optTime(call, "sentAt", field+"sentAt")
	if err != nil {
		return err
	}
	if sentAt == nil {
		sentAt = batchSentAt
	}
	ev.Timestamp = ev.ReceivedAt
	if orig != nil {
		ev.OriginalTimestamp = *orig
		ev.Timestamp = *orig
		if sentAt != nil {
			ev.SentAt = *sentAt
			if sentAt.Before(*orig) {
				return bad(field+"sentAt", "%s is before the event's own timestamp %s: the client clock or payload is wrong",
					sentAt.Format(time.RFC3339Nano), orig.Format(time.RFC3339Nano))
			}
			ev.Timestamp = ev.ReceivedAt.Add(-sentAt.Sub(*orig))
		}
	}
	if ev.Timestamp.After(ev.ReceivedAt.Add(lim.FutureSkew)) {
		return bad(origField, "%s is more than %s in the future", ev.Timestamp.Format(time.RFC3339), lim.FutureSkew)
	}
	if ev.Timestamp.Before(ev.ReceivedAt.Add(-lim.PastLimit)) {
		return bad(origField, "%s is older than the history limit of %s", ev.Timestamp.Format(time.RFC3339), lim.PastLimit)
	}
	return nil
}

func mergeContext(call map[string]json.RawMessage, batch map[string]json.RawMessage, field string) (json.RawMessage, error) {
	raw, ok := call["context"]
	if (!ok || isNull(raw)) && len(batch) == 0 {
		return nil, nil
	}
	merged := map[string]json.RawMessage{}
	for k, v := range batch {
		merged[k] = v
	}
	if ok && !isNull(raw) {
		var own map[string]json.RawMessage
		if err := json.Unmarshal(raw, &own); err != nil {
			return nil, bad(field+"context", "must be an object")
		}
		for k, v := range own { // the event's own context wins over the batch's
			merged[k] = v
		}
	}
	if len(merged) == 0 {
		return nil, nil
	}
	return json.Marshal(merged)
}

func optString(m map[string]json.RawMessage, key, field string) (string, error) {
	raw, ok := m[key]
	if !ok || isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", bad(field, "must be a string")
	}
	return s, nil
}

// optID reads an id that SDKs send as a string or, sometimes, a number.
func optID(m map[string]json.RawMessage, key, field string) (string, error) {
	raw, ok := m[key]
	if !ok || isNull(raw) {
		return "", nil
	}
	return idText(raw, field)
}

func idText(raw json.RawMessage, field string) (string, error) {
	raw = bytes.TrimSpace(raw)
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if len(s) > 256 {
			return "", tooBig(field, "is %d bytes, over the limit of 256", len(s))
		}
		return s, nil
	}
	var n json.Number
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&n); err == nil {
		return n.String(), nil // exact digits, whatever their size
	}
	return "", bad(field, "must be a string or a number")
}

func optObject(m map[string]json.RawMessage, key, field string) (json.RawMessage, error) {
	raw, ok := m[key]
	if !ok || isNull(raw) {
		return nil, nil
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, bad(field, "must be an object")
	}
	return raw, nil
}

func optTime(m map[string]json.RawMessage, key, field string) (*time.Time, error) {
	s, err := optString(m, key, field)
	if err != nil {
		return nil, err
	}
	if s == "" {
		return nil, nil
	}
	t, err := ParseTime(s)
	if err != nil {
		return nil, bad(field, "cannot read %q as an ISO-8601 time such as 2026-11-22T10:30:00.000Z", s)
	}
	return &t, nil
}

// ParseTime reads the ISO-8601 forms SDKs send.
func ParseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999Z0700", "2006-01-02T15:04:05.999999999", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, errors.New("unparseable time")
}
