package chstore_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.MainWithLeakCheck(m)) }

const eventsDDL = `CREATE TABLE IF NOT EXISTS events (
    tenant_id  String,
    message_id String,
    n          Int64,
    u          UInt64,
    f          Float64,
    flag       UInt8,
    ts         DateTime('UTC'),
    tags       Array(String),
    note       Nullable(String)
) ENGINE = ReplacingMergeTree ORDER BY (tenant_id, message_id)`

var eventCols = []string{"tenant_id", "message_id", "n", "u", "f", "flag", "ts", "tags", "note"}

func TestConformance(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, s chstore.Store) {
		ctx := t.Context()
		require.NoError(t, s.Exec(ctx, eventsDDL))
		require.NoError(t, s.Exec(ctx, eventsDDL), "DDL with IF NOT EXISTS is idempotent")

		ts := time.Date(2026, 11, 22, 10, 30, 15, 0, time.UTC)
		nasty := "it's a \\ \"quoted\" line\nwith tab\t and ? mark"
		rows := [][]any{
			{"acme", "m1", int64(-5), uint64(1) << 63, 1.5, uint8(1), ts, []string{"a", nasty, "]", "',"}, nil},
			{"acme", "m2", int64(9007199254740993), uint64(7), 0.25, uint8(0), ts.Add(time.Hour), []string{}, nasty + "\x00\r"},
			{"globex", "m1", int64(1), uint64(1), 2.0, uint8(1), ts, []string{"x"}, "g"},
		}
		require.NoError(t, s.Insert(ctx, "events", eventCols, rows))

		t.Run("typed reads", func(t *testing.T) {
			r, err := s.Query(ctx, "SELECT message_id, n, u, f, flag, ts, tags, note FROM events WHERE tenant_id = ? ORDER BY message_id", "acme")
			require.NoError(t, err)
			require.Equal(t, 2, r.Len())
			require.Equal(t, []string{"message_id", "n", "u", "f", "flag", "ts", "tags", "note"}, r.Columns())

			var (
				id    string
				n     int64
				u     uint64
				f     float64
				flag  bool
				gotTS time.Time
				tags  []string
				note  any
			)
			require.True(t, r.Next())
			require.NoError(t, r.Scan(&id, &n, &u, &f, &flag, &gotTS, &tags, &note))
			require.Equal(t, "m1", id)
			require.Equal(t, int64(-5), n)
			require.Equal(t, uint64(1)<<63, u, "UInt64 above 2^63 survives")
			require.Equal(t, 1.5, f)
			require.True(t, flag)
			require.True(t, ts.Equal(gotTS), "got %v", gotTS)
			require.Equal(t, []string{"a", nasty, "]", "',"}, tags, "array elements keep quotes, backslashes, tabs and newlines")
			require.Nil(t, note)

			require.True(t, r.Next())
			require.NoError(t, r.Scan(&id, &n, &u, &f, &flag, &gotTS, &tags, &note))
			require.Equal(t, int64(9007199254740993), n, "integers above 2^53 stay exact")
			require.Equal(t, nasty+"\x00\r", note, "strings are bytes: NUL and CR survive")
			require.Empty(t, tags)
			require.False(t, r.Next())
		})

		t.Run("bound parameters", func(t *testing.T) {
			count := func(q string, args ...any) uint64 {
				t.Helper()
				r, err := s.Query(ctx, q, args...)
				require.NoError(t, err)
				require.True(t, r.Next())
				var c uint64
				require.NoError(t, r.Scan(&c))
				return c
			}
			require.Equal(t, uint64(1), count("SELECT count() FROM events WHERE note = ?", nasty+"\x00\r"))
			require.Equal(t, uint64(2), count("SELECT count() FROM events WHERE ts >= ? AND ts < ?", ts, ts.Add(time.Minute)))
			require.Equal(t, uint64(3), count("SELECT count() FROM events WHERE ts >= ? AND ts < ?", time.Time{}, time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)),
				"times outside DateTime's range clamp to its ends on every engine")
			require.Equal(t, uint64(1), count("SELECT count() FROM events WHERE message_id IN ? AND tenant_id = ?", chstore.In{"m1", "zz"}, "acme"))
			require.Equal(t, uint64(0), count("SELECT count() FROM events WHERE message_id IN ?", chstore.In{}))
			// A long In (the embedded engine binds it as a table): every
			// value matches itself only, quotes, tabs and newlines too.
			// "zz\nm2" would match m2 if its newline split it.
			long := chstore.In{"m1", nasty, nasty + "\x00\r", "zz\nm2", "zz\tm2", "m2'"}
			for i := range 300 {
				long = append(long, fmt.Sprintf("other-%d", i))
			}
			require.Equal(t, uint64(1), count("SELECT count() FROM events WHERE message_id IN ? AND tenant_id = ?", long, "acme"))
			require.Equal(t, uint64(1), count("SELECT count() FROM events WHERE note IN ?", long), "the note with NUL and CR")
			require.Equal(t, uint64(1), count("SELECT count() FROM events WHERE message_id NOT IN ? AND tenant_id = ?", long, "acme"))
			require.Equal(t, uint64(2), count("SELECT count() FROM events WHERE has(?, message_id) AND tenant_id = ?", []string{"m1", "m2"}, "acme"))
			require.Equal(t, uint64(0), count("SELECT count() FROM events WHERE tenant_id = ?", "acme' OR 1=1 --"), "an injected quote stays inside the literal")
			require.Equal(t, uint64(3), count("SELECT count() FROM events WHERE note != '?' OR isNull(note)"), "a ? inside a literal is not a placeholder")

			_, err := s.Query(ctx, "SELECT ? + ?", 1)
			require.ErrorContains(t, err, "placeholders")
		})

		t.Run("dedup before merges", func(t *testing.T) {
			// A redelivered row: FINAL gives the same answer before and after a merge.
			require.NoError(t, s.Insert(ctx, "events", eventCols, rows[:1]))
			r, err := s.Query(ctx, "SELECT count() FROM events FINAL WHERE tenant_id = ?", "acme")
			require.NoError(t, err)
			require.True(t, r.Next())
			var c uint64
			require.NoError(t, r.Scan(&c))
			require.Equal(t, uint64(2), c)
		})

		t.Run("errors", func(t *testing.T) {
			require.Error(t, s.Exec(ctx, "SELEC 1"))
			err := s.Insert(ctx, "events", []string{"tenant_id"}, [][]any{{"a", "b"}})
			require.ErrorContains(t, err, "row 0 has 2 values")
			require.ErrorContains(t, s.Insert(ctx, "events; DROP TABLE x", eventCols, rows), "not a plain identifier")
			var i8 int8
			r, err := s.Query(ctx, "SELECT toUInt64(300)")
			require.NoError(t, err)
			require.True(t, r.Next())
			require.ErrorContains(t, r.Scan(&i8), "overflows")
		})

		t.Run("version", func(t *testing.T) {
			v := s.Version()
			require.True(t, v.AtLeast(chstore.Version{Major: 18, Minor: 16}), "version %v", v)
		})
	})
}

