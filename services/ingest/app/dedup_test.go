package app_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	"github.com/stickpoint/stickpoint/services/ingest/app"
)

// count is what stickpoint events count answers: distinct messageIds.
func (f *fixture) count(t *testing.T, tenant, where string, args ...any) uint64 {
	t.Helper()
	r, err := f.db.Query(t.Context(), "SELECT uniqExact(message_id) FROM events WHERE tenant_id = ? AND "+where, append([]any{tenant}, args...)...)
	require.NoError(t, err)
	require.True(t, r.Next())
	var n uint64
	require.NoError(t, r.Scan(&n))
	return n
}

// streamLastSeq is the EVENTS stream's last sequence: it moves when
// JetStream takes a message rather than dropping it as a duplicate.
func (f *fixture) streamLastSeq(t *testing.T) uint64 {
	t.Helper()
	s, err := f.bus.JS.Stream(t.Context(), natsjs.EventsStream)
	require.NoError(t, err)
	info, err := s.Info(t.Context())
	require.NoError(t, err)
	return info.State.LastSeq
}

// The scenario the dedup horizon fixes: u9 is in alpha-co when it tracks
// LateDup, then moves to beta-co; the same track sent again after
// JetStream's duplicate window is a new stream message, and used to be
// stored a second time under beta-co.
func TestRetryAfterTheDuplicateWindowIsStoredOnce(t *testing.T) {
	for _, engine := range testutil.Engines {
		t.Run(engine, func(t *testing.T) {
			f := newFixture(t, engine, nil, func(c *natsjs.Config) { c.DuplicateWindow = time.Second })
			t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
			at := func(d time.Duration) string { return t0.Add(d).Format(time.RFC3339) }
			for _, call := range []struct{ path, body string }{
				{"/v1/group", `{"userId":"u9","groupId":"alpha-co","messageId":"g-alpha","timestamp":"` + at(0) + `"}`},
				{"/v1/track", `{"userId":"u9","event":"LateDup","messageId":"m-late-9","timestamp":"` + at(time.Minute) + `"}`},
				{"/v1/group", `{"userId":"u9","groupId":"beta-co","messageId":"g-beta","timestamp":"` + at(2*time.Minute) + `"}`},
			} {
				resp, body := f.post(t, call.path, f.keyA, call.body)
				require.Equal(t, 200, resp.StatusCode, body)
			}
			f.waitStored(t, "tenant-a", 3)

			// The same request, byte for byte, once JetStream no longer
			// remembers its dedup id: it becomes a new stream message.
			retry := `{"userId":"u9","event":"LateDup","messageId":"m-late-9","timestamp":"` + at(time.Minute) + `"}`
			before := f.streamLastSeq(t)
			require.Eventually(t, func() bool {
				resp, body := f.post(t, "/v1/track", f.keyA, retry)
				require.Equal(t, 200, resp.StatusCode, body)
				return f.streamLastSeq(t) > before
			}, 10*time.Second, 100*time.Millisecond, "the retry outlives JetStream's 1 s window")
			f.waitHandled(t)

			require.Equal(t, uint64(1), f.count(t, "tenant-a", "name = 'LateDup' AND account_id = 'alpha-co'"))
			require.Equal(t, uint64(0), f.count(t, "tenant-a", "name = 'LateDup' AND account_id = 'beta-co'"))
			require.Equal(t, uint64(3), f.rawRows(t, "tenant-a"), "no second row")
		})
	}
}

// waitHandled waits until the writer has acked everything in the stream:
// the EVENTS work queue is empty.
func (f *fixture) waitHandled(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		s, err := f.bus.JS.Stream(t.Context(), natsjs.EventsStream)
		require.NoError(t, err)
		info, err := s.Info(t.Context())
		require.NoError(t, err)
		return info.State.Msgs == 0
	}, 20*time.Second, 20*time.Millisecond, "the writer handles every message")
}

