package segment_test

import (
	"errors"
	"testing"

	"github.com/stickpoint/stickpoint/services/ingest/internal/segment"
)

// FuzzDecode: any body either decodes into valid events or is rejected with
// a *segment.Error; it never panics, and what it accepts is complete.
func FuzzDecode(f *testing.F) {
	f.Add("batch", []byte(`{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m"}],"sentAt":"2026-11-22T11:00:00Z"}`))
	f.Add("track", []byte(`{"event":"e","anonymousId":"a","timestamp":"2026-11-22T11:00:00.123Z","properties":{"n":1e400}}`))
	f.Add("group", []byte(`{"groupId":7,"userId":"u","traits":{"plan":"pro"},"context":{"groupId":"x"}}`))
	f.Add("identify", []byte(`{"userId":"u","userId":"v"}`))
	f.Add("page", []byte("{\"name\":\"\xff\"}"))
	f.Fuzz(func(t *testing.T, kind string, body []byte) {
		req, err := segment.Decode(kind, body, now, segment.DefaultLimits())
		if err != nil {
			var se *segment.Error
			if !errors.As(err, &se) || se.Status != 400 || se.Msg == "" {
				t.Fatalf("bad rejection %T %v", err, err)
			}
			return
		}
		if len(req.Events) == 0 && len(req.Rejected) == 0 {
			t.Fatal("accepted a request with no events")
		}
		for _, r := range req.Rejected {
			if r.Err == nil || r.Err.Status != 400 || r.Err.Msg == "" || r.Err.Field == "" || len(r.Call) == 0 {
				t.Fatalf("bad refusal of call %d: %+v", r.Index, r.Err)
			}
		}
		for _, ev := range req.Events {
			if ev.MessageID == "" || ev.Type == "" || (ev.UserID == "" && ev.AnonymousID == "") || ev.Timestamp.IsZero() {
				t.Fatalf("accepted an incomplete event: %+v", ev)
			}
		}
	})
}