func TestMigrations(t *testing.T) {
	migs := fstest.MapFS{}
	for _, name := range []string{"0001_create_things.sql", "0002_add_note.sql", "0002_add_note@20.1.sql"} {
		b, err := os.ReadFile("testdata/migrations/" + name)
		require.NoError(t, err)
		migs[name] = &fstest.MapFile{Data: b}
	}
	testutil.ForEachEngine(t, func(t *testing.T, s chstore.Store) {
		ctx := t.Context()
		applied, err := chstore.Migrate(ctx, s, "things", migs)
		require.NoError(t, err)
		require.Len(t, applied, 2)

		again, err := chstore.Migrate(ctx, s, "things", migs)
		require.NoError(t, err)
		require.Empty(t, again, "applied migrations are not run twice")

		// Another component's migrations are tracked apart.
		other, err := chstore.Migrate(ctx, s, "other", fstest.MapFS{"0001_t.sql": {Data: []byte("CREATE TABLE IF NOT EXISTS other_t (a UInt8) ENGINE = MergeTree ORDER BY a")}})
		require.NoError(t, err)
		require.Len(t, other, 1)

		require.NoError(t, s.Insert(ctx, "things", []string{"tenant_id", "id", "name"}, [][]any{{"acme", uint64(1), "x"}}))
		r, err := s.Query(ctx, "SELECT note FROM things")
		require.NoError(t, err)
		require.True(t, r.Next())
		var note string
		require.NoError(t, r.Scan(&note))
		if s.Version().AtLeast(chstore.Version{Major: 20, Minor: 1}) {
			require.Equal(t, "new server", note)
		} else {
			require.Equal(t, "old server", note, "the 18.16 fallback is what runs there")
		}
	})
}

