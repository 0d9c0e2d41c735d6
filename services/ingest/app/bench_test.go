package app_test

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stickpoint/stickpoint/pkg/testutil"
	"github.com/stickpoint/stickpoint/services/ingest/app"
	"github.com/stickpoint/stickpoint/services/ingest/loadgen"
)

// BenchmarkIngestEndToEnd posts /v1/batch requests to the in-process ingest
// (embedded NATS, each ClickHouse engine) until every accepted event is in
// ClickHouse. It first runs flat out, then at half that rate for latency.
// STICKPOINT_BENCH_DURATION sets each run's length (default 10s; make
// bench-smoke uses 1s).
func BenchmarkIngestEndToEnd(b *testing.B) {
	duration := 10 * time.Second
	if d, err := time.ParseDuration(os.Getenv("STICKPOINT_BENCH_DURATION")); err == nil {
		duration = d
	}
	for _, engine := range testutil.Engines {
		b.Run(engine, func(b *testing.B) {
			f := newFixture(b, engine, func(c *app.Config) { c.HTTP.RatePerSecond = 0 })
			// Drain is detected by the table's row count, which ClickHouse
			// answers from part metadata (only this benchmark writes to its
			// database): an exact distinct count over millions of rows,
			// polled while draining, would take CPU from the writer being
			// measured. Each run is then checked exactly: every accepted
			// event stored.
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
				res, err := loadgen.Run(b.Context(), loadgen.Options{URL: f.url, WriteKey: f.keyA, Concurrency: 8, Batch: 500,
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
			for range b.N {
				full = run(0)
				b.Logf("%s flat out: %s", engine, full)
				half = run(full.StoredPerSec / 2)
				b.Logf("%s at half: %s", engine, half)
			}
			var ru syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
			b.ReportMetric(full.EventsPerSec, "accepted-events/s")
			b.ReportMetric(full.StoredPerSec, "e2e-rows/s")
			b.ReportMetric(float64(full.P99.Microseconds())/1000, "p99-ms-flat-out")
			b.ReportMetric(float64(half.P50.Microseconds())/1000, "p50-ms-at-half")
			b.ReportMetric(float64(half.P99.Microseconds())/1000, "p99-ms-at-half")
			b.ReportMetric(float64(ru.Maxrss)/1024, "peak-rss-MB")
		})
	}
}
