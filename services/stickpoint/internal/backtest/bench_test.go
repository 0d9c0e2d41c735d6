package backtest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	milestones "github.com/stickpoint/stickpoint/services/milestones/app"
)

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// benchHistory is a synthetic history: accounts starting over the first
// third of the period, each with a few users active on most days until it
// churns (one in ten does, some after exporting their data) or the period
// ends, using the journey template's events: every account is on a plan
// the template applies to, so milestone tracking evaluates them all.
func benchHistory(events, accounts, days int) [][]byte {
	r := rand.New(rand.NewPCG(7, 11))
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	names := []string{"Report Built", "Dashboard Shared", "Alert Created", "Source Connected", "Report Viewed", "Report Viewed", "Report Viewed", "Logged In"}
	type acct struct {
		id         string
		from, to   int // active days
		exportsDay int
	}
	accs := make([]acct, accounts)
	activeDays := 0
	for i := range accs {
		a := acct{id: fmt.Sprintf("acct-%06d", i), from: r.IntN(max(days/3, 1)), exportsDay: -1}
		a.to = days
		if r.IntN(10) == 0 { // churns
			a.to = a.from + 14 + r.IntN(max(days-a.from-14, 1))
			if r.IntN(2) == 0 {
				a.exportsDay = a.to - 3 - r.IntN(10)
			}
		}
		a.to = min(a.to, days)
		accs[i] = a
		activeDays += a.to - a.from
	}
	// Events a day, spread so that the total comes to about events.
	rate := float64(events) / float64(max(activeDays, 1))
	var lines [][]byte
	n := 0
	add := func(call map[string]any) {
		n++
		call["messageId"] = "b-" + strconv.Itoa(n)
		b, _ := json.Marshal(call)
		lines = append(lines, b)
	}
	at := func(d int, sec int) string {
		return start.Add(time.Duration(d)*24*time.Hour + time.Duration(sec)*time.Second).Format(time.RFC3339)
	}
	for _, a := range accs {
		add(map[string]any{"type": "group", "userId": a.id + "-u0", "groupId": a.id, "timestamp": at(a.from, 0),
			"traits": map[string]any{"industry": []string{"software", "agency", "retail"}[r.IntN(3)], "employees": 5 + r.IntN(300), "seats": 5 + r.IntN(20),
				"csm_email": "cs@example.com", "plan": []string{"pro", "team"}[r.IntN(2)], "created_at": at(a.from, 0)}})
		for d := a.from; d < a.to; d++ {
			perDay := int(rate)
			if r.Float64() < rate-float64(perDay) {
				perDay++
			}
			for k := range perDay {
				ev := names[r.IntN(len(names))]
				if d == a.exportsDay && k == 0 {
					ev = "Data Exported"
				}
				add(map[string]any{"type": "track", "userId": a.id + "-u" + strconv.Itoa(r.IntN(4)), "event": ev,
					"timestamp": at(d, 3600+r.IntN(20*3600)), "context": map[string]any{"groupId": a.id},
					"properties": map[string]any{"kind": []string{"chart", "table", "text"}[r.IntN(3)]}})
			}
		}
		if a.to < days {
			add(map[string]any{"type": "track", "userId": a.id + "-u0", "event": "Subscription Cancelled", "timestamp": at(a.to, 3600),
				"context": map[string]any{"groupId": a.id}})
		}
	}
	return lines
}

// BenchmarkBacktest replays a synthetic history of STICKPOINT_BENCH_EVENTS
// events (default 1,000,000) of STICKPOINT_BENCH_ACCOUNTS accounts (10,000)
// over STICKPOINT_BENCH_DAYS days (180), with the default model and rules,
// at --step 1d and 1h (STICKPOINT_BENCH_STEP picks one).
func BenchmarkBacktest(b *testing.B) {
	events, accounts, days := envInt("STICKPOINT_BENCH_EVENTS", 1_000_000), envInt("STICKPOINT_BENCH_ACCOUNTS", 10_000), envInt("STICKPOINT_BENCH_DAYS", 180)
	lines := benchHistory(events, accounts, days)
	steps := []time.Duration{24 * time.Hour, time.Hour}
	if s := os.Getenv("STICKPOINT_BENCH_STEP"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatal(err)
		}
		steps = []time.Duration{d}
	}
	for _, step := range steps {
		b.Run(fmt.Sprintf("events=%d/accounts=%d/days=%d/step=%s", len(lines), accounts, days, step), func(b *testing.B) {
			for b.Loop() {
				ch := testutil.StoreConfig(b, chstore.EngineEmbedded)
				began := time.Now()
				// No Dir: a temporary folder, not kept, as the command's default.
				res, err := Run(context.Background(), Options{Lines: lines, Journeys: []byte(milestones.JourneyTemplate), Step: step,
					ClickHouse: &ch})
				if err != nil {
					b.Fatal(err)
				}
				took := time.Since(began)
				b.ReportMetric(took.Seconds(), "s/backtest")
				b.ReportMetric(float64(len(lines))/took.Seconds(), "events/s")
				b.Logf("%d events, %d accounts, %d churned, alerts %v, signals %v, recall %.2f, took %s, by phase %v",
					res.Report.Events, res.Report.Accounts, res.Report.Churned, res.Report.AlertsByKind, res.Report.SignalsByKind, res.Report.Recall.Overall.Share,
					took.Round(time.Millisecond), res.Timings)
			}
		})
	}
}