func TestLoadMigrationsRejects(t *testing.T) {
	_, err := chstore.LoadMigrations(fstest.MapFS{"create.sql": {}}, chstore.Version{Major: 26})
	require.ErrorContains(t, err, "NNNN_name.sql")
	_, err = chstore.LoadMigrations(fstest.MapFS{"0002_b.sql": {}}, chstore.Version{Major: 26})
	require.ErrorContains(t, err, "without gaps")
}

func TestSplitStatements(t *testing.T) {
	got, err := chstore.SplitStatements("-- head\nSELECT 'a;b';\n/* x; */ SELECT 2 ; -- tail only\n")
	require.NoError(t, err)
	require.Equal(t, []string{"-- head\nSELECT 'a;b'", "/* x; */ SELECT 2"}, got)
}

func TestBind(t *testing.T) {
	q, err := chstore.Bind("SELECT ?, ?, ?, `a?`, \"b?\" -- ?\n", "x'y", []string{"a", "b\\"}, time.Unix(100, 0))
	require.NoError(t, err)
	require.Equal(t, `SELECT 'x\'y', ['a','b\\'], toDateTime(100), `+"`a?`"+`, "b?" -- ?`+"\n", q)
	_, err = chstore.Bind("SELECT ?", struct{}{})
	require.ErrorContains(t, err, "unsupported type")
	require.True(t, strings.HasPrefix(chstore.DefaultLibPath(), "/"))
}

func TestConfigValidate(t *testing.T) {
	cfg := chstore.DefaultConfig()
	require.NoError(t, cfg.Validate())
	cfg.Engine = "sqlite"
	require.ErrorContains(t, cfg.Validate(), "clickhouse.engine")
	cfg = chstore.DefaultConfig()
	cfg.Database = "x; DROP"
	require.ErrorContains(t, cfg.Validate(), "clickhouse.database")
	cfg = chstore.DefaultConfig()
	cfg.Engine, cfg.Addr = chstore.EngineServer, nil
	require.ErrorContains(t, cfg.Validate(), "clickhouse.addr")
}

// TestInsertTypes inserts integer widths, Float32, Nullable, arrays of
// numbers and UUID text on both engines, which must agree.
func TestInsertTypes(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, s chstore.Store) {
		ctx := t.Context()
		require.NoError(t, s.Exec(ctx, `CREATE TABLE typed (
			i8 Int8, i16 Int16, i32 Int32, u16 UInt16, u32 UInt32, f32 Float32,
			ni Nullable(Int32), ai Array(Int64), au Array(UInt64), ts DateTime
		) ENGINE = MergeTree ORDER BY i8`))
		cols := []string{"i8", "i16", "i32", "u16", "u32", "f32", "ni", "ai", "au", "ts"}
		ts := time.Date(2026, 11, 22, 10, 30, 15, 0, time.UTC)
		require.NoError(t, s.Insert(ctx, "typed", cols, [][]any{
			{int8(-128), int16(-32768), int32(-2147483648), uint16(65535), uint32(4294967295), float32(1.5), nil, []int64{-1, 1 << 62}, []uint64{1 << 63}, ts},
			{int8(127), int16(32767), int32(7), uint16(0), uint32(0), float32(-0.25), int32(-9), []int64{}, []uint64{}, ts},
		}))
		r, err := s.Query(ctx, "SELECT toString(i8), toString(i16), toString(i32), toString(u16), toString(u32), toString(f32), ifNull(toString(ni), 'NULL'), toString(ai), toString(au), toUnixTimestamp(ts) FROM typed ORDER BY i8")
		require.NoError(t, err)
		var got [][]string
		for r.Next() {
			row := make([]string, 9)
			var unix uint64
			require.NoError(t, r.Scan(&row[0], &row[1], &row[2], &row[3], &row[4], &row[5], &row[6], &row[7], &row[8], &unix))
			require.Equal(t, uint64(ts.Unix()), unix)
			got = append(got, row)
		}
		require.Equal(t, [][]string{
			{"-128", "-32768", "-2147483648", "65535", "4294967295", "1.5", "NULL", "[-1,4611686018427387904]", "[9223372036854775808]"},
			{"127", "32767", "7", "0", "0", "-0.25", "-9", "[]", "[]"},
		}, got)

		require.NoError(t, s.Exec(ctx, "CREATE TABLE ids (id UUID, name String) ENGINE = MergeTree ORDER BY name"))
		require.NoError(t, s.Insert(ctx, "ids", []string{"id", "name"}, [][]any{{"61f0c404-5cb3-11e7-907b-a6006ad3dba0", "it's"}}))
		r, err = s.Query(ctx, "SELECT toString(id), name FROM ids")
		require.NoError(t, err)
		require.True(t, r.Next())
		var id, name string
		require.NoError(t, r.Scan(&id, &name))
		require.Equal(t, "61f0c404-5cb3-11e7-907b-a6006ad3dba0", id)
		require.Equal(t, "it's", name)
	})
}

