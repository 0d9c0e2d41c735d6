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
			stored := func(ctx context.Context) (uint64, error) {
				r, err := f.db.Query(ctx, "SELECT uniqExact(message_id) FROM events WHERE tenant_id = 'tenant-a'")
				if err != nil {
					return 0, err
				}
				var n uint64
				if r.Next() {
					err = r.Scan(&n)
				}
				return n, err
			}
			var full, half loadgen.Result
			for range b.N {
				base, err := stored(b.Context())
				if err != nil {
					b.Fatal(err)
				}
				since := func(ctx context.Context) (uint64, error) { n, err := stored(ctx); return n - base, err }
				full, err = loadgen.Run(b.Context(), loadgen.Options{URL: f.url, WriteKey: f.keyA, Concurrency: 8, Batch: 500,
					Duration: duration, Stored: since})
				if err != nil {
					b.Fatal(err)
				}
				b.Logf("%s flat out: %s", engine, full)
				if base, err = stored(b.Context()); err != nil {
					b.Fatal(err)
				}
				half, err = loadgen.Run(b.Context(), loadgen.Options{URL: f.url, WriteKey: f.keyA, Concurrency: 8, Batch: 500,
					Duration: duration, Rate: full.StoredPerSec / 2, Stored: since})
				if err != nil {
					b.Fatal(err)
				}
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
