package store_test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"testing"
	"testing/fstest"
	"time"

	"github.com/go-faster/city"
	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	"github.com/stickpoint/stickpoint/services/ingest/internal/dedup"
	"github.com/stickpoint/stickpoint/services/ingest/internal/store"
	"github.com/stickpoint/stickpoint/services/ingest/migrations"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

func open(t *testing.T, db chstore.Store) *store.Store {
	t.Helper()
	_, err := chstore.Migrate(t.Context(), db, "ingest", migrations.FS)
	require.NoError(t, err)
	return store.New(db)
}

func ev(tenant, id, typ, name, user, account string, ts time.Time) events.Event {
	return events.Event{TenantID: tenant, SourceID: "src", Type: typ, Name: name, MessageID: id, UserID: user,
		AccountID: account, Timestamp: ts, ReceivedAt: ts, Properties: json.RawMessage(`{"n":9007199254740993}`),
		Context: json.RawMessage(`{"ip":"127.0.0.1"}`)}
}

func TestWriteCountRecent(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		s := open(t, db)
		ctx := t.Context()
		t0 := time.Date(2026, 11, 22, 10, 0, 0, 250_000_000, time.UTC)
		batch := []events.Event{
			ev("acme", "m1", events.TypeTrack, "Report Built", "u1", "a1", t0),
			ev("acme", "m2", events.TypeTrack, "Report Built", "u2", "a1", t0.Add(time.Minute)),
			ev("acme", "m3", events.TypePage, "Pricing", "u1", "a2", t0.Add(2*time.Minute)),
			ev("acme", "g1", events.TypeGroup, "", "u3", "a9", t0),
			ev("globex", "m1", events.TypeTrack, "Report Built", "x", "a1", t0), // same messageId, other tenant
		}
		require.NoError(t, s.Write(ctx, batch))
		require.NoError(t, s.Write(ctx, batch[:3]), "a redelivered batch")

		count := func(f store.Filter) uint64 {
			t.Helper()
			n, err := s.Count(ctx, "acme", f)
			require.NoError(t, err)
			return n
		}
		check := func() {
			require.Equal(t, uint64(4), count(store.Filter{}))
			require.Equal(t, uint64(2), count(store.Filter{Type: events.TypeTrack, Name: "Report Built"}))
			require.Equal(t, uint64(2), count(store.Filter{AccountID: "a1"}))
			require.Equal(t, uint64(1), count(store.Filter{From: t0.Add(30 * time.Second), To: t0.Add(90 * time.Second)}))
		}
		check()
		require.NoError(t, db.Exec(ctx, "OPTIMIZE TABLE events FINAL"))
		check() // the same answers after duplicates merged

		n, err := s.Count(ctx, "globex", store.Filter{})
		require.NoError(t, err)
		require.Equal(t, uint64(1), n, "one tenant's messageIds never hide another's")

		recent, err := s.Recent(ctx, "acme", "a1", 10)
		require.NoError(t, err)
		require.Len(t, recent, 2, "each messageId once")
		require.Equal(t, "m2", recent[0].MessageID, "newest first")
		got := recent[1]
		want := batch[0]
		require.True(t, want.Timestamp.Equal(got.Timestamp), "millisecond timestamps survive: %v", got.Timestamp)
		require.JSONEq(t, string(want.Properties), string(got.Properties))
		require.Contains(t, string(got.Properties), "9007199254740993")
		require.Equal(t, want.UserID, got.UserID)
		require.Equal(t, want.SourceID, got.SourceID)
		require.Equal(t, want.Name, got.Name)

		members, err := s.Memberships(ctx, "acme", []string{"u3", "nobody"})
		require.NoError(t, err)
		require.Equal(t, map[string][]store.Membership{"u3": {{AccountID: "a9", Since: t0.Truncate(time.Second)}}}, members)
	})
}

