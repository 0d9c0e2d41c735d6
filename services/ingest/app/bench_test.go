package app_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	"github.com/stickpoint/stickpoint/services/ingest/app"
	"github.com/stickpoint/stickpoint/services/ingest/loadgen"
)

// BenchmarkIngestEndToEnd posts /v1/batch requests to the in-process ingest
// (embedded NATS, each ClickHouse engine) until every accepted event is in
// ClickHouse: first flat out, then at half the stored rate, while a reader
// asks for one account's latest events (what the account APIs do). Shapes:
// 500-event batches from 8 clients, 100-event batches from 16, and single
// events from 64; each with JetStream fsyncing every write
// (nats.sync_always, the durability of a database that fsyncs before it
// answers) and with the default fsync once a second.
// STICKPOINT_BENCH_DURATION sets each run's length (default 10s; make
// bench-smoke uses 1s).
func BenchmarkIngestEndToEnd(b *testing.B) {
	duration := testutil.BenchDuration(10 * time.Second)
	shapes := []struct {
		name               string
		batch, concurrency int
	}{{"batch500-c8", 500, 8}, {"batch100-c16", 100, 16}, {"single-c64", 1, 64}}
	for _, engine := range testutil.Engines {
		for _, sync := range []string{"fsync-always", "fsync-1s"} {
			for _, shape := range shapes {
				b.Run(engine+"/"+sync+"/"+shape.name, func(b *testing.B) {
					benchIngest(b, engine, sync == "fsync-always", shape.batch, shape.concurrency, duration)
				})
			}
		}
	}
}

