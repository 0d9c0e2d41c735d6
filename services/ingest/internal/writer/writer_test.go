package writer_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	"github.com/stickpoint/stickpoint/services/ingest/internal/store"
	"github.com/stickpoint/stickpoint/services/ingest/internal/writer"
	"github.com/stickpoint/stickpoint/services/ingest/migrations"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

var t0 = time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)

func track(id, user, account string, at time.Time) events.Event {
	return events.Event{TenantID: "acme", SourceID: "src", Type: events.TypeTrack, Name: "Report Built", MessageID: id,
		UserID: user, AccountID: account, Timestamp: at, ReceivedAt: at}
}

func group(id, user, account string, at time.Time) events.Event {
	e := track(id, user, account, at)
	e.Type, e.Name = events.TypeGroup, ""
	return e
}

type rig struct {
	db     chstore.Store
	store  *store.Store
	bus    *natsjs.Bus
	w      *writer.Writer
	loaded bool
}

func newRig(t *testing.T, engine string) *rig {
	t.Helper()
	db := testutil.Store(t, engine)
	_, err := chstore.Migrate(t.Context(), db, "ingest", migrations.FS)
	require.NoError(t, err)
	s := store.New(db)
	bus := testutil.NATS(t, func(c *natsjs.Config) { c.EventPartitions = 1 })
	w, err := writer.New(s, writer.Config{Horizon: 24 * time.Hour, AckWait: 30 * time.Second, Partitions: 1}, testutil.Logger(t))
	require.NoError(t, err)
	return &rig{db: db, store: s, bus: bus, w: w}
}

// publish puts evs on EVENTS as one message and returns its stream sequence.
func (r *rig) publish(t *testing.T, evs ...events.Event) uint64 {
	t.Helper()
	body, err := events.Encode(evs)
	require.NoError(t, err)
	ack, err := r.bus.JS.Publish(t.Context(), natsjs.EventSubject("acme", evs[0].Type), body)
	require.NoError(t, err)
	return ack.Sequence
}

// run consumes EVENTS with the writer until every message is acked.
func (r *rig) run(t *testing.T) {
	t.Helper()
	stop := r.start(t)
	defer stop()
	r.drained(t)
}

// start runs the writer's consumer until stop, as a writer process does
// (it loads the filter once).
func (r *rig) start(t *testing.T) (stop func()) {
	t.Helper()
	if !r.loaded {
		require.NoError(t, r.w.Load(t.Context()))
		r.loaded = true
	}
	c, err := natsjs.NewConsumer(r.bus, natsjs.ConsumerConfig{Stream: natsjs.EventsStream, Durable: "ingest-writer-0",
		FilterSubjects: []string{natsjs.EventPartitionFilter(0)}, MaxWait: 10 * time.Millisecond, Pinned: true, PurgeAcked: true,
		MaxDeliver: 1, NakDelay: func(uint64) time.Duration { return 10 * time.Millisecond },
		RestartDelay: func(uint64) time.Duration { return 10 * time.Millisecond }}, r.w.Handler(0), testutil.Logger(t))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = c.Run(ctx) })
	return func() { cancel(); wg.Wait() }
}

// drained waits until every message of the stream is acked and purged.
func (r *rig) drained(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		s, err := r.bus.JS.Stream(t.Context(), natsjs.EventsStream)
		require.NoError(t, err)
		info, err := s.Info(t.Context())
		require.NoError(t, err)
		return info.State.Msgs == 0
	}, 20*time.Second, 10*time.Millisecond)
}

// rows returns account by messageId of every events row, duplicates and all.
func (r *rig) rows(t *testing.T) map[string][]string {
	t.Helper()
	res, err := r.db.Query(t.Context(), "SELECT message_id, account_id FROM events WHERE tenant_id = 'acme' ORDER BY message_id, account_id")
	require.NoError(t, err)
	out := map[string][]string{}
	for res.Next() {
		var id, acct string
		require.NoError(t, res.Scan(&id, &acct))
		out[id] = append(out[id], acct)
	}
	return out
}

// What is stored already is not stored again, however it comes back: in
// the same message (a redelivery after a lost ack), in another message (a
// client retry), or after a batch that stored part of itself and failed.
func TestStoredMessageIDsAreNotStoredAgain(t *testing.T) {
	for _, engine := range testutil.Engines {
		t.Run(engine, func(t *testing.T) {
			r := newRig(t, engine)
			// Stored before this writer started, as a crashed writer's
			// insert would have: its filter loads them.
			require.NoError(t, r.store.Write(t.Context(), []events.Event{track("stored-before", "u1", "a1", t0)}))
			r.publish(t, track("stored-before", "u1", "", t0), track("new", "u1", "a-ctx", t0), track("new", "u1", "a-ctx", t0))
			r.publish(t, track("new", "u1", "a-ctx", t0.Add(time.Second)), track("newer", "u1", "a-ctx", t0))
			r.run(t)
			require.Equal(t, map[string][]string{"stored-before": {"a1"}, "new": {"a-ctx"}, "newer": {"a-ctx"}}, r.rows(t))
		})
	}
}

