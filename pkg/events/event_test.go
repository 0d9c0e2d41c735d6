package events_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/events"
)

func TestRoundTripKeepsNumbersExact(t *testing.T) {
	ts := time.Date(2026, 11, 22, 10, 0, 0, 123_000_000, time.UTC)
	in := []events.Event{{
		TenantID: "acme", SourceID: "src_1", Type: events.TypeTrack, Name: "Report Built",
		MessageID: "m1", UserID: "u1", AccountID: "a1", Timestamp: ts, ReceivedAt: ts,
		Properties: json.RawMessage(`{"big":9007199254740993,"html":"<b>&</b>"}`),
	}, {TenantID: "acme", Type: events.TypeIdentify, MessageID: "m2", UserID: "u1", Timestamp: ts, ReceivedAt: ts}}
	b, err := events.Encode(in)
	require.NoError(t, err)
	require.Contains(t, string(b), "9007199254740993")
	out, err := events.Decode(b)
	require.NoError(t, err)
	require.Len(t, out, 2)
	require.JSONEq(t, string(in[0].Properties), string(out[0].Properties))
	require.True(t, ts.Equal(out[0].Timestamp))
	require.Equal(t, in[1].MessageID, out[1].MessageID)
}

func TestDedupID(t *testing.T) {
	a := []events.Event{{MessageID: "1"}, {MessageID: "2"}}
	b := []events.Event{{MessageID: "2"}, {MessageID: "1"}}
	require.Equal(t, events.DedupID("acme", "track", a), events.DedupID("acme", "track", b), "order does not matter")
	require.NotEqual(t, events.DedupID("acme", "track", a), events.DedupID("globex", "track", a), "tenants never collide")
	require.NotEqual(t, events.DedupID("acme", "track", a), events.DedupID("acme", "track", a[:1]))
	// Length prefixes keep ["ab","c"] apart from ["a","bc"], and a
	// messageId holding the old separator byte apart from two ids.
	require.NotEqual(t,
		events.DedupID("t", "track", []events.Event{{MessageID: "ab"}, {MessageID: "c"}}),
		events.DedupID("t", "track", []events.Event{{MessageID: "a"}, {MessageID: "bc"}}))
	require.NotEqual(t,
		events.DedupID("t", "track", []events.Event{{MessageID: "a"}, {MessageID: "b"}}),
		events.DedupID("t", "track", []events.Event{{MessageID: "a\x00b"}}))
	require.NotEqual(t,
		events.DedupID("t", "track", []events.Event{{MessageID: ""}, {MessageID: "a"}}),
		events.DedupID("t", "track", []events.Event{{MessageID: "a"}}))
}

func fullEvent(i int) events.Event {
	ts := time.Date(2026, 11, 22, 10, 0, 0, 123_456_789, time.UTC)
	return events.Event{
		TenantID: "acme", SourceID: "src_1", Type: events.TypeTrack, Name: "Report \"Built\"\n", MessageID: fmt.Sprintf("m-%d", i),
		UserID: "u\u2028é", AnonymousID: "anon", AccountID: "acct-1", PreviousID: "prev",
		Timestamp: ts, OriginalTimestamp: ts.Add(-time.Second), SentAt: ts.Add(time.Second), ReceivedAt: ts.Add(2 * time.Second),
		Properties: json.RawMessage(`{"rows":18446744073709551615,"nested":{"a":[1,2.5e400,"<b>"]}}`),
		Traits:     json.RawMessage(`{"plan":"pro"}`),
		Context:    json.RawMessage(`{"groupId":"acct-1","library":{"name":"x"}}`),
	}
}

func TestRoundTripEveryField(t *testing.T) {
	in := []events.Event{fullEvent(1), {TenantID: "acme", Type: events.TypeIdentify, MessageID: "m2", UserID: "u1",
		Timestamp: time.Unix(0, 0).UTC(), ReceivedAt: time.Unix(1, 0).UTC()}}
	b, err := events.Encode(in)
	require.NoError(t, err)
	require.Equal(t, 2, bytes.Count(b, []byte("\n")), "one line per event")
	out, err := events.Decode(b)
	require.NoError(t, err)
	require.Equal(t, in, out)

	// Both codecs agree with encoding/json on every field.
	var viaStd events.Event
	require.NoError(t, json.Unmarshal(bytes.SplitN(b, []byte("\n"), 2)[0], &viaStd))
	require.Equal(t, in[0], viaStd)
	var std bytes.Buffer
	enc := json.NewEncoder(&std)
	enc.SetEscapeHTML(false)
	require.NoError(t, enc.Encode(in[0]))
	out, err = events.Decode(std.Bytes())
	require.NoError(t, err)
	require.Equal(t, in[:1], out)
}

func TestDecodeSkipsUnknownNamesAndRefusesBadInput(t *testing.T) {
	out, err := events.Decode([]byte(`{"tenant_id":"a","future_field":{"x":[1]},"type":"track","message_id":"m","timestamp":"2026-11-22T10:00:00Z","received_at":"2026-11-22T10:00:00Z","name":null}` + "\n"))
	require.NoError(t, err)
	require.Equal(t, "track", out[0].Type)
	for _, bad := range []string{`{"tenant_id":1}`, `{"timestamp":"yesterday"}`, `[1]`, `{"tenant_id":"a"`, `{"a":1,"a":2}`} {
		_, err := events.Decode([]byte(bad))
		require.Error(t, err, bad)
	}
	_, err = events.Encode([]events.Event{{MessageID: "m", Properties: json.RawMessage(`{"a":`)}})
	require.ErrorContains(t, err, "properties")
}

func BenchmarkCodec(b *testing.B) {
	evs := make([]events.Event, 500)
	for i := range evs {
		evs[i] = fullEvent(i)
	}
	b.ReportAllocs()
	for b.Loop() {
		msg, err := events.Encode(evs)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := events.Decode(msg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(evs))/b.Elapsed().Seconds(), "events/s")
}
