package events_test

import (
	"encoding/json"
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
	// The separator keeps ["ab","c"] apart from ["a","bc"].
	require.NotEqual(t,
		events.DedupID("t", "track", []events.Event{{MessageID: "ab"}, {MessageID: "c"}}),
		events.DedupID("t", "track", []events.Event{{MessageID: "a"}, {MessageID: "bc"}}))
}
