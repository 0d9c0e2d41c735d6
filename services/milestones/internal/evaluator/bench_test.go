package evaluator

import (
	"fmt"
	"os"
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
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = "'" + n + "'"
	}
	start := end.Add(-90 * journey.Day).Unix()
	span := int64(90 * 86400)
	began := time.Now()
	chunk := (events + 9) / 10
	for off := 0; off < events; off += chunk {
		n := min(chunk, events-off)
		q := fmt.Sprintf(`INSERT INTO events (tenant_id, account_id, message_id, type, name, user_id, anonymous_id, source_id,
			timestamp, timestamp_ms, original_timestamp, sent_at, received_at, properties, traits, context, previous_id)
			SELECT ?, concat('acc-', toString(number %% %d)), concat('m-', toString(number)), 'track',
				arrayElement([%s], intHash32(number) %% 20 + 1), concat('u', toString(intHash32(number + 1) %% 7)), '', 'src',
				toDateTime(%d + intHash64(number) %% %d, 'UTC') AS ts, toUInt16(number %% 1000), ts, ts, ts,
				if(number %% 3 = 0, '{"kind":"chart"}', '{"kind":"pie"}'), '', '', ''
			FROM (SELECT number + %d AS number FROM numbers(%d))`,
			accounts, strings.Join(quoted, ","), start, span, off, n)
		if err := db.Exec(b.Context(), q, tenant); err != nil {
			b.Fatal(err)
		}
	}
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
			if _, _, err := e.js.Put(b.Context(), "bench", []byte(journey.Template)); err != nil {
				b.Fatal(err)
			}
			var backfill, sweep time.Duration
			for b.Loop() {
				if err := db.Exec(b.Context(), "TRUNCATE TABLE account_onboarding"); err != nil {
					b.Fatal(err)
				}
				e.now = now0
				began := time.Now()
				r, err := e.eval.RunBackfill(b.Context(), "bench", "bench")
				if err != nil {
					b.Fatal(err)
				}
				backfill = time.Since(began)
				if r.Accounts != accounts {
					b.Fatalf("backfill evaluated %d accounts, want %d", r.Accounts, accounts)
				}
				e.now = now0.Add(journey.Day)
				began = time.Now()
				s, err := e.eval.Sweep(b.Context(), []string{"bench"})
				if err != nil {
					b.Fatal(err)
				}
				sweep = time.Since(began)
				if s.Accounts != accounts {
					b.Fatalf("sweep saw %d accounts, want %d", s.Accounts, accounts)
				}
			}
			b.ReportMetric(backfill.Seconds(), "backfill-s")
			b.ReportMetric(float64(events)/backfill.Seconds(), "backfill-events/s")
			b.ReportMetric(sweep.Seconds(), "sweep-s")
			b.ReportMetric(float64(accounts)/sweep.Seconds(), "sweep-accounts/s")
		})
	}
}
