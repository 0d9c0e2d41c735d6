package accounts

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stickpoint/stickpoint/pkg/events"
)

// A history gives what the tables give: each account's events in time
// order (to the millisecond), and its traits merged from its group calls
// as Reader.Traits merges account_traits rows (whole seconds, one row per
// distinct traits at its latest time).
func TestHistoryKeepsWhatTheTablesKeep(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	h := NewHistory()
	calls := map[string][]Call{}
	var all []events.Event
	for i := range 400 {
		acct := fmt.Sprintf("a%d", r.IntN(5))
		e := events.Event{TenantID: "t1", AccountID: acct, MessageID: fmt.Sprint(i), Type: events.TypeTrack, Name: "X",
			Timestamp: t0.Add(time.Duration(r.Int64N(int64(48 * time.Hour))))}
		if r.IntN(4) == 0 {
			e.Type, e.Name = events.TypeGroup, ""
			e.Traits = json.RawMessage(fmt.Sprintf(`{"plan":"p%d","seats":%d}`, r.IntN(2), r.IntN(2)))
		}
		if r.IntN(10) == 0 {
			e.AccountID = "" // unattributed: kept by no account
		}
		if e.Type == events.TypeGroup && e.AccountID != "" {
			calls[acct] = append(calls[acct], Call{At: e.Timestamp.Truncate(time.Second), Traits: e.Traits})
		}
		all = append(all, e)
	}
	for chunk := range slices.Chunk(all, 37) { // in about time order, as steps store them
		h.Add(chunk)
		h.Traits("t1", []string{"a0", "a1", "a2", "a3", "a4"}) // read between adds, as services do: a later group call must show
	}
	h.Add([]events.Event{{TenantID: "t2", AccountID: "a0", MessageID: "other", Type: events.TypeTrack, Timestamp: t0}})

	ids := h.WithEvents("t1")
	if !slices.Equal(ids, []string{"a0", "a1", "a2", "a3", "a4"}) {
		t.Fatalf("accounts with events: %v", ids)
	}
	traits := h.Traits("t1", ids)
	for _, id := range ids {
		evs := h.Events("t1", id)
		var want []events.Event
		for _, e := range all {
			if e.AccountID == id {
				e.Timestamp = e.Timestamp.Truncate(time.Millisecond)
				want = append(want, e)
			}
		}
		slices.SortStableFunc(want, func(a, b events.Event) int { return a.Timestamp.Compare(b.Timestamp) })
		if len(evs) != len(want) {
			t.Fatalf("%s: %d events, want %d", id, len(evs), len(want))
		}
		for i := range evs {
			if evs[i].MessageID != want[i].MessageID || !evs[i].Timestamp.Equal(want[i].Timestamp) {
				t.Fatalf("%s: event %d is %s at %s, want %s at %s", id, i, evs[i].MessageID, evs[i].Timestamp, want[i].MessageID, want[i].Timestamp)
			}
		}
		got, _ := json.Marshal(traits[id])
		wantTraits, _ := json.Marshal(Merge(calls[id]))
		if len(calls[id]) > 0 && string(got) != string(wantTraits) {
			t.Errorf("%s: traits %s, want %s", id, got, wantTraits)
		}
		if _, ok := traits[id]; ok != (len(calls[id]) > 0) {
			t.Errorf("%s: traits present %v with %d calls", id, ok, len(calls[id]))
		}
	}
	if evs := h.Events("t2", "a0"); len(evs) != 1 {
		t.Errorf("tenant t2: %d events, want its own 1", len(evs))
	}
}
