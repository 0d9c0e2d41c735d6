package segment_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/services/ingest/internal/segment"
)

var now = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func decode(t *testing.T, kind, body string) (*segment.Request, *segment.Error) {
	t.Helper()
	req, err := segment.Decode(kind, []byte(body), now, segment.DefaultLimits())
	if err == nil {
		return req, nil
	}
	var se *segment.Error
	require.True(t, errors.As(err, &se), "errors are *segment.Error: %v", err)
	return nil, se
}

func TestBatchWithEnvelopeMerge(t *testing.T) {
	body := `{
	  "writeKey": "wk_body",
	  "sentAt": "2026-11-22T11:00:10.000Z",
	  "context": {"library": {"name": "analytics-node"}, "groupId": "acct-batch"},
	  "batch": [
	    {"type": "track", "event": "Report Built", "userId": "u1", "messageId": "m1",
	     "timestamp": "2026-11-22T11:00:00.000Z", "properties": {"big": 9007199254740993, "n": 1.5}},
	    {"type": "group", "groupId": "acct-1", "userId": "u1", "messageId": "m2", "traits": {"plan": "pro"},
	     "context": {"library": {"name": "own"}}},
	    {"type": "identify", "anonymousId": "anon", "messageId": "m3", "traits": {"email": "a@b.c"}, "sentAt": "2026-11-22T11:00:05Z", "timestamp": "2026-11-22T11:00:04Z"}
	  ]}`
	req, err := decode(t, "batch", body)
	require.Nil(t, err)
	require.Equal(t, "wk_body", req.WriteKey)
	require.Len(t, req.Events, 3)

	tr := req.Events[0]
	require.Equal(t, events.TypeTrack, tr.Type)
	require.Equal(t, "Report Built", tr.Name)
	require.Equal(t, "acct-batch", tr.AccountID, "context.groupId from the batch envelope")
	// Skew correction: received 12:00:00, sent 10 s after the event -> 11:59:50.
	require.Equal(t, now.Add(-10*time.Second), tr.Timestamp)
	require.Equal(t, time.Date(2026, 11, 22, 11, 0, 0, 0, time.UTC), tr.OriginalTimestamp)
	require.Contains(t, string(tr.Properties), "9007199254740993", "numbers stay exact")
	require.Contains(t, string(tr.Context), "analytics-node")

	gr := req.Events[1]
	require.Equal(t, "acct-1", gr.AccountID, "a group call's own groupId wins")
	require.Contains(t, string(gr.Context), `"own"`, "the event's context wins over the batch's")
	require.Contains(t, string(gr.Context), `acct-batch`, "and keeps the batch's other keys")
	require.Equal(t, now, gr.Timestamp, "no timestamp: the receive time")

	id := req.Events[2]
	require.Equal(t, now.Add(-time.Second), id.Timestamp, "the event's own sentAt wins over the batch's")
}

// RudderStack's SDK sends originalTimestamp (the call time) beside a
// caller-supplied timestamp: the event happened at timestamp.
func TestBackdatedTimestampWithOriginalTimestamp(t *testing.T) {
	req, err := decode(t, "batch", `{"sentAt":"2026-11-22T11:00:10Z","batch":[{"type":"track","event":"e","userId":"u",
		"timestamp":"2026-11-22T10:00:10Z","originalTimestamp":"2026-11-22T11:00:09Z"}]}`)
	require.Nil(t, err)
	require.Equal(t, now.Add(-time.Hour), req.Events[0].Timestamp)
	req, err = decode(t, "track", `{"event":"e","userId":"u","originalTimestamp":"2026-11-22T11:59:00Z"}`)
	require.Nil(t, err)
	require.Equal(t, now.Add(-time.Minute), req.Events[0].Timestamp, "originalTimestamp alone is the event time")
}

