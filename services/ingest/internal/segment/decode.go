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
	"slices"
	"strconv"
	"strings"
	"sync"
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
	// Rejected are the calls of a batch refused one by one: one bad call
	// must not cost the good ones (SDKs drop a batch that gets a 400).
	Rejected []Rejected
	// WriteKey is the writeKey found in the body, if any (browser SDKs
	// send it there instead of in an Authorization header).
	WriteKey string
}

// Rejected is a refused call of a batch: its index, why (Field names the
// call, as batch[3].timestamp), and the call as sent (it aliases the body).
type Rejected struct {
	Index int
	Err   *Error
	Call  []byte
}

// Decode reads the body of a call to /v1/<kind>: "batch" or an event type.
// The events it returns lack TenantID and SourceID, which come from the
// write key. Their Properties, Traits and Context alias body.
//
// An error refuses the whole request: a body that is not strict JSON, not
// an object, or breaks a request-wide limit, or a single call that is
// invalid. A batch whose body parses yields its valid calls in Events and
// the invalid ones in Rejected.
func Decode(kind string, body []byte, receivedAt time.Time, lim Limits) (*Request, error) {
	if err := validateJSON(body, lim.MaxDepth); err != nil {
		return nil, err
	}
	// body is valid JSON from here on: the walk below only has to check
	// shapes, and slices every value out of body instead of copying it.
	w := newWalker(body)
	defer w.release()
	top, items, hasBatch, err := w.top(kind == "batch")
	if err != nil {
		return nil, err
	}
	req := &Request{}
	if req.WriteKey, err = optString(top, "", "writeKey"); err != nil {
		return nil, err
	}
	receivedAt = receivedAt.UTC()
	if kind != "batch" {
		ev, err := w.decodeCall(top, body, kind, "", nil, nil, receivedAt, lim)
		if err != nil {
			return nil, err
		}
		req.Events = []events.Event{ev}
		return req, nil
	}

	if !hasBatch {
		return nil, bad("batch", "required: a batch request carries its events in a \"batch\" array")
	}
	if len(items) == 0 {
		return nil, bad("batch", "is empty")
	}
	if len(items) > lim.MaxBatchEvents {
		return nil, tooBig("batch", "holds %d events, over the limit of %d events per batch", len(items), lim.MaxBatchEvents)
	}
	batchSentAt, err := optTime(top, "", "sentAt")
	if err != nil {
		return nil, err
	}
	var batchContext object
	if raw, ok := top.get("context"); ok && !isNull(raw) {
		if batchContext, err = w.object(raw); err != nil {
			return nil, bad("context", "must be an object")
		}
	}
	req.Events = make([]events.Event, 0, len(items))
	for i, item := range items {
		ev, err := w.decodeBatchCall(i, item, batchSentAt, batchContext, receivedAt, lim)
		if err != nil {
			var se *Error
			if !errors.As(err, &se) {
				se = bad("batch["+strconv.Itoa(i)+"]", "%v", err)
			}
			req.Rejected = append(req.Rejected, Rejected{Index: i, Err: se, Call: item.raw})
			continue
		}
		req.Events = append(req.Events, ev)
	}
	return req, nil
}

func (w *walker) decodeBatchCall(i int, item call, batchSentAt *time.Time, batchContext object, receivedAt time.Time, lim Limits) (events.Event, error) {
	field := "batch[" + strconv.Itoa(i) + "]"
	if item.members == nil {
		return events.Event{}, bad(field, "must be an object")
	}
	typ, err := optString(item.members, field+".", "type")
	if err != nil {
		return events.Event{}, err
	}
	if typ == "" {
		return events.Event{}, bad(field+".type", "required in a batch: one of %s", strings.Join(events.Types, ", "))
	}
	return w.decodeCall(item.members, item.raw, typ, field+".", batchSentAt, batchContext, receivedAt, lim)
}

