package writer_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	"github.com/stickpoint/stickpoint/services/ingest/internal/store"
	"github.com/stickpoint/stickpoint/services/ingest/internal/writer"
)

// A backtest's writer stores in memory: written the same batches, it
// stores the same events, attributed alike, each messageId once, as the
// writer over ClickHouse; and a fresh writer over the same memory reads
// the ties back, as one over ClickHouse does.
func TestTheMemoryStoreStoresWhatClickHouseStores(t *testing.T) {
	r := newRig(t, chstore.EngineEmbedded)
	mem := store.NewMemory()
	newWriter := func(s writer.Store) (*writer.Writer, *[]events.Event) {
		w, err := writer.New(r.store, writer.Config{Horizon: 24 * time.Hour, AckWait: 30 * time.Second, Partitions: 1}, testutil.Logger(t))
		require.NoError(t, err)
		if s != nil {
			w.UseStore(s)
		}
		var stored []events.Event
		w.Stored = func(evs []events.Event) { stored = append(stored, evs...) }
		require.NoError(t, w.Load(t.Context()))
		return w, &stored
	}
	batches := [][]events.Event{
		{group("g-alpha", "u9", "alpha-co", t0)},
		{track("before-any", "u9", "", t0.Add(-time.Hour)), track("in-alpha", "u9", "", t0.Add(time.Minute)), track("in-alpha", "u9", "", t0.Add(time.Minute))},
		{group("g-beta", "u9", "beta-co", t0.Add(2*time.Minute)), track("in-alpha", "u9", "", t0.Add(5*time.Minute))}, // a re-sent id
		{track("in-beta", "u9", "", t0.Add(3*time.Minute)), track("explicit", "u9", "gamma-co", t0.Add(3*time.Minute)),
			track("late-in-alpha", "u9", "", t0.Add(90*time.Second)), track("nobody", "u0", "", t0)},
	}
	later := []events.Event{track("after-restart", "u9", "", t0.Add(time.Minute)), track("after-restart-2", "u9", "", t0.Add(time.Hour)), track("g-alpha", "u9", "", t0)}
	attributed := func(evs []events.Event) map[string][]string {
		out := map[string][]string{}
		for _, e := range evs {
			out[e.MessageID] = append(out[e.MessageID], e.AccountID)
		}
		return out
	}
	var got [2]map[string][]string
	for i, s := range []writer.Store{nil, mem} {
		w, stored := newWriter(s)
		for _, b := range batches {
			require.NoError(t, w.WriteEvents(t.Context(), b))
		}
		// A fresh writer: its partitions know no ties, and read them back.
		w2, stored2 := newWriter(s)
		require.NoError(t, w2.WriteEvents(t.Context(), later))
		got[i] = attributed(append(*stored, *stored2...))
	}
	require.Equal(t, map[string][]string{
		"g-alpha": {"alpha-co"}, "g-beta": {"beta-co"},
		"before-any": {"alpha-co"}, "in-alpha": {"alpha-co"}, "in-beta": {"beta-co"}, "explicit": {"gamma-co"},
		"late-in-alpha": {"alpha-co"}, "nobody": {""}, "after-restart": {"alpha-co"}, "after-restart-2": {"beta-co"},
	}, got[0], "ClickHouse")
	require.Equal(t, got[0], got[1], "memory")
}