func TestSingleCalls(t *testing.T) {
	req, err := decode(t, "track", `{"event":"Signed Up","userId":42,"writeKey":"wk_x"}`)
	require.Nil(t, err)
	require.Equal(t, "42", req.Events[0].UserID, "numeric ids become their exact text")
	require.Equal(t, "wk_x", req.WriteKey)
	require.True(t, strings.HasPrefix(req.Events[0].MessageID, "api-"), "a missing messageId is derived from the call")
	again, _ := decode(t, "track", `{"event":"Signed Up","userId":42,"writeKey":"wk_x"}`)
	require.Equal(t, req.Events[0].MessageID, again.Events[0].MessageID, "so a retry gets the same one")

	req, err = decode(t, "page", `{"name":"Pricing","anonymousId":"a","properties":{"path":"/pricing"}}`)
	require.Nil(t, err)
	require.Equal(t, "Pricing", req.Events[0].Name)
	req, err = decode(t, "alias", `{"previousId":"anon","userId":"u1"}`)
	require.Nil(t, err)
	require.Equal(t, "anon", req.Events[0].PreviousID)
	req, err = decode(t, "screen", `{"userId":"u","name":"Home"}`)
	require.Nil(t, err)
	require.Equal(t, events.TypeScreen, req.Events[0].Type)
}

func TestBadInput(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40)
	var many []string
	for i := range 2501 {
		many = append(many, fmt.Sprintf(`{"type":"track","event":"e","userId":"u","messageId":"%d"}`, i))
	}
	cases := []struct {
		name, kind, body, field, contains string
	}{
		{"not json", "track", `{"event":`, "", "malformed JSON"},
		{"not an object", "track", `[1,2]`, "", "JSON object"},
		{"wrong type for event", "track", `{"event":5,"userId":"u"}`, "event", "must be a string"},
		{"missing ids", "track", `{"event":"e"}`, "userId", "userId or an anonymousId"},
		{"object id", "track", `{"event":"e","userId":{"x":1}}`, "userId", "string or a number"},
		{"missing event name", "track", `{"userId":"u"}`, "event", "required"},
		{"no batch", "batch", `{"events":[]}`, "batch", "required"},
		{"empty batch", "batch", `{"batch":[]}`, "batch", "empty"},
		{"too many events", "batch", `{"batch":[` + strings.Join(many, ",") + `]}`, "batch", "limit of 2500"},
		{"event too big", "track", `{"event":"e","userId":"u","properties":{"s":"` + strings.Repeat("x", 33<<10) + `"}}`, "", "limit of 32768 bytes"},
		{"too deep", "track", `{"event":"e","userId":"u","properties":` + deep + `}`, "", "/properties/a/a/a"},
		{"duplicate keys", "track", `{"event":"e","userId":"u","userId":"v"}`, "", "duplicate"},
		{"invalid utf-8", "track", "{\"event\":\"e\xff\",\"userId\":\"u\"}", "", "UTF-8"},
		{"properties not object", "track", `{"event":"e","userId":"u","properties":[1]}`, "properties", "object"},
		{"future timestamp", "track", `{"event":"e","userId":"u","timestamp":"2026-11-24T12:00:01Z"}`, "timestamp", "in the future"},
		{"before floor", "track", `{"event":"e","userId":"u","timestamp":"2001-01-01T00:00:00Z"}`, "timestamp", "history limit"},
		{"unparseable time", "track", `{"event":"e","userId":"u","timestamp":"yesterday"}`, "timestamp", "ISO-8601"},
		{"sentAt before timestamp", "track", `{"event":"e","userId":"u","timestamp":"2026-11-22T11:00:00Z","sentAt":"2026-11-22T10:00:00Z"}`, "sentAt", "before the event's own timestamp"},
		{"group without id", "group", `{"userId":"u"}`, "groupId", "required"},
		{"alias without previous", "alias", `{"userId":"u"}`, "previousId", "previousId"},
		{"huge message id", "track", `{"event":"e","userId":"u","messageId":"` + strings.Repeat("m", 300) + `"}`, "messageId", "limit of 256"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := decode(t, c.kind, c.body)
			require.NotNil(t, err, "must be rejected")
			require.Equal(t, 400, err.Status)
			if c.field != "" {
				require.Equal(t, c.field, err.Field)
			}
			require.Contains(t, err.Error(), c.contains)
		})
	}
}

func TestIntegersAboveTwoTo53AreKeptExactly(t *testing.T) {
	req, err := decode(t, "identify", `{"userId":18446744073709551615,"traits":{"seats":123456789012345678901234567890}}`)
	require.Nil(t, err)
	require.Equal(t, "18446744073709551615", req.Events[0].UserID)
	var traits map[string]json.Number
	d := json.NewDecoder(strings.NewReader(string(req.Events[0].Traits)))
	d.UseNumber()
	require.NoError(t, d.Decode(&traits))
	require.Equal(t, "123456789012345678901234567890", traits["seats"].String())
}