// validateJSON checks the whole body before anything reads it: valid JSON,
// valid UTF-8, no duplicate object keys (which decoders resolve
// differently, so they could smuggle a second value past validation), and
// nesting no deeper than maxDepth.
func validateJSON(body []byte, maxDepth int) error {
	v := validators.Get().(*validator)
	defer func() { v.dec.Reset(empty); validators.Put(v) }()
	v.src.Reset(body)
	v.dec.Reset(&v.src)
	dec := v.dec
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

func isNull(raw []byte) bool { return string(raw) == "null" }

// member is one name and raw value of a JSON object.
type member struct {
	name string
	raw  []byte
}

// object is a JSON object's members in order. Calls have about ten, so a
// scan beats a map.
type object []member

func (o object) get(name string) ([]byte, bool) {
	for _, m := range o {
		if m.name == name {
			return m.raw, true
		}
	}
	return nil, false
}

// call is one call of a batch: its members and its whole raw text. A
// value that is not an object has nil members.
type call struct {
	members object
	raw     []byte
}

// walker reads the shape of a body that validateJSON accepted, in one pass
// that slices values out of the body. One decoder is reused for the small
// objects read later (contexts).
type walker struct {
	body        []byte
	src, subSrc bytes.Reader
	dec, sub    *jsontext.Decoder
}

// Decoders are pooled: a single-event request costs little more than
// making its decoders, and each holds buffers and name sets.
var (
	validators = sync.Pool{New: func() any { v := &validator{}; v.dec = jsontext.NewDecoder(&v.src); return v }}
	walkers    = sync.Pool{New: func() any {
		w := &walker{}
		w.dec = jsontext.NewDecoder(&w.src, walkOptions...)
		w.sub = jsontext.NewDecoder(&w.subSrc, walkOptions...)
		return w
	}}
	empty = bytes.NewReader(nil)
	// walkOptions skip the checks validateJSON made already.
	walkOptions = []jsontext.Options{jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)}
)

type validator struct {
	src bytes.Reader
	dec *jsontext.Decoder
}

func newWalker(body []byte) *walker {
	w := walkers.Get().(*walker)
	w.body = body
	w.src.Reset(body)
	w.dec.Reset(&w.src, walkOptions...)
	return w
}

// release returns w to the pool; what it read stays valid (values are
// slices of the body, not of the decoder).
func (w *walker) release() {
	w.body = nil
	w.dec.Reset(empty, walkOptions...)
	w.sub.Reset(empty, walkOptions...)
	walkers.Put(w)
}

var errShape = errors.New("unexpected JSON shape")

// top reads the top-level object. With inBatch, it also reads the calls
// of its "batch" array, each with its members.
func (w *walker) top(inBatch bool) (object, []call, bool, error) {
	if w.dec.PeekKind() != '{' {
		return nil, nil, false, bad("", "the body must be a JSON object")
	}
	var (
		top      object
		calls    []call
		hasBatch bool
	)
	_, _ = w.dec.ReadToken()
	for w.dec.PeekKind() != '}' {
		name, err := readName(w.dec)
		if err != nil {
			return nil, nil, false, bad("", "malformed JSON: %v", err)
		}
		if inBatch && name == "batch" {
			hasBatch = true
			if calls, err = w.calls(); err != nil {
				return nil, nil, false, err
			}
			continue
		}
		raw, err := readValue(w.dec, w.body)
		if err != nil {
			return nil, nil, false, bad(name, "malformed JSON: %v", err)
		}
		top = append(top, member{name, raw})
	}
	_, _ = w.dec.ReadToken()
	if _, err := w.dec.ReadToken(); !errors.Is(err, io.EOF) {
		return nil, nil, false, bad("", "the body must be one JSON object, with nothing after it")
	}
	return top, calls, hasBatch, nil
}

// calls reads a batch array whose name was just read.
func (w *walker) calls() ([]call, error) {
	if w.dec.PeekKind() != '[' {
		return nil, bad("batch", "must be an array of calls")
	}
	_, _ = w.dec.ReadToken()
	var calls []call
	for i := 0; w.dec.PeekKind() != ']'; i++ {
		if w.dec.PeekKind() != '{' {
			raw, err := readValue(w.dec, w.body)
			if err != nil {
				return nil, bad("batch["+strconv.Itoa(i)+"]", "malformed JSON: %v", err)
			}
			calls = append(calls, call{raw: raw}) // refused on its own
			continue
		}
		_, _ = w.dec.ReadToken()
		start := int(w.dec.InputOffset()) - 1 // the '{' just read
		members, err := readMembers(w.dec, w.body, 12)
		if err != nil {
			return nil, bad("batch["+strconv.Itoa(i)+"]", "malformed JSON: %v", err)
		}
		_, _ = w.dec.ReadToken()
		calls = append(calls, call{members: members, raw: w.body[start:w.dec.InputOffset()]})
	}
	_, _ = w.dec.ReadToken()
	return calls, nil
}