// Retries re-batched (browser SDKs re-batch queued events) and re-timed (a
// new sentAt moves the skew-corrected timestamp) store nothing again, and
// the raw rows per account and per day, with FINAL, are the distinct
// messageIds.
func TestRetriesInOtherBatchesAndTimesAreStoredOnce(t *testing.T) {
	for _, engine := range testutil.Engines {
		t.Run(engine, func(t *testing.T) {
			f := newFixture(t, engine, nil)
			day := time.Now().UTC().Truncate(24 * time.Hour).Add(-3 * 24 * time.Hour)
			call := func(id string, acct, sentAt int) string {
				ts := day.Add(time.Duration(acct%3)*24*time.Hour + 10*time.Hour)
				return fmt.Sprintf(`{"type":"track","event":"Report Built","userId":"u%d","messageId":%q,"timestamp":%q,"sentAt":%q,"context":{"groupId":"acct-%d"}}`,
					acct, id, ts.Format(time.RFC3339), ts.Add(time.Duration(sentAt)*time.Second).Format(time.RFC3339), acct)
			}
			batch := func(calls ...string) string { return `{"batch":[` + strings.Join(calls, ",") + `]}` }
			var sends []string
			for i := range 12 { // 12 events over 3 accounts and 3 days
				sends = append(sends, call(fmt.Sprintf("e%d", i), i, 1))
			}
			// As sent first, in batches of 4.
			for i := 0; i < 12; i += 4 {
				sends = append(sends, batch(sends[i:i+4]...))
			}
			for _, b := range sends[12:] {
				resp, body := f.post(t, "/v1/batch", f.keyA, b)
				require.Equal(t, 200, resp.StatusCode, body)
			}
			f.waitStored(t, "tenant-a", 12)
			// Retries: other compositions, new sentAt (5 s of skew instead
			// of 1), a NUL inside a messageId, and duplicates inside one batch.
			for _, b := range []string{
				batch(call("e1", 1, 5), call("e6", 6, 5)),
				batch(call("e11", 11, 9), call("e0", 0, 2), call("e0", 0, 3), call("new-a", 0, 1)),
				// ["new","ok"] then ["new\x00ok"]: once the same JetStream dedup id.
				batch(call("new", 1, 1), call("ok", 1, 1)),
				batch(call("new<NUL>ok", 1, 1)),
			} {
				resp, body := f.post(t, "/v1/batch", f.keyA, strings.ReplaceAll(b, "<NUL>", `\u0000`))
				require.Equal(t, 200, resp.StatusCode, body)
			}
			f.waitStored(t, "tenant-a", 16)
			f.waitHandled(t)

			r, err := f.db.Query(t.Context(), `SELECT account_id, toDate(timestamp) AS d, count(), uniqExact(message_id)
				FROM events FINAL WHERE tenant_id = ? GROUP BY account_id, d ORDER BY account_id, d`, "tenant-a")
			require.NoError(t, err)
			total := uint64(0)
			for r.Next() {
				var acct string
				var d time.Time
				var rows, distinct uint64
				require.NoError(t, r.Scan(&acct, &d, &rows, &distinct))
				require.Equal(t, distinct, rows, "account %s on %s", acct, d.Format(time.DateOnly))
				total += rows
			}
			require.Equal(t, uint64(16), total)
			require.Equal(t, uint64(16), f.rawRows(t, "tenant-a"), "not even an unmerged duplicate row")

			// The stored copy is the first: its timestamp is 1 s before the
			// receive time, not 5 s.
			var ts, received time.Time
			r, err = f.db.Query(t.Context(), "SELECT timestamp, received_at FROM events WHERE tenant_id = ? AND message_id = 'e1'", "tenant-a")
			require.NoError(t, err)
			require.True(t, r.Next())
			require.NoError(t, r.Scan(&ts, &received))
			require.WithinDuration(t, received.Add(-time.Second), ts, time.Second)
		})
	}
}

// A writer that restarts (a new process, the same ClickHouse and NATS)
// remembers what was stored: its dedup filter loads from message_ids.
func TestDedupSurvivesAWriterRestart(t *testing.T) {
	for _, engine := range testutil.Engines {
		t.Run(engine, func(t *testing.T) {
			f := newFixture(t, engine, func(c *app.Config) { c.Writer.Enabled = false })
			stop := startWriter(t, f)
			resp, body := f.post(t, "/v1/batch", f.keyA, batchBody("r1", "r2", "r3"))
			require.Equal(t, 200, resp.StatusCode, body)
			f.waitStored(t, "tenant-a", 3)
			stop()

			stop = startWriter(t, f)
			defer stop()
			resp, body = f.post(t, "/v1/batch", f.keyA, batchBody("r3", "r2", "r4")) // another composition: a new stream message
			require.Equal(t, 200, resp.StatusCode, body)
			f.waitStored(t, "tenant-a", 4)
			f.waitHandled(t)
			require.Equal(t, uint64(4), f.rawRows(t, "tenant-a"))
		})
	}
}

// startWriter runs a writer-only ingest service over f's store and bus, as
// a separate writer process would, until the returned stop is called.
func startWriter(t testing.TB, f *fixture) (stop func()) {
	t.Helper()
	return startWriterWith(t, f, nil)
}

func startWriterWith(t testing.TB, f *fixture, mutate func(*app.Config)) (stop func()) {
	t.Helper()
	cfg := app.DefaultConfig()
	cfg.Writer.MaxWait = 20 * time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	reg, err := tenancy.Open(t.Context(), f.bus, testutil.Logger(t))
	require.NoError(t, err)
	svc, err := app.New(cfg, f.bus, f.db, reg, testutil.Logger(t))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = svc.Run(ctx) })
	require.Eventually(t, func() bool { return svc.Ready(t.Context()) == nil }, 20*time.Second, 10*time.Millisecond)
	f.writerService = svc
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait(); reg.Close() }) }
	t.Cleanup(stop)
	return stop
}
