package writer_test

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	"github.com/stickpoint/stickpoint/services/ingest/internal/dedup"
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
	db    chstore.Store
	store *store.Store
	bus   *natsjs.Bus
	w     *writer.Writer
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
	require.NoError(t, r.w.Load(t.Context()))
	c, err := natsjs.NewConsumer(r.bus, natsjs.ConsumerConfig{Stream: natsjs.EventsStream, Durable: "ingest-writer-0",
		FilterSubjects: []string{natsjs.EventPartitionFilter(0)}, MaxWait: 10 * time.Millisecond, Pinned: true, PurgeAcked: true,
		OnDeadLetter: r.w.Release}, r.w.Handler(0), testutil.Logger(t))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = c.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
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

// A message redelivered after a crash between its claims and its rows finds
// its own claims: the missing rows are inserted under the claimed account
// (not resolved again), the present ones are not inserted twice, and an
// id another message claimed is a duplicate.
func TestRedeliveryRestoresWhatAClaimLacks(t *testing.T) {
	for _, engine := range testutil.Engines {
		t.Run(engine, func(t *testing.T) { testRedeliveryRestores(t, engine) })
	}
}

func testRedeliveryRestores(t *testing.T, engine string) {
	r := newRig(t, engine)
	ctx := t.Context()
	seq := r.publish(t, track("lost", "u1", "", t0), track("kept", "u1", "", t0), track("theirs", "u1", "", t0), track("new", "u1", "a-ctx", t0))
	// The first attempt claimed lost and kept (resolving u1 to
	// claimed-acct), stored kept, and died; another message claimed theirs.
	require.NoError(t, r.store.AddClaims(ctx, []store.Claim{
		{TenantID: "acme", MessageID: "lost", Hash: dedup.Hash("acme", "lost"), AccountID: "claimed-acct", StreamSeq: seq},
		{TenantID: "acme", MessageID: "kept", Hash: dedup.Hash("acme", "kept"), AccountID: "claimed-acct", StreamSeq: seq},
		{TenantID: "acme", MessageID: "theirs", Hash: dedup.Hash("acme", "theirs"), AccountID: "x", StreamSeq: seq + 100},
	}, time.Now()))
	kept := track("kept", "u1", "claimed-acct", t0)
	require.NoError(t, r.store.Write(ctx, []events.Event{kept}))

	r.run(t)
	require.Equal(t, map[string][]string{"lost": {"claimed-acct"}, "kept": {"claimed-acct"}, "new": {"a-ctx"}}, r.rows(t))
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

// A dead-lettered message gives up its claims, so replaying it stores it;
// claims of other messages stay.
func TestReleaseGivesUpOnlyTheMessagesOwnClaims(t *testing.T) {
	r := newRig(t, chstore.EngineEmbedded)
	ctx := t.Context()
	seq := r.publish(t, track("mine", "u1", "a", t0), track("other", "u1", "a", t0))
	require.NoError(t, r.store.AddClaims(ctx, []store.Claim{
		{TenantID: "acme", MessageID: "mine", Hash: dedup.Hash("acme", "mine"), AccountID: "a", StreamSeq: seq},
		{TenantID: "acme", MessageID: "other", Hash: dedup.Hash("acme", "other"), AccountID: "a", StreamSeq: seq + 1},
	}, time.Now()))
	s, err := r.bus.JS.Stream(ctx, natsjs.EventsStream)
	require.NoError(t, err)
	cons, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "probe", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
	msg, err := cons.Next()
	require.NoError(t, err)

	r.w.Release(ctx, msg)
	claims, err := r.store.Claims(ctx, "acme", []string{"mine", "other"}, t0.Add(-time.Hour))
	require.NoError(t, err)
	require.Len(t, claims, 1)
	require.Contains(t, claims, "other")
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
