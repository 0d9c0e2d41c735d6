package events

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/go-json-experiment/json/jsontext"
)

// Messages were JSON, one object per event and line, with the json tags
// of Event as names; they are binary now (codec_binary.go), and Decode
// still reads JSON bodies that a stream may hold from an earlier version.

// encodeJSON writes a JSON message body: one JSON event per line. Only the
// tests use it now, to write what an earlier version wrote.
func encodeJSON(evs []Event) ([]byte, error) {
	w := encoder{b: make([]byte, 0, len(evs)*512)}
	for i := range evs {
		w.event(&evs[i])
		if w.err != nil {
			return nil, fmt.Errorf("encode event %s: %w", evs[i].MessageID, w.err)
		}
		w.b = append(w.b, '\n')
	}
	return w.b, nil
}

type encoder struct {
	b     []byte
	first bool
	err   error
}

func (w *encoder) event(e *Event) {
	w.b = append(w.b, '{')
	w.first = true
	w.str("tenant_id", e.TenantID, false)
	w.str("source_id", e.SourceID, false)
	w.str("type", e.Type, false)
	w.str("name", e.Name, true)
	w.str("message_id", e.MessageID, false)
	w.str("user_id", e.UserID, true)
	w.str("anonymous_id", e.AnonymousID, true)
	w.str("account_id", e.AccountID, true)
	w.str("previous_id", e.PreviousID, true)
	w.time("timestamp", e.Timestamp, false)
	w.time("original_timestamp", e.OriginalTimestamp, true)
	w.time("sent_at", e.SentAt, true)
	w.time("received_at", e.ReceivedAt, false)
	w.raw("properties", e.Properties)
	w.raw("traits", e.Traits)
	w.raw("context", e.Context)
	w.b = append(w.b, '}')
}

func (w *encoder) name(name string) {
	if !w.first {
		w.b = append(w.b, ',')
	}
	w.first = false
	w.b = append(w.b, '"')
	w.b = append(w.b, name...)
	w.b = append(w.b, '"', ':')
}

func (w *encoder) str(name, v string, omitEmpty bool) {
	if omitEmpty && v == "" {
		return
	}
	w.name(name)
	var err error
	if w.b, err = jsontext.AppendQuote(w.b, v); err != nil && w.err == nil {
		w.err = fmt.Errorf("%s: %w", name, err)
	}
}

func (w *encoder) time(name string, t time.Time, omitZero bool) {
	if omitZero && t.IsZero() {
		return
	}
	w.name(name)
	w.b = append(w.b, '"')
	w.b = t.AppendFormat(w.b, time.RFC3339Nano)
	w.b = append(w.b, '"')
}

// raw writes a JSON value as it is, after checking it is one: a broken
// value would make the whole message unreadable downstream.
func (w *encoder) raw(name string, v []byte) {
	if len(v) == 0 {
		return
	}
	if !jsontext.Value(v).IsValid() && w.err == nil {
		w.err = fmt.Errorf("%s: not a valid JSON value", name)
	}
	w.name(name)
	w.b = append(w.b, v...)
}

// Decode reads a message body written by Encode, or a JSON body of an
// earlier version. The events' Properties, Traits and Context alias b.
func Decode(b []byte) ([]Event, error) {
	if bytes.HasPrefix(b, binaryMagic) {
		return decodeBinary(b)
	}
	return decodeJSON(b)
}

// decodeJSON reads a JSON body. Names it does not know are skipped.
func decodeJSON(b []byte) ([]Event, error) {
	d := decoder{src: b, dec: jsontext.NewDecoder(bytes.NewBuffer(b))}
	var out []Event
	for {
		if d.dec.PeekKind() == 0 { // the end, or an error ReadToken reports
			if _, err := d.dec.ReadToken(); errors.Is(err, io.EOF) {
				return out, nil
			} else if err != nil {
				return out, fmt.Errorf("decode event %d: %w", len(out), err)
			}
		}
		var e Event
		if err := d.event(&e); err != nil {
			return out, fmt.Errorf("decode event %d: %w", len(out), err)
		}
		out = append(out, e)
	}
}

type decoder struct {
	src []byte
	dec *jsontext.Decoder
}

func (d *decoder) event(e *Event) error {
	if d.dec.PeekKind() != '{' {
		return fmt.Errorf("want an object, have %v", d.dec.PeekKind())
	}
	if _, err := d.dec.ReadToken(); err != nil {
		return err
	}
	for d.dec.PeekKind() != '}' {
		raw, err := d.dec.ReadValue()
		if err != nil {
			return err
		}
		name := unquoted(raw)
		var target *string
		var when *time.Time
		var value *[]byte
		switch string(name) {
		case "tenant_id":
			target = &e.TenantID
		case "source_id":
			target = &e.SourceID
		case "type":
			target = &e.Type
		case "name":
			target = &e.Name
		case "message_id":
			target = &e.MessageID
		case "user_id":
			target = &e.UserID
		case "anonymous_id":
			target = &e.AnonymousID
		case "account_id":
			target = &e.AccountID
		case "previous_id":
			target = &e.PreviousID
		case "timestamp":
			when = &e.Timestamp
		case "original_timestamp":
			when = &e.OriginalTimestamp
		case "sent_at":
			when = &e.SentAt
		case "received_at":
			when = &e.ReceivedAt
		case "properties":
			value = (*[]byte)(&e.Properties)
		case "traits":
			value = (*[]byte)(&e.Traits)
		case "context":
			value = (*[]byte)(&e.Context)
		default:
			if err := d.dec.SkipValue(); err != nil {
				return err
			}
			continue
		}
		v, err := d.dec.ReadValue()
		if err != nil {
			return err
		}
		switch {
		case string(v) == "null":
		case value != nil:
			end := int(d.dec.InputOffset())
			*value = d.src[end-len(v) : end : end]
		case v.Kind() != '"':
			return fmt.Errorf("%s: want a string, have %s", name, v.Kind())
		case target != nil:
			*target = string(unquoted(v))
		default:
			if *when, err = time.Parse(time.RFC3339Nano, string(unquoted(v))); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	_, err := d.dec.ReadToken()
	return err
}

// unquoted is the text of a JSON string the decoder has validated.
func unquoted(v []byte) []byte {
	if bytes.IndexByte(v, '\\') < 0 {
		return v[1 : len(v)-1]
	}
	s, _ := jsontext.AppendUnquote(nil, v)
	return s
}