// Every events insert records its messageIds in message_ids (the view),
// with the hash the writer computes; lookups respect the horizon; old
// days' partitions drop.
func TestMessageIDsFollowEveryInsert(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		s := open(t, db)
		ctx := t.Context()
		t0 := time.Now().UTC().Truncate(time.Second)
		require.NoError(t, s.Write(ctx, []events.Event{
			ev("acme", "m1", events.TypeTrack, "e", "u", "a1", t0),
			ev("acme", "m2", events.TypeTrack, "e", "u", "", t0),
			ev("globex", "m1", events.TypeTrack, "e", "u", "g", t0),
		}))
		got, err := s.StoredIDs(ctx, "acme", []string{"m1", "m2", "never"}, t0.Add(-time.Hour))
		require.NoError(t, err)
		require.Equal(t, map[string]bool{"m1": true, "m2": true}, got)
		got, err = s.StoredIDs(ctx, "acme", []string{"m1"}, t0.Add(time.Hour))
		require.NoError(t, err)
		require.Empty(t, got, "claims older than the horizon don't count")

		var hashes []uint64
		require.NoError(t, s.ClaimHashes(ctx, t0.Add(-time.Hour), func(h uint64, _ time.Time) { hashes = append(hashes, h) }))
		require.ElementsMatch(t, []uint64{dedup.Hash("acme", "m1"), dedup.Hash("acme", "m2"), dedup.Hash("globex", "m1")}, hashes,
			"SQL and Go hash alike")

		dropped, err := s.DropClaimsBefore(ctx, t0.Add(48*time.Hour))
		require.NoError(t, err)
		require.Equal(t, 1, dropped)
		hashes = nil
		require.NoError(t, s.ClaimHashes(ctx, t0.Add(-time.Hour), func(h uint64, _ time.Time) { hashes = append(hashes, h) }))
		require.Empty(t, hashes)
	})
}

func TestCountIsExactAtScale(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		s := open(t, db)
		t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
		var batch []events.Event
		for i := range 5000 {
			batch = append(batch, ev("acme", fmt.Sprintf("m%05d", i), events.TypeTrack, "e", "u", "a", t0.Add(time.Duration(i)*time.Second)))
		}
		require.NoError(t, s.Write(t.Context(), batch))
		require.NoError(t, s.Write(t.Context(), batch[1000:3000]))
		n, err := s.Count(t.Context(), "acme", store.Filter{})
		require.NoError(t, err)
		require.Equal(t, uint64(5000), n)
	})
}

// The one read path for account traits merges an account's group calls by
// key, latest event time winning, before and after ClickHouse merges
// repeated identical calls.

// The one read path for account traits merges an account's group calls by
// key, latest event time winning, before and after ClickHouse merges
// repeated identical calls.
func TestAccountTraits(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		s := open(t, db)
		ctx := t.Context()
		t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
		grp := func(id, account, traits string, at time.Time) events.Event {
			e := ev("acme", id, events.TypeGroup, "", "u1", account, at)
			e.Traits = json.RawMessage(traits)
			return e
		}
		require.NoError(t, s.Write(ctx, []events.Event{
			grp("g1", "a1", `{"plan":"pro","name":"Acme"}`, t0),
			grp("g2", "a1", `{"plan":"team","seats":12}`, t0.Add(time.Hour)),
			grp("g3", "a1", `{"plan":"pro","name":"Acme"}`, t0.Add(-time.Hour)), // an older repeat arrives late
			grp("g4", "a2", `{"plan":"free"}`, t0),
			grp("g5", "a1", `{"plan":"pro","name":"Acme"}`, t0.Add(30*time.Minute)),
		}))
		require.NoError(t, s.Write(ctx, []events.Event{ev("globex", "g1", events.TypeGroup, "", "x", "a1", t0)}))
		reader := accounts.NewReader(db)
		check := func() {
			got, err := reader.Traits(ctx, "acme", []string{"a1", "a2", "nope"})
			require.NoError(t, err)
			require.Equal(t, map[string]accounts.Traits{
				"a1": {"plan": json.RawMessage(`"team"`), "seats": json.RawMessage(`12`), "name": json.RawMessage(`"Acme"`)},
				"a2": {"plan": json.RawMessage(`"free"`)},
			}, got)
		}
		check()
		require.NoError(t, db.Exec(ctx, "OPTIMIZE TABLE account_traits FINAL"))
		check()
		r, err := db.Query(ctx, "SELECT count() FROM account_traits WHERE tenant_id = 'acme' AND account_id = 'a1'")
		require.NoError(t, err)
		require.True(t, r.Next())
		var n uint64
		require.NoError(t, r.Scan(&n))
		require.Equal(t, uint64(2), n, "identical traits collapse into one row")
	})
}