// object reads raw, a value sliced from the body, as an object.
func (w *walker) object(raw []byte) (object, error) {
	if len(raw) == 0 || raw[0] != '{' {
		return nil, errShape
	}
	w.subSrc.Reset(raw)
	w.sub.Reset(&w.subSrc, walkOptions...)
	_, _ = w.sub.ReadToken()
	return readMembers(w.sub, raw, 0)
}

// readMembers reads an object's members up to its closing '}', which it
// leaves unread; the '{' was read already. dec reads src.
func readMembers(dec *jsontext.Decoder, src []byte, capacity int) (object, error) {
	o := make(object, 0, capacity)
	for dec.PeekKind() != '}' {
		name, err := readName(dec)
		if err != nil {
			return nil, err
		}
		v, err := readValue(dec, src)
		if err != nil {
			return nil, err
		}
		o = append(o, member{name, v})
	}
	return o, nil
}

// readName reads an object member's name. The names Segment defines come back
// as constants, so reading them allocates nothing.
func readName(dec *jsontext.Decoder) (string, error) {
	raw, err := dec.ReadValue()
	if err != nil {
		return "", err
	}
	if bytes.IndexByte(raw, '\\') >= 0 {
		return unquote(raw), nil
	}
	inner := raw[1 : len(raw)-1]
	for _, n := range knownNames {
		if string(inner) == n {
			return n, nil
		}
	}
	return string(inner), nil
}

var knownNames = []string{"type", "event", "messageId", "userId", "anonymousId", "timestamp", "originalTimestamp",
	"sentAt", "receivedAt", "properties", "traits", "context", "groupId", "previousId", "name", "integrations",
	"library", "writeKey", "batch", "channel", "version"}

// readValue reads the next value and returns it as a slice of src, the bytes
// dec reads, so it stays valid after the decoder moves on.
func readValue(dec *jsontext.Decoder, src []byte) ([]byte, error) {
	v, err := dec.ReadValue()
	if err != nil {
		return nil, err
	}
	end := int(dec.InputOffset())
	return src[end-len(v) : end : end], nil
}