// chDB reads inline INSERT data only up to the first empty line (its
// multi-query parsing), so a one-column row holding an empty string used to
// end inline text data there. Inserts go through a RowBinary file now, and
// both engines store every row.
func TestInsertEmptySingleColumnRow(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, s chstore.Store) {
		ctx := t.Context()
		require.NoError(t, s.Exec(ctx, "CREATE TABLE names (name String) ENGINE = MergeTree ORDER BY name"))
		require.NoError(t, s.Insert(ctx, "names", []string{"name"}, [][]any{{"a"}, {""}, {"b"}, {"\n\n"}}))
		r, err := s.Query(ctx, "SELECT count(), countIf(name = '') FROM names")
		require.NoError(t, err)
		require.True(t, r.Next())
		var n, empty uint64
		require.NoError(t, r.Scan(&n, &empty))
		require.Equal(t, uint64(4), n)
		require.Equal(t, uint64(1), empty)
	})
}

// A value that doesn't fit its column is an error naming the row and the
// column, on both engines, and nothing of the insert is stored.
func TestInsertRefusesValuesThatDontFit(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, s chstore.Store) {
		ctx := t.Context()
		require.NoError(t, s.Exec(ctx, "CREATE TABLE small (k String, n UInt8) ENGINE = MergeTree ORDER BY k"))
		err := s.Insert(ctx, "small", []string{"k", "n"}, [][]any{{"a", uint8(1)}, {"b", 300}})
		require.Error(t, err)
		r, qerr := s.Query(ctx, "SELECT count() FROM small")
		require.NoError(t, qerr)
		require.True(t, r.Next())
		var n uint64
		require.NoError(t, r.Scan(&n))
		require.Zero(t, n)
		require.Error(t, s.Insert(ctx, "small", []string{"k", "missing"}, [][]any{{"a", 1}}), "an unknown column")
	})
}

// A long statement holds one connection of the pool; a read on another
// answers meanwhile. (The embedded engine used to run every statement
// behind one lock, so an insert of tens of megabytes stalled every read.)
func TestReadWhileAnotherStatementRuns(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, s chstore.Store) {
		ctx := t.Context()
		slow := make(chan error, 1)
		started := time.Now()
		go func() { slow <- s.Exec(ctx, "SELECT sleep(2)") }()
		require.Eventually(t, func() bool { return runningQueries(t, s, "sleep(2)") > 0 }, 5*time.Second, 5*time.Millisecond)
		readAt := time.Now()
		r, err := s.Query(ctx, "SELECT 41 + 1")
		require.NoError(t, err)
		require.Less(t, time.Since(readAt), time.Second, "the read waited for the slow statement")
		require.True(t, r.Next())
		require.NoError(t, <-slow)
		require.GreaterOrEqual(t, time.Since(started), 2*time.Second)
	})
}

// runningQueries counts statements in flight whose text contains frag.
func runningQueries(t *testing.T, s chstore.Store, frag string) int {
	r, err := s.Query(t.Context(), "SELECT count() FROM system.processes WHERE query LIKE ? AND query NOT LIKE '%system.processes%'", "%"+frag+"%")
	require.NoError(t, err)
	require.True(t, r.Next())
	var n uint64
	require.NoError(t, r.Scan(&n))
	return int(n)
}