// BenchmarkDecodeBatch decodes a 500-event batch shaped like the load
// generator's (and a typical server-side SDK's) requests.
func BenchmarkDecodeBatch(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"sentAt":"2026-11-22T11:59:59.000Z","batch":[`)
	for i := range 500 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"type":"track","event":"Report Built","messageId":"run-1-%d","userId":"user-%d","timestamp":"2026-11-22T11:59:58.500Z",`+
			`"context":{"groupId":"acct-%d","library":{"name":"loadgen"}},"properties":{"rows":%d,"plan":"pro","duration_ms":%d.5}}`, i, i%50, i%7, i, i*3)
	}
	sb.WriteString(`]}`)
	body := []byte(sb.String())
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := segment.Decode("batch", body, now, segment.DefaultLimits()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "events/s")
}

func TestOneObjectPerBody(t *testing.T) {
	for _, body := range []string{`{"event":"e","userId":"u"} {"event":"f","userId":"u"}`, `{"event":"e","userId":"u"} 1`, ``, `  `, `[]`, `"x"`} {
		_, err := decode(t, "track", body)
		require.NotNil(t, err, "body %q", body)
		require.Equal(t, 400, err.Status)
	}
}

// One bad call of a batch is refused alone: the others are decoded, and
// each refusal names its call, the field and why.
func TestBatchRefusesBadCallsOneByOne(t *testing.T) {
	body := `{"batch":[
		{"type":"track","event":"ok-1","userId":"u","messageId":"m1"},
		{"type":"purchase","userId":"u"},
		{"userId":"u","event":"e"},
		42,
		{"type":"track","event":"old","userId":"u","timestamp":"2001-01-01T00:00:00Z"},
		{"type":"track","event":"big","userId":"u","properties":{"s":"` + strings.Repeat("x", 33<<10) + `"}},
		{"type":"track","event":"ok-2","userId":"u","messageId":"m2"}
	],"sentAt":"2026-11-22T11:00:01Z"}`
	req, err := segment.Decode("batch", []byte(body), now, segment.DefaultLimits())
	require.NoError(t, err)
	require.Len(t, req.Events, 2)
	require.Equal(t, "ok-1", req.Events[0].Name)
	require.Equal(t, "ok-2", req.Events[1].Name)
	type got struct {
		index       int
		field, code string
	}
	var refused []got
	for _, r := range req.Rejected {
		refused = append(refused, got{r.Index, r.Err.Field, r.Err.Code})
		require.NotEmpty(t, r.Err.Msg)
		require.NotEmpty(t, r.Call)
	}
	require.Equal(t, []got{
		{1, "batch[1].type", "invalid_request"},
		{2, "batch[2].type", "invalid_request"},
		{3, "batch[3]", "invalid_request"},
		{4, "batch[4].timestamp", "invalid_request"},
		{5, "batch[5]", "limit_exceeded"},
	}, refused)
	require.Equal(t, "42", string(req.Rejected[2].Call))
	require.Contains(t, req.Rejected[3].Err.Msg, "history limit")

	// What still refuses a batch whole: the body, and request-wide limits.
	for _, whole := range []string{`{"batch":[{"type":"track"`, `{"batch":{}}`, `{"batch":[]}`, `{"batch":[1],"sentAt":"soon"}`} {
		_, err := segment.Decode("batch", []byte(whole), now, segment.DefaultLimits())
		require.Error(t, err, whole)
	}
}

// BenchmarkDecodeSingle decodes one track call, what single-event requests
// send: there, a decoder's fixed costs are most of the work.
func BenchmarkDecodeSingle(b *testing.B) {
	body := []byte(`{"batch":[{"type":"track","event":"Report Built","messageId":"m-1","userId":"u-1","context":{"groupId":"acct-1"},"properties":{"rows":1}}]}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := segment.Decode("batch", body, now, segment.DefaultLimits()); err != nil {
			b.Fatal(err)
		}
	}
}
