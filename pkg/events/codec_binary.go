package events

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// A message body is binaryMagic, then each event's fields in a fixed
// order: nine strings (tenant, source, type, name, messageId, userId,
// anonymousId, account, previousId), four times (timestamp, original
// timestamp, sentAt, receivedAt) and three JSON values (properties, traits,
// context). A string or JSON value is its length as a uvarint, then its
// bytes; a time is its Unix seconds as a varint, then its nanoseconds as a
// uvarint (the zero time is year 1's seconds).
//
// Every event is encoded by ingest and decoded by the writer, and JSON cost
// them about 3.3 us an event both ways, a share of the writer's time that
// counted; this costs a fraction of it. The JSON values are copied as they
// are: the Segment decoder has checked them.
var binaryMagic = []byte{0, 'S', 'P', 'E', '1'} // JSON bodies start with '{'

// Encode writes a message body holding evs.
func Encode(evs []Event) ([]byte, error) {
	size := len(binaryMagic)
	for i := range evs {
		e := &evs[i]
		size += 4*20 + 16*2 + len(e.TenantID) + len(e.SourceID) + len(e.Type) + len(e.Name) + len(e.MessageID) + len(e.UserID) +
			len(e.AnonymousID) + len(e.AccountID) + len(e.PreviousID) + len(e.Properties) + len(e.Traits) + len(e.Context)
	}
	b := make([]byte, 0, size)
	b = append(b, binaryMagic...)
	for i := range evs {
		e := &evs[i]
		for _, s := range [...]string{e.TenantID, e.SourceID, e.Type, e.Name, e.MessageID, e.UserID, e.AnonymousID, e.AccountID, e.PreviousID} {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
		for _, t := range [...]time.Time{e.Timestamp, e.OriginalTimestamp, e.SentAt, e.ReceivedAt} {
			b = binary.AppendVarint(b, t.Unix())
			b = binary.AppendUvarint(b, uint64(t.Nanosecond()))
		}
		for _, v := range [...][]byte{e.Properties, e.Traits, e.Context} {
			b = binary.AppendUvarint(b, uint64(len(v)))
			b = append(b, v...)
		}
	}
	return b, nil
}

var errTruncated = errors.New("truncated")

// decodeBinary reads a body written by Encode. Its strings share one copy
// of b (one allocation, not one per field); its JSON values alias b.
func decodeBinary(b []byte) ([]Event, error) {
	text := string(b)
	pos := len(binaryMagic)
	next := func() (int, int, error) {
		n, w := binary.Uvarint(b[pos:])
		if w <= 0 || n > uint64(len(b)-pos-w) {
			return 0, 0, errTruncated
		}
		start := pos + w
		pos = start + int(n)
		return start, pos, nil
	}
	var out []Event
	for pos < len(b) {
		var e Event
		for _, f := range [...]*string{&e.TenantID, &e.SourceID, &e.Type, &e.Name, &e.MessageID, &e.UserID, &e.AnonymousID, &e.AccountID, &e.PreviousID} {
			start, end, err := next()
			if err != nil {
				return out, fmt.Errorf("decode event %d: %w", len(out), err)
			}
			*f = text[start:end]
		}
		for _, f := range [...]*time.Time{&e.Timestamp, &e.OriginalTimestamp, &e.SentAt, &e.ReceivedAt} {
			sec, w := binary.Varint(b[pos:])
			if w <= 0 {
				return out, fmt.Errorf("decode event %d: %w", len(out), errTruncated)
			}
			pos += w
			ns, w := binary.Uvarint(b[pos:])
			if w <= 0 || ns >= 1e9 {
				return out, fmt.Errorf("decode event %d: bad time", len(out))
			}
			pos += w
			if sec != zeroUnix || ns != 0 {
				*f = time.Unix(sec, int64(ns)).UTC()
			}
		}
		for _, f := range [...]*[]byte{(*[]byte)(&e.Properties), (*[]byte)(&e.Traits), (*[]byte)(&e.Context)} {
			start, end, err := next()
			if err != nil {
				return out, fmt.Errorf("decode event %d: %w", len(out), err)
			}
			if end > start {
				*f = b[start:end:end]
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// zeroUnix is the zero time's Unix seconds.
var zeroUnix = time.Time{}.Unix()