// When every connection is busy, a call waits for one, and its context
// ends the wait.
func TestWaitForAConnectionEndsWithTheContext(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, s chstore.Store) {
		ctx := t.Context()
		size := chstore.DefaultConfig().PoolSize
		done := make(chan error, size)
		for range size {
			go func() { done <- s.Exec(ctx, "SELECT sleep(2)") }()
		}
		require.Eventually(t, func() bool {
			qctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			_, err := s.Query(qctx, "SELECT 1")
			return errors.Is(err, context.DeadlineExceeded)
		}, 5*time.Second, 10*time.Millisecond, "with %d statements running, a call must wait and give up with its context", size)
		for range size {
			require.NoError(t, <-done)
		}
		_, err := s.Query(ctx, "SELECT 1")
		require.NoError(t, err, "connections come back to the pool")
	})
}

// typedRows writes rows through the typed RowWriter methods.
type typedRows []struct {
	name string
	at   time.Time
	ms   uint16
	n    uint64
	note any
}

func (r typedRows) Len() int { return len(r) }

func (r typedRows) WriteRow(i int, w chstore.RowWriter) {
	w.String(r[i].name)
	w.Time(r[i].at)
	w.UInt16(r[i].ms)
	w.UInt64(r[i].n)
	w.Value(r[i].note)
}

// InsertFrom stores the same rows as Insert on both engines, and refuses a
// typed value its column can't hold.
func TestInsertFromTypedRows(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, s chstore.Store) {
		ctx := t.Context()
		require.NoError(t, s.Exec(ctx, `CREATE TABLE typed_rows (name String, at DateTime('UTC'), ms UInt16, n UInt64,
			note Nullable(String)) ENGINE = MergeTree ORDER BY name`))
		cols := []string{"name", "at", "ms", "n", "note"}
		at := time.Date(2026, 11, 22, 10, 30, 15, 0, time.UTC)
		rows := typedRows{{"a\\tb\\n", at, 999, 1 << 63, nil}, {"", at.Add(time.Hour), 0, 7, "x"}}
		require.NoError(t, s.InsertFrom(ctx, "typed_rows", cols, rows))
		r, err := s.Query(ctx, "SELECT name, at, ms, n, note FROM typed_rows ORDER BY n")
		require.NoError(t, err)
		var name string
		var gotAt time.Time
		var ms, n uint64
		var note any
		require.True(t, r.Next())
		require.NoError(t, r.Scan(&name, &gotAt, &ms, &n, &note))
		require.Equal(t, "", name)
		require.Equal(t, "x", note)
		require.True(t, r.Next())
		require.NoError(t, r.Scan(&name, &gotAt, &ms, &n, &note))
		require.Equal(t, []any{"a\\tb\\n", uint64(999), uint64(1) << 63, nil}, []any{name, ms, n, note})
		require.True(t, at.Equal(gotAt))

		err = s.InsertFrom(ctx, "typed_rows", []string{"ms", "name", "at", "n", "note"}, rows) // columns in another order
		if s.Engine() == chstore.EngineEmbedded {
			require.ErrorContains(t, err, "can't be written with String")
		} else {
			require.Error(t, err)
		}
	})
}

// An insert larger than the embedded engine's spool chunk (4 MiB), with a
// row larger than a chunk among them, stores every row whole and in order
// on both engines.
func TestInsertLargerThanASpoolChunk(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, s chstore.Store) {
		ctx := t.Context()
		require.NoError(t, s.Exec(ctx, `CREATE TABLE big_rows (n UInt64, body String) ENGINE = MergeTree ORDER BY n`))
		const rows = 3000
		var in [][]any
		sums := make([]string, rows)
		for i := range rows {
			size := 3000 + i%1000 // about 10 MiB in all: three chunks
			if i == 1500 {
				size = 5 << 20 // one row of 5 MiB, more than a chunk
			}
			body := strings.Repeat(string(rune('a'+i%26)), size) + fmt.Sprint(i)
			sum := md5.Sum([]byte(body))
			sums[i] = strings.ToUpper(hex.EncodeToString(sum[:]))
			in = append(in, []any{uint64(i), body})
		}
		require.NoError(t, s.Insert(ctx, "big_rows", []string{"n", "body"}, in))
		r, err := s.Query(ctx, `SELECT n, hex(MD5(body)) FROM big_rows ORDER BY n`)
		require.NoError(t, err)
		got := make([]string, 0, rows)
		for r.Next() {
			var n uint64
			var sum string
			require.NoError(t, r.Scan(&n, &sum))
			require.Equal(t, uint64(len(got)), n)
			got = append(got, sum)
		}
		require.Equal(t, sums, got)
	})
}