// Attribution follows event time, in and across batches: an event takes
// its user's latest group call at or before it, else the first one.
func TestEventsTakeTheirUsersAccountAtTheirTime(t *testing.T) {
	r := newRig(t, chstore.EngineEmbedded)
	r.publish(t, group("g-alpha", "u9", "alpha-co", t0))
	r.publish(t, track("before-any", "u9", "", t0.Add(-time.Hour)), track("in-alpha", "u9", "", t0.Add(time.Minute)))
	r.publish(t, group("g-beta", "u9", "beta-co", t0.Add(2*time.Minute)))
	r.publish(t, track("in-beta", "u9", "", t0.Add(3*time.Minute)), track("explicit", "u9", "gamma-co", t0.Add(3*time.Minute)),
		track("late-in-alpha", "u9", "", t0.Add(90*time.Second)), track("nobody", "u0", "", t0))
	r.run(t)
	require.Equal(t, map[string][]string{
		"g-alpha": {"alpha-co"}, "g-beta": {"beta-co"},
		"before-any": {"alpha-co"}, "in-alpha": {"alpha-co"}, "in-beta": {"beta-co"}, "explicit": {"gamma-co"},
		"late-in-alpha": {"alpha-co"}, "nobody": {""},
	}, r.rows(t))

	// A writer that starts afresh (another replica, a restart) gives the
	// same answers: it reads the group calls back from ClickHouse.
	r2 := &rig{db: r.db, store: r.store, bus: r.bus}
	var err error
	r2.w, err = writer.New(r.store, writer.Config{Horizon: 24 * time.Hour, AckWait: 30 * time.Second, Partitions: 1}, testutil.Logger(t))
	require.NoError(t, err)
	r2.publish(t, track("after-restart", "u9", "", t0.Add(time.Minute)), track("after-restart-2", "u9", "", t0.Add(time.Hour)))
	r2.run(t)
	rows := r2.rows(t)
	require.Equal(t, []string{"alpha-co"}, rows["after-restart"])
	require.Equal(t, []string{"beta-co"}, rows["after-restart-2"])
}

func TestAttribute(t *testing.T) {
	ms := []store.Membership{{AccountID: "a", Since: t0}, {AccountID: "b", Since: t0.Add(time.Hour)}}
	for _, c := range []struct {
		at   time.Time
		want string
	}{
		{t0.Add(-time.Minute), "a"}, // before the first group call: the first
		{t0, "a"},
		{t0.Add(time.Minute), "a"},
		{t0.Add(time.Hour), "b"},
		{t0.Add(2 * time.Hour), "b"},
	} {
		require.Equal(t, c.want, writer.Attribute(ms, c.at), "at %v", c.at)
	}
	require.Empty(t, writer.Attribute(nil, t0))
}

// A failed batch may have stored part of itself without the filter
// knowing; the partition catches up from message_ids before its next
// batch, so those events are not stored twice when they come back.
func TestAFailedBatchMakesThePartitionCatchUp(t *testing.T) {
	r := newRig(t, chstore.EngineEmbedded)
	stop := r.start(t) // one consumer throughout: no new epoch to hide behind
	defer stop()
	r.publish(t, track("first", "u1", "a1", t0))
	r.drained(t)
	// What a failed insert left behind: a row the filter doesn't know.
	require.NoError(t, r.store.Write(t.Context(), []events.Event{track("half-stored", "u1", "a1", t0)}))
	_, err := r.bus.JS.Publish(t.Context(), natsjs.EventSubject("acme", "track"), []byte("not an event")) // fails its batch
	require.NoError(t, err)
	r.publish(t, track("half-stored", "u1", "a1", t0))
	r.drained(t)
	require.Equal(t, map[string][]string{"first": {"a1"}, "half-stored": {"a1"}}, r.rows(t))
}

// A consumer declared again (it was deleted) starts its delivery sequence
// over, and another writer may have held the partition meanwhile: the
// writer catches up before its next batch.
func TestAConsumerDeclaredAgainMakesThePartitionCatchUp(t *testing.T) {
	r := newRig(t, chstore.EngineEmbedded)
	stop := r.start(t)
	defer stop()
	for i := range 3 {
		r.publish(t, track(fmt.Sprintf("before-%d", i), "u1", "a1", t0))
	}
	r.drained(t)
	// Another writer stored this while the consumer was gone.
	require.NoError(t, r.store.Write(t.Context(), []events.Event{track("elsewhere", "u1", "a1", t0)}))
	require.NoError(t, r.bus.JS.DeleteConsumer(t.Context(), natsjs.EventsStream, "ingest-writer-0"))
	r.publish(t, track("elsewhere", "u1", "a1", t0))
	r.drained(t)
	require.Equal(t, []string{"a1"}, r.rows(t)["elsewhere"])
}