// migrateBefore applies ingest's migrations whose files sort before
// first: the schema as a release before first left it.
func migrateBefore(t *testing.T, db chstore.Store, first string) {
	t.Helper()
	out := fstest.MapFS{}
	entries, err := fs.ReadDir(migrations.FS, ".")
	require.NoError(t, err)
	for _, e := range entries {
		if e.Name() < first {
			b, err := fs.ReadFile(migrations.FS, e.Name())
			require.NoError(t, err)
			out[e.Name()] = &fstest.MapFile{Data: b}
		}
	}
	_, err = chstore.Migrate(t.Context(), db, "ingest", out)
	require.NoError(t, err)
}

// Group calls stored before account_traits existed move over with the
// migration that creates it, and read the same.
func TestAccountTraitsMigrationKeepsOlderGroupCalls(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		ctx := t.Context()
		migrateBefore(t, db, "0006")
		t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
		require.NoError(t, db.Insert(ctx, "accounts", []string{"tenant_id", "account_id", "traits", "updated_at", "message_id"}, [][]any{
			{"acme", "a1", `{"plan":"pro","seats":3}`, t0, "g1"},
			{"acme", "a1", `{"plan":"team"}`, t0.Add(time.Hour), "g2"},
			{"acme", "a2", "", t0, "g3"},
		}))
		open(t, db) // the rest
		// The same traits sent again now collapse with the moved row: SQL
		// and Go hash alike.
		again := ev("acme", "g4", events.TypeGroup, "", "u1", "a1", t0.Add(2*time.Hour))
		again.Traits = json.RawMessage(`{"plan":"team"}`)
		require.NoError(t, store.New(db).Write(ctx, []events.Event{again}))
		require.NoError(t, db.Exec(ctx, "OPTIMIZE TABLE account_traits FINAL"))
		rows, err := db.Query(ctx, "SELECT count() FROM account_traits WHERE account_id = 'a1'")
		require.NoError(t, err)
		require.True(t, rows.Next())
		var n1 uint64
		require.NoError(t, rows.Scan(&n1))
		require.Equal(t, uint64(2), n1)
		got, err := accounts.NewReader(db).Traits(ctx, "acme", []string{"a1", "a2"})
		require.NoError(t, err)
		require.Equal(t, map[string]accounts.Traits{
			"a1": {"plan": json.RawMessage(`"team"`), "seats": json.RawMessage(`3`)},
			"a2": {},
		}, got)
		r, err := db.Query(ctx, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'accounts'")
		require.NoError(t, err)
		require.True(t, r.Next())
		var n uint64
		require.NoError(t, r.Scan(&n))
		require.Zero(t, n, "the old table is gone")
	})
}

// events_by_name holds, for every track, page and screen event of an
// account, stored before its migration or after, the columns milestone
// tracking reads, with the messageId and user (else the anonymous id)
// hashed as ClickHouse's cityHash64.
func TestEventsByNameFollowsTheEvents(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		ctx := t.Context()
		migrateBefore(t, db, "0009")
		s := store.New(db)
		t0 := time.Date(2026, 11, 22, 10, 0, 0, 250_000_000, time.UTC)
		anonymous := ev("acme", "m4", events.TypeScreen, "Home", "", "a2", t0.Add(time.Hour))
		anonymous.AnonymousID = "anon-1"
		before := []events.Event{
			ev("acme", "m1", events.TypeTrack, "Report Built", "u1", "a1", t0),
			ev("acme", "m2", events.TypePage, "Pricing", "u2", "a1", t0.Add(-24*time.Hour)),
			ev("acme", "g1", events.TypeGroup, "", "u1", "a1", t0),
			ev("acme", "m3", events.TypeTrack, "Report Built", "u1", "", t0), // no account
		}
		after := []events.Event{
			anonymous,
			ev("acme", "i1", events.TypeIdentify, "", "u1", "a2", t0),
			ev("acme", "m5", events.TypeTrack, "Logged In", "u3", "a2", t0.Add(40*24*time.Hour)), // next month
			ev("globex", "m1", events.TypeTrack, "Report Built", "x", "a1", t0),
		}
		require.NoError(t, s.Write(ctx, before), "before events_by_name")
		open(t, db) // the rest
		require.NoError(t, s.Write(ctx, after))

		type row struct {
			tenant, name, account string
			at                    time.Time
			ms                    uint16
			message, user         uint64
			props                 string
		}
		hash := func(s string) uint64 { return city.CH64([]byte(s)) }
		at := t0.Truncate(time.Second)
		want := []row{
			{"acme", "Home", "a2", at.Add(time.Hour), 250, hash("m4"), hash("anon-1"), `{"n":9007199254740993}`},
			{"acme", "Logged In", "a2", at.Add(40 * 24 * time.Hour), 250, hash("m5"), hash("u3"), `{"n":9007199254740993}`},
			{"acme", "Pricing", "a1", at.Add(-24 * time.Hour), 250, hash("m2"), hash("u2"), `{"n":9007199254740993}`},
			{"acme", "Report Built", "a1", at, 250, hash("m1"), hash("u1"), `{"n":9007199254740993}`},
			{"globex", "Report Built", "a1", at, 250, hash("m1"), hash("x"), `{"n":9007199254740993}`},
		}
		rows, err := db.Query(ctx, `SELECT tenant_id, name, account_id, timestamp, timestamp_ms, message_hash, user_hash, properties
			FROM events_by_name ORDER BY tenant_id, name, account_id, timestamp`)
		require.NoError(t, err)
		var got []row
		for rows.Next() {
			var r row
			require.NoError(t, rows.Scan(&r.tenant, &r.name, &r.account, &r.at, &r.ms, &r.message, &r.user, &r.props))
			r.at = r.at.UTC()
			got = append(got, r)
		}
		require.Equal(t, want, got)
	})
}