func (w *walker) decodeCall(call object, raw []byte, typ, field string, batchSentAt *time.Time,
	batchContext object, receivedAt time.Time, lim Limits,
) (events.Event, error) {
	ev := events.Event{Type: typ, ReceivedAt: receivedAt}
	if len(raw) > lim.MaxEventBytes {
		return ev, tooBig(strings.TrimSuffix(field, "."), "event is %d bytes, over the limit of %d bytes per event", len(raw), lim.MaxEventBytes)
	}
	if !slices.Contains(events.Types, typ) {
		return ev, bad(field+"type", "unknown type %q: want one of %s", typ, strings.Join(events.Types, ", "))
	}
	var err error
	if ev.MessageID, err = optString(call, field, "messageId"); err != nil {
		return ev, err
	}
	if len(ev.MessageID) > 256 {
		return ev, tooBig(field+"messageId", "is %d bytes, over the limit of 256", len(ev.MessageID))
	}
	if ev.UserID, err = optID(call, field, "userId"); err != nil {
		return ev, err
	}
	if ev.AnonymousID, err = optID(call, field, "anonymousId"); err != nil {
		return ev, err
	}
	if ev.UserID == "" && ev.AnonymousID == "" {
		return ev, bad(field+"userId", "every call needs a userId or an anonymousId")
	}

	switch typ {
	case events.TypeTrack:
		if ev.Name, err = optString(call, field, "event"); err != nil {
			return ev, err
		}
		if ev.Name == "" {
			return ev, bad(field+"event", "required: the name of the tracked event")
		}
	case events.TypePage, events.TypeScreen:
		if ev.Name, err = optString(call, field, "name"); err != nil {
			return ev, err
		}
	case events.TypeGroup:
		if ev.AccountID, err = optID(call, field, "groupId"); err != nil {
			return ev, err
		}
		if ev.AccountID == "" {
			return ev, bad(field+"groupId", "required: the account (group) id")
		}
	case events.TypeAlias:
		if ev.PreviousID, err = optID(call, field, "previousId"); err != nil {
			return ev, err
		}
		if ev.PreviousID == "" || ev.UserID == "" {
			return ev, bad(field+"previousId", "an alias call needs previousId and userId")
		}
	}

	if ev.Properties, err = optObject(call, field, "properties"); err != nil {
		return ev, err
	}
	if ev.Traits, err = optObject(call, field, "traits"); err != nil {
		return ev, err
	}
	ctx, groupID, err := w.context(call, batchContext, field)
	if err != nil {
		return ev, err
	}
	ev.Context = ctx
	if ev.AccountID == "" && groupID != nil && !isNull(groupID) {
		if ev.AccountID, err = idText(groupID, field, "context.groupId"); err != nil {
			return ev, err
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
func setTimes(ev *events.Event, call object, field string, batchSentAt *time.Time, lim Limits) error {
	orig, err := optTime(call, field, "timestamp")
	if err != nil {
		return err
	}
	origKey := "timestamp"
	if orig == nil {
		if orig, err = optTime(call, field, "originalTimestamp"); err != nil {
			return err
		}
		origKey = "originalTimestamp"
	}
	sentAt, err := optTime(call, field, "sentAt")
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
		return bad(field+origKey, "%s is more than %s in the future", ev.Timestamp.Format(time.RFC3339), lim.FutureSkew)
	}
	if ev.Timestamp.Before(ev.ReceivedAt.Add(-lim.PastLimit)) {
		return bad(field+origKey, "%s is older than the history limit of %s", ev.Timestamp.Format(time.RFC3339), lim.PastLimit)
	}
	return nil
}

// context is the call's context merged over the batch's (the call's own
// keys win), and its groupId. Without a batch context the call's own
// context is kept as sent.
func (w *walker) context(call, batch object, field string) (json.RawMessage, []byte, error) {
	raw, ok := call.get("context")
	hasOwn := ok && !isNull(raw)
	var own object
	if hasOwn {
		var err error
		if own, err = w.object(raw); err != nil {
			return nil, nil, bad(field+"context", "must be an object")
		}
	}
	if len(batch) == 0 {
		if !hasOwn || len(own) == 0 {
			return nil, nil, nil
		}
		groupID, _ := own.get("groupId")
		return raw, groupID, nil
	}
	merged := make(map[string]json.RawMessage, len(batch)+len(own))
	for _, m := range batch {
		merged[m.name] = m.raw
	}
	for _, m := range own {
		merged[m.name] = m.raw
	}
	out, err := json.Marshal(merged)
	if err != nil {
		return nil, nil, bad(field+"context", "cannot merge with the batch context: %v", err)
	}
	return out, merged["groupId"], nil
}

func optString(o object, prefix, key string) (string, error) {
	raw, ok := o.get(key)
	if !ok || isNull(raw) {
		return "", nil
	}
	if raw[0] != '"' {
		return "", bad(prefix+key, "must be a string")
	}
	return unquote(raw), nil
}

// unquote reads a JSON string that validateJSON accepted.
func unquote(raw []byte) string {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1])
	}
	s, _ := jsontext.AppendUnquote(nil, raw)
	return string(s)
}

// optID reads an id that SDKs send as a string or, sometimes, a number.
func optID(o object, prefix, key string) (string, error) {
	raw, ok := o.get(key)
	if !ok || isNull(raw) {
		return "", nil
	}
	return idText(raw, prefix, key)
}

func idText(raw []byte, prefix, key string) (string, error) {
	switch {
	case raw[0] == '"':
		s := unquote(raw)
		if len(s) > 256 {
			return "", tooBig(prefix+key, "is %d bytes, over the limit of 256", len(s))
		}
		return s, nil
	case raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9'):
		return string(raw), nil // exact digits, whatever their size
	}
	return "", bad(prefix+key, "must be a string or a number")
}

func optObject(o object, prefix, key string) (json.RawMessage, error) {
	raw, ok := o.get(key)
	if !ok || isNull(raw) {
		return nil, nil
	}
	if raw[0] != '{' {
		return nil, bad(prefix+key, "must be an object")
	}
	return raw, nil
}

func optTime(o object, prefix, key string) (*time.Time, error) {
	s, err := optString(o, prefix, key)
	if err != nil || s == "" {
		return nil, err
	}
	t, err := ParseTime(s)
	if err != nil {
		return nil, bad(prefix+key, "cannot read %q as an ISO-8601 time such as 2026-11-22T10:30:00.000Z", s)
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
