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
		Timestamp: time.Unix(0, 0).UTC(), ReceivedAt: time.Unix(1, 0).UTC()},
		{TenantID: "acme", Type: events.TypeTrack, MessageID: "far", UserID: "u", Timestamp: time.Unix(1, 5).UTC(),
			OriginalTimestamp: time.Date(3000, 1, 1, 0, 0, 0, 999_999_999, time.UTC), ReceivedAt: time.Unix(2, 0).UTC()}}
	b, err := events.Encode(in)
	require.NoError(t, err)
	out, err := events.Decode(b)
	require.NoError(t, err)
	require.Equal(t, in, out)
	require.Zero(t, out[1].SentAt, "a zero time stays zero")

	// A cut body is an error, never a wrong event.
	for n := len(b) - 1; n > 5; n -= 7 {
		got, err := events.Decode(b[:n])
		if err == nil {
			require.Less(t, len(got), len(in), "cut at %d", n)
		}
	}
}

// Bodies an earlier version wrote (JSON lines) still decode, and the JSON
// codec agrees with encoding/json on every field.
func TestDecodeReadsTheJSONBodiesOfEarlierVersions(t *testing.T) {
	in := []events.Event{fullEvent(1), {TenantID: "acme", Type: events.TypeIdentify, MessageID: "m2", UserID: "u1",
		Timestamp: time.Unix(0, 0).UTC(), ReceivedAt: time.Unix(1, 0).UTC()}}
	b, err := events.EncodeJSON(in)
	require.NoError(t, err)
	require.Equal(t, 2, bytes.Count(b, []byte("\n")), "one line per event")
	out, err := events.Decode(b)
	require.NoError(t, err)
	require.Equal(t, in, out)

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
	for _, bad := range []string{`{"tenant_id":1}`, `{"timestamp":"yesterday"}`, `[1]`, `{"tenant_id":"a"`, `{"a":1,"a":2}`, "\x00SPE1\xff"} {
		_, err := events.Decode([]byte(bad))
		require.Error(t, err, bad)
	}
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

// BenchmarkCodecJSON is the JSON codec of earlier versions, for comparison.
func BenchmarkCodecJSON(b *testing.B) {
	evs := make([]events.Event, 500)
	for i := range evs {
		evs[i] = fullEvent(i)
	}
	b.ReportAllocs()
	for b.Loop() {
		msg, err := events.EncodeJSON(evs)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := events.Decode(msg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(evs))/b.Elapsed().Seconds(), "events/s")
}