func benchIngest(b *testing.B, engine string, syncAlways bool, batch, concurrency int, duration time.Duration) {
	// The writer batches as in production: the fixture's short wait, there
	// for the tests' speed, would make small requests cost many more inserts.
	f := newFixture(b, engine, func(c *app.Config) { c.HTTP.RatePerSecond, c.Writer.MaxWait = 0, app.DefaultConfig().Writer.MaxWait },
		func(c *natsjs.Config) { c.SyncAlways = syncAlways })
	// Drain is detected by the table's row count, which ClickHouse answers
	// from part metadata (only this benchmark writes to its database): an
	// exact distinct count over millions of rows, polled while draining,
	// would take CPU from the writer being measured. Each run is then
	// checked exactly: every accepted event stored.
	const rows, distinct = "SELECT count() FROM events", "SELECT uniqExact(message_id) FROM events WHERE tenant_id = 'tenant-a'"
	count := func(ctx context.Context, query string) (uint64, error) {
		r, err := f.db.Query(ctx, query)
		if err != nil {
			return 0, err
		}
		var n uint64
		if r.Next() {
			err = r.Scan(&n)
		}
		return n, err
	}
	run := func(rate float64) loadgen.Result {
		baseRows, err := count(b.Context(), rows)
		if err != nil {
			b.Fatal(err)
		}
		baseDistinct, err := count(b.Context(), distinct)
		if err != nil {
			b.Fatal(err)
		}
		res, err := loadgen.Run(b.Context(), loadgen.Options{URL: f.url, WriteKey: f.keyA, Concurrency: concurrency, Batch: batch,
			Duration: duration, Rate: rate, Stored: func(ctx context.Context) (uint64, error) {
				n, err := count(ctx, rows)
				return n - baseRows, err
			}})
		if err != nil {
			b.Fatal(err)
		}
		stored, err := count(b.Context(), distinct)
		if err != nil {
			b.Fatal(err)
		}
		if got := stored - baseDistinct; got != res.Accepted {
			b.Fatalf("accepted %d events but %d distinct messageIds are stored", res.Accepted, got)
		}
		return res
	}
	var full, half loadgen.Result
	var reads []time.Duration
	var cpuPerEvent time.Duration
	for range b.N {
		cpu0 := processCPU()
		full = run(0)
		cpuPerEvent = (processCPU() - cpu0) / time.Duration(max(full.Accepted, 1))
		b.Logf("flat out: %s; process CPU %s per event", full, cpuPerEvent)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { reads = readLoop(b, f, stop) })
		half = run(full.StoredPerSec / 2)
		close(stop)
		wg.Wait()
		b.Logf("at half: %s; %d account reads", half, len(reads))
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	b.ReportMetric(full.EventsPerSec, "accepted-events/s")
	b.ReportMetric(full.StoredPerSec, "e2e-rows/s")
	b.ReportMetric(ms(full.P99), "p99-ms-flat-out")
	b.ReportMetric(float64(cpuPerEvent.Nanoseconds())/1000, "cpu-us/event-flat-out")
	b.ReportMetric(ms(half.P50), "p50-ms-at-half")
	b.ReportMetric(ms(half.P99), "p99-ms-at-half")
	if len(reads) > 0 {
		b.ReportMetric(ms(reads[len(reads)*99/100]), "read-p99-ms-at-half")
	}
	b.ReportMetric(float64(ru.Maxrss)/1024, "peak-rss-MB")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// processCPU is the CPU time this process has used, user and system, in
// every thread (chDB's included). Per event it is steadier than events/s
// on a shared machine: a busy neighbour slows a run, but the work each
// event costs stays about the same. It counts the load generator too, and
// not a ClickHouse server's own CPU (the server engine).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// readQuery is one account's latest 50 events. Each messageId is stored
// once, so it needs no dedup, and it reads the sort key's end in order.
// Single-threaded: on two cores, a small read that doesn't wait for a
// second pipeline thread beside the writer's inserts has the lower p99
// (measured 50 ms against 71 ms).
const readQuery = `SELECT message_id, name, timestamp FROM events WHERE tenant_id = ? AND account_id = ?
	ORDER BY timestamp DESC LIMIT 50 SETTINGS max_threads = 1`

// readLoop asks for one account's latest 50 events every 10 ms, as the
// account APIs will, until stop; it returns the latencies, sorted.
func readLoop(b *testing.B, f *fixture, stop <-chan struct{}) []time.Duration {
	var lat []time.Duration
	for i := 0; ; i++ {
		select {
		case <-stop:
			slices.Sort(lat)
			return lat
		case <-time.After(10 * time.Millisecond):
		}
		start := time.Now()
		r, err := f.db.Query(b.Context(), readQuery, "tenant-a", fmt.Sprintf("acct-%d", i%500))
		if err != nil {
			b.Error(err)
			continue
		}
		_ = r.Len()
		lat = append(lat, time.Since(start))
	}
}

// BenchmarkWriterDrain measures the writer alone: it fills the EVENTS
// stream with 100-event requests (STICKPOINT_BENCH_DURATION of them, the
// writer off), then starts the writer and times until every event is in
// ClickHouse, on each engine.
func BenchmarkWriterDrain(b *testing.B) {
	duration := testutil.BenchDuration(8 * time.Second)
	for _, engine := range testutil.Engines {
		b.Run(engine, func(b *testing.B) {
			var rate float64
			for range b.N {
				f := newFixture(b, engine, func(c *app.Config) { c.HTTP.RatePerSecond, c.Writer.Enabled = 0, false })
				res, err := loadgen.Run(b.Context(), loadgen.Options{URL: f.url, WriteKey: f.keyA, Concurrency: 8, Batch: 100, Duration: duration})
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				stop := startWriter(b, f)
				for f.rawRows(b, "tenant-a") < res.Accepted { // from part metadata: cheap to poll
					time.Sleep(100 * time.Millisecond)
				}
				elapsed := time.Since(start)
				stop()
				rate = float64(res.Accepted) / elapsed.Seconds()
				b.Logf("%d events queued at %.0f/s; the writer stored them in %s: %.0f/s", res.Accepted, res.EventsPerSec, elapsed.Round(time.Millisecond), rate)
			}
			b.ReportMetric(rate, "stored-events/s")
		})
	}
}
