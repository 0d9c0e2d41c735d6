package scorer

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stickpoint/stickpoint/pkg/testutil"
)

// benchScale reads STICKPOINT_BENCH_EVENTS and STICKPOINT_BENCH_ACCOUNTS:
// by default the target's 100 million events in 100,000 accounts (make
// bench-smoke passes a small scale).
func benchScale() (events, accounts int) {
	events, accounts = 100_000_000, 100_000
	if n, err := strconv.Atoi(os.Getenv("STICKPOINT_BENCH_EVENTS")); err == nil && n > 0 {
		events = n
	}
	if n, err := strconv.Atoi(os.Getenv("STICKPOINT_BENCH_ACCOUNTS")); err == nil && n > 0 {
		accounts = n
	}
	return events, accounts
}

// BenchmarkFullRecompute builds the rollups of a tenant's events from
// scratch (reported apart), scores every account (target: 100,000
// accounts over 100 million events in under 30 s), then sweeps them all
// from the rollups a day later.
// The events are spread evenly over 90 days and 20 names, 4 of them key
// features; none is a cancel-intent signal (real ones are rare; here one
// name would be 5% of all events).
func BenchmarkFullRecompute(b *testing.B) {
	events, accounts := benchScale()
	names := []string{"Report Built", "Dashboard Shared", "Alert Created", "Source Connected"}
	for i := len(names); i < 20; i++ {
		names = append(names, fmt.Sprintf("Other %d", i))
	}
	for _, engine := range testutil.Engines {
		b.Run(engine, func(b *testing.B) {
			db := testutil.Store(b, engine)
			e := newEnv(b, db)
			e.putModel("bench", testModel)
			began := time.Now()
			testutil.GenerateEvents(b, db, "bench", events, accounts, e.now.Add(-90*day), e.now, names)
			b.Logf("generated %d events in %d accounts in %s", events, accounts, time.Since(began).Round(time.Millisecond))
			var rebuild, scoring, sweep time.Duration
			for b.Loop() {
				for _, table := range []string{"account_day_usage", "account_health", "health_history"} {
					if err := db.Exec(b.Context(), "TRUNCATE TABLE "+table); err != nil {
						b.Fatal(err)
					}
				}
				began := time.Now()
				if err := e.sc.RebuildAll(b.Context(), "bench"); err != nil {
					b.Fatal(err)
				}
				rebuild = time.Since(began)
				e.sc.trace = map[string]time.Duration{}
				began = time.Now()
				r, err := e.sc.ScoreAll(b.Context(), "bench", "bench")
				if err != nil {
					b.Fatal(err)
				}
				scoring = time.Since(began)
				if r.Accounts != accounts {
					b.Fatalf("scored %d accounts, want %d", r.Accounts, accounts)
				}
				e.now = e.now.Add(day)
				b.Logf("score-all phases: %v", e.sc.trace)
				e.sc.trace = map[string]time.Duration{}
				began = time.Now()
				s, err := e.sc.Sweep(b.Context(), []string{"bench"})
				if err != nil {
					b.Fatal(err)
				}
				sweep = time.Since(began)
				b.Logf("sweep phases: %v", e.sc.trace)
				e.now = now0
				if s.Accounts != accounts {
					b.Fatalf("swept %d accounts, want %d", s.Accounts, accounts)
				}
			}
			b.ReportMetric(rebuild.Seconds(), "rollup-build-s")
			b.ReportMetric(scoring.Seconds(), "score-all-s")
			b.ReportMetric(sweep.Seconds(), "sweep-s")
			b.ReportMetric(float64(accounts)/scoring.Seconds(), "accounts/s")
		})
	}
}
