package evaluator

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	"github.com/stickpoint/stickpoint/services/milestones/internal/journey"
)

// benchScale reads STICKPOINT_BENCH_EVENTS and STICKPOINT_BENCH_ACCOUNTS:
// by default the targets' 100 million events in 100,000 accounts (make
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

// generate fills a tenant with events spread evenly over accounts, 20
// event names (4 of them the template journey's) and 90 days, as DESIGN.md
// measured: a worst case, with no repeat to compress. ClickHouse
// generates the rows itself, ten inserts of a tenth each.
func generate(b *testing.B, db chstore.Store, tenant string, events, accounts int, end time.Time) {
	b.Helper()
	names := []string{"Source Connected", "Report Built", "Report Viewed", "Logged In"}
	for i := len(names); i < 20; i++ {
		names = append(names, fmt.Sprintf("Other %d", i))
	}
	start := end.Add(-90 * journey.Day).Unix()
	began := time.Now()
	testutil.GenerateEvents(b, db, tenant, events, accounts, end.Add(-90*journey.Day), end, names)
	// Every account is on the pro plan, created at its first day.
	q := fmt.Sprintf(`INSERT INTO account_traits (tenant_id, account_id, traits, traits_hash, updated_at, message_id)
		SELECT ?, concat('acc-', toString(number)), concat('{"plan":"pro","created_at":"', toString(toDate(toDateTime(%d, 'UTC'))), '"}') AS t,
			cityHash64(t), toDateTime(%d, 'UTC'), concat('g-', toString(number))
		FROM numbers(%d)`, start, start, accounts)
	if err := db.Exec(b.Context(), q, tenant); err != nil {
		b.Fatal(err)
	}
	b.Logf("generated %d events in %d accounts in %s", events, accounts, time.Since(began).Round(time.Millisecond))
}

// BenchmarkBackfillAndSweep backfills the template journey over every
// account (targets: 100 million events in 100,000 accounts in under 30 s),
// then sweeps every account's status a day later (target: 100,000
// accounts in under 10 s).
func BenchmarkBackfillAndSweep(b *testing.B) {
	events, accounts := benchScale()
	for _, engine := range testutil.Engines {
		b.Run(engine, func(b *testing.B) {
			db := testutil.Store(b, engine)
			e := newEnv(b, db)
			generate(b, db, "bench", events, accounts, e.now)
			// Every run's figures are kept: the machine is noisy, and
			// -benchtime Nx runs N. The metrics are their medians, with the
			// backfill's slowest and fastest.
			var backfills, sweeps []time.Duration
			for run := 0; b.Loop(); run++ {
				if err := db.Exec(b.Context(), "TRUNCATE TABLE account_onboarding"); err != nil {
					b.Fatal(err)
				}
				// Each run's journey has an id of its own, so its signals have
				// ids of their own: a run that published the ids of the run
				// before, within the stream's duplicate window, would have
				// them dropped, and time less work than a real backfill.
				if run > 0 {
					if err := e.js.Delete(b.Context(), "bench", fmt.Sprintf("onboarding-%d", run-1)); err != nil {
						b.Fatal(err)
					}
				}
				src := strings.Replace(journey.Template, "id: onboarding", fmt.Sprintf("id: onboarding-%d", run), 1)
				if _, _, err := e.js.Put(b.Context(), "bench", []byte(src)); err != nil {
					b.Fatal(err)
				}
				e.now = now0
				began := time.Now()
				r, err := e.eval.RunBackfill(b.Context(), "bench", "bench")
				if err != nil {
					b.Fatal(err)
				}
				backfills = append(backfills, time.Since(began))
				if r.Accounts != accounts {
					b.Fatalf("backfill evaluated %d accounts, want %d", r.Accounts, accounts)
				}
				e.now = now0.Add(journey.Day)
				began = time.Now()
				s, err := e.eval.Sweep(b.Context(), []string{"bench"})
				if err != nil {
					b.Fatal(err)
				}
				sweeps = append(sweeps, time.Since(began))
				if s.Accounts != accounts {
					b.Fatalf("sweep saw %d accounts, want %d", s.Accounts, accounts)
				}
			}
			backfill, sweep := median(backfills), median(sweeps)
			b.ReportMetric(backfill.Seconds(), "backfill-s")
			b.ReportMetric(slices.Min(backfills).Seconds(), "backfill-min-s")
			b.ReportMetric(slices.Max(backfills).Seconds(), "backfill-max-s")
			b.ReportMetric(float64(events)/backfill.Seconds(), "backfill-events/s")
			b.ReportMetric(sweep.Seconds(), "sweep-s")
			b.ReportMetric(float64(accounts)/sweep.Seconds(), "sweep-accounts/s")
		})
	}
}

// median is the middle of ds (the mean of the two middle ones when even).
func median(ds []time.Duration) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	return (s[(len(s)-1)/2] + s[len(s)/2]) / 2
}