// account_activity keeps each account's first and last event, of the
// events stored before its migration and of every write after, whatever
// their order: what a scan of the events gives.
func TestAccountActivityFollowsTheEvents(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		ctx := t.Context()
		migrateBefore(t, db, "0008")
		s := store.New(db)
		t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
		track := func(tenant, id, account string, at time.Time) events.Event {
			return ev(tenant, id, events.TypeTrack, "Report Built", "u1", account, at)
		}
		require.NoError(t, s.Write(ctx, []events.Event{
			track("acme", "m1", "a1", t0),
			track("acme", "m2", "a1", t0.Add(time.Hour)),
			track("acme", "m3", "a2", t0.Add(2*time.Hour)),
		}), "before account_activity")
		open(t, db) // the rest
		require.NoError(t, s.Write(ctx, []events.Event{
			track("acme", "m4", "a1", t0.Add(-24*time.Hour)), // older than a1's first, stored later
			track("acme", "m5", "a3", t0.Add(5*time.Hour)),
			track("acme", "m6", "", t0.Add(-48*time.Hour)), // no account
			track("globex", "m1", "a1", t0.Add(-72*time.Hour)),
		}))
		require.NoError(t, s.Write(ctx, []events.Event{track("acme", "m7", "a2", t0.Add(3*time.Hour))}))
		reader := accounts.NewReader(db)
		check := func() {
			t.Helper()
			ids, err := reader.WithEvents(ctx, "acme")
			require.NoError(t, err)
			require.Equal(t, []string{"a1", "a2", "a3"}, ids)
			// What a scan of the events gives, each account.
			rows, err := db.Query(ctx, `SELECT account_id, min(timestamp), max(timestamp) FROM events
				WHERE tenant_id = 'acme' AND account_id != '' GROUP BY account_id`)
			require.NoError(t, err)
			scan := map[string][2]time.Time{}
			for rows.Next() {
				var id string
				var span [2]time.Time
				require.NoError(t, rows.Scan(&id, &span[0], &span[1]))
				scan[id] = span
			}
			require.Equal(t, map[string][2]time.Time{
				"a1": {t0.Add(-24 * time.Hour), t0.Add(time.Hour)},
				"a2": {t0.Add(2 * time.Hour), t0.Add(3 * time.Hour)},
				"a3": {t0.Add(5 * time.Hour), t0.Add(5 * time.Hour)},
			}, scan)
			got, err := reader.Activity(ctx, "acme", []string{"a1", "a2", "a3", "nope"})
			require.NoError(t, err)
			require.Equal(t, scan, got)
			got, err = reader.ActivityWhere(ctx, "acme", "account_id >= ? AND account_id <= ?", "a2", "a9")
			require.NoError(t, err)
			require.Equal(t, map[string][2]time.Time{"a2": scan["a2"], "a3": scan["a3"]}, got)
		}
		check()
		require.NoError(t, db.Exec(ctx, "OPTIMIZE TABLE account_activity FINAL"))
		check()
	})
}