// A result of every type Stickpoint reads comes back as the same canonical
// values on both engines (the embedded engine decodes RowBinary; a type
// its decoder lacks, like an Enum, is read as JSON instead).
func TestResultTypes(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, s chstore.Store) {
		ctx := t.Context()
		read := func(q string) []any {
			t.Helper()
			r, err := s.Query(ctx, q)
			require.NoError(t, err)
			require.True(t, r.Next())
			return r.Values()
		}
		at := time.Date(2026, 11, 22, 10, 30, 15, 0, time.UTC)
		got := read(`SELECT toInt8(-8), toInt16(-16), toInt32(-32), toInt64(-9007199254740993), toUInt8(255), toUInt16(65535),
			toUInt32(4294967295), toUInt64('18446744073709551615'), toFloat32(1.5), toFloat64(-2.25), 'it''s\n\0', toFixedString('ab', 2),
			toUUID('61f0c404-5cb3-11e7-907b-a6006ad3dba0'), toDate('2026-11-22'), toDateTime('2026-11-22 10:30:15', 'UTC'),
			[toUInt16(1), 2, 3], ['a', ''], CAST(NULL AS Nullable(String)), CAST('x' AS Nullable(String)), toDateTime(0, 'UTC'), emptyArrayString()`)
		want := []any{int64(-8), int64(-16), int64(-32), int64(-9007199254740993), uint64(255), uint64(65535),
			uint64(4294967295), uint64(math.MaxUint64), 1.5, -2.25, "it's\n\x00", "ab",
			"61f0c404-5cb3-11e7-907b-a6006ad3dba0", time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC), at,
			[]any{uint64(1), uint64(2), uint64(3)}, []any{"a", ""}, nil, "x", time.Unix(0, 0).UTC(), []any{}}
		require.Len(t, got, len(want))
		for i := range want {
			if w, ok := want[i].(time.Time); ok {
				require.True(t, w.Equal(got[i].(time.Time)), "column %d: got %v, want %v", i, got[i], w)
				continue
			}
			require.Equal(t, want[i], got[i], "column %d", i)
		}
		r, err := s.Query(ctx, `SELECT 1 WHERE 0`)
		require.NoError(t, err)
		require.Equal(t, 0, r.Len(), "an empty result")

		if !s.Version().AtLeast(chstore.Version{Major: 21, Minor: 1}) {
			return // 18.16 has no DateTime64, Bool or Date32
		}
		got = read(`SELECT toDateTime64('2026-11-22 10:30:15.123', 3, 'UTC'), toDateTime64('1969-12-31 23:59:59.5', 1, 'UTC'),
			true, toDate32('1950-01-02'), CAST(toLowCardinality('lc') AS LowCardinality(Nullable(String)))`)
		require.True(t, at.Add(123*time.Millisecond).Equal(got[0].(time.Time)), "DateTime64: %v", got[0])
		require.True(t, time.Date(1969, 12, 31, 23, 59, 59, 5e8, time.UTC).Equal(got[1].(time.Time)), "DateTime64 before 1970: %v", got[1])
		require.Equal(t, []any{true, "lc"}, []any{got[2], got[4]})
		require.True(t, time.Date(1950, 1, 2, 0, 0, 0, 0, time.UTC).Equal(got[3].(time.Time)), "Date32: %v", got[3])
		got = read(`SELECT CAST('b' AS Enum8('a' = 1, 'b' = 2)), 7`)
		require.Equal(t, []any{"b", uint64(7)}, got, "an Enum, read as JSON")
	})
}

// Strings reads a one-column result of strings, and refuses another type.
func TestRowsStrings(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, s chstore.Store) {
		r, err := s.Query(t.Context(), `SELECT concat('acc-', toString(number)) FROM numbers(3) ORDER BY number`)
		require.NoError(t, err)
		ids, err := r.Strings()
		require.NoError(t, err)
		require.Equal(t, []string{"acc-0", "acc-1", "acc-2"}, ids)

		r, err = s.Query(t.Context(), `SELECT toString(number) FROM numbers(3) WHERE number > 5`)
		require.NoError(t, err)
		ids, err = r.Strings()
		require.NoError(t, err)
		require.Empty(t, ids)

		r, err = s.Query(t.Context(), `SELECT number FROM numbers(2)`)
		require.NoError(t, err)
		_, err = r.Strings()
		require.Error(t, err)
	})
}
