package backtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	milestones "github.com/stickpoint/stickpoint/services/milestones/app"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

// scriptModel is the default model with one cancel-intent signal strong
// enough to cross the threshold alone: a "Data Exported" at noon is over
// it at the next midnight (60 halved over 12 h of a 14-day half-life is
// 58.5, over 50), so the alert's time is known to the step.
const scriptModel = `health:
  window: 30d
  bands: {red: 40, yellow: 70}
  key_features: [Report Built]
  components:
    adoption:   {weight: 50}
    engagement: {weight: 50}
cancel_intent:
  threshold: 50
  signals:
    - id: export
      name: Bulk data export
      match: {event: Data Exported}
      weight: 60
      half_life: 14d
  cancellation_requested: {event: Cancellation Requested}
churn:
  event: Subscription Cancelled
fit:
  default: stretch
  rules:
    - fit: good
      when: [{trait: industry, op: in, value: [software]}]
`

// scriptAlerting alerts on cancel intent only, to nowhere.
const scriptAlerting = `owner_trait: csm_email
channels: []
rules:
  - kind: cancel_intent
    severity: high
`

// script is a history with known ground truth: every account is active
// every day at noon from day 0 to day 24; some export data (cancel
// intent); the outcomes file says who churned when. Every account is on
// the pro plan, so the journey template applies, and none ever connects a
// source: onboarding goes at risk, late and stalled, and health is
// rescored each time (signals the alerting rules here do not alert on).
//
//	intent-1  exports day 10, churns day 20: alerted day 11, lead 9 days
//	intent-2  exports day 5,  churns day 20: alerted day 6, lead 14 days
//	silent    churns day 15 with no warning: a worst miss (good fit)
//	false     exports day 12, retained: a false alarm
//	ok-1..4   retained, never alerted
func script() (lines [][]byte, outcomes map[string]Outcome) {
	exports := map[string]int{"intent-1": 10, "intent-2": 5, "false": 12}
	accounts := []string{"intent-1", "intent-2", "silent", "false", "ok-1", "ok-2", "ok-3", "ok-4"}
	n := 0
	add := func(call map[string]any) {
		n++
		call["messageId"] = fmt.Sprintf("m-%d", n)
		b, _ := json.Marshal(call)
		lines = append(lines, b)
	}
	for _, a := range accounts {
		add(map[string]any{"type": "group", "userId": a + "-u", "groupId": a, "timestamp": at(0).Add(time.Hour).Format(time.RFC3339),
			"traits": map[string]any{"industry": "software", "plan": "pro", "csm_email": "cs@example.com"}})
	}
	for d := range 25 {
		for _, a := range accounts {
			noon := at(d).Add(12 * time.Hour).Format(time.RFC3339)
			add(map[string]any{"type": "track", "userId": a + "-u", "event": "Report Built", "timestamp": noon, "context": map[string]any{"groupId": a}})
			if e, ok := exports[a]; ok && e == d {
				add(map[string]any{"type": "track", "userId": a + "-u", "event": "Data Exported", "timestamp": noon, "context": map[string]any{"groupId": a}})
			}
		}
	}
	return lines, map[string]Outcome{
		"intent-1": {Churned: true, At: at(20)},
		"intent-2": {Churned: true, At: at(20)},
		"silent":   {Churned: true, At: at(15)},
	}
}

func runScript(t *testing.T) *Result {
	t.Helper()
	res, _, _ := runScriptIn(t)
	return res
}

// runScriptIn runs the script keeping its data folder, and returns the
// folder and the ClickHouse configuration it kept it in.
func runScriptIn(t *testing.T) (*Result, string, chstore.Config) {
	t.Helper()
	dir := t.TempDir()
	res, ch := runScriptWith(t, func(o *Options) { o.Dir = dir })
	return res, dir, ch
}

// runScriptWith runs the script with the options change makes.
func runScriptWith(t *testing.T, change func(*Options)) (*Result, chstore.Config) {
	t.Helper()
	lines, outcomes := script()
	ch := testutil.StoreConfig(t, chstore.EngineEmbedded)
	opts := Options{Lines: lines, Journeys: []byte(milestones.JourneyTemplate), Model: []byte(scriptModel),
		Alerting: []byte(scriptAlerting), Outcomes: outcomes, Step: 24 * time.Hour, From: at(0), To: at(25), ClickHouse: &ch}
	change(&opts)
	res, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return res, ch
}

// A kept data folder holds what the backtest kept in memory: every event
// stored, every signal, each account's onboarding evaluation, health score
// and churn record, and every alert as it ended.
func TestAKeptDataFolderHoldsTheResults(t *testing.T) {
	res, dir, ch := runScriptIn(t)
	alerts := map[string]bool{}
	for _, a := range res.Alerts {
		alerts[a.AlertID] = true
	}
	if len(alerts) == 0 {
		t.Fatal("the script raised no alert")
	}
	bus := testutil.NATS(t, func(c *natsjs.Config) { c.StoreDir = filepath.Join(dir, "nats") })
	kv, err := bus.JS.KeyValue(t.Context(), "alerts")
	if err != nil {
		t.Fatal(err)
	}
	for id := range alerts {
		if _, err := kv.Get(t.Context(), Tenant+"."+id); err != nil {
			t.Errorf("alert %s is not in the kept folder's bucket: %v", id, err)
		}
	}
	keys, err := kv.ListKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range keys.Keys() {
		n++
	}
	if n != len(alerts) {
		t.Errorf("%d alerts in the kept folder's bucket; want the %d the backtest raised", n, len(alerts))
	}

	db, err := chstore.Open(t.Context(), ch)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	signalsKept := 0
	for _, n := range res.Report.SignalsByKind {
		signalsKept += n
	}
	for _, c := range []struct {
		q    string
		want int
	}{
		{"SELECT count() FROM events WHERE tenant_id = 'backtest'", res.Report.Events},
		{"SELECT count() FROM (SELECT DISTINCT signal_id FROM signals WHERE tenant_id = 'backtest')", signalsKept},
		{"SELECT count() FROM account_onboarding FINAL WHERE tenant_id = 'backtest'", 8},
		{"SELECT count() FROM account_health FINAL WHERE tenant_id = 'backtest'", 8},
	} {
		rows, err := db.Query(t.Context(), c.q)
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for rows.Next() {
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
		}
		if int(n) != c.want {
			t.Errorf("%s: %d, want %d", c.q, n, c.want)
		}
	}
}

// TestScriptedHistoryGivesTheHandComputedReport replays the script
// through the real engines: recall, lead times, false alarms and misses
// equal the values worked out from the script above.
func TestScriptedHistoryGivesTheHandComputedReport(t *testing.T) {
	res := runScript(t)
	r := res.Report
	if r.Accounts != 8 || r.Churned != 3 || r.Retained != 5 || r.Events != 8+25*8+3 {
		t.Fatalf("report %+v: want 8 accounts, 3 churned, 5 retained, 211 events", r)
	}
	if r.Recall.Overall != (Share{2, 3, 2.0 / 3}) {
		t.Errorf("recall %+v, want 2 of 3", r.Recall.Overall)
	}
	if len(r.Recall.ByKind) != 1 || r.Recall.ByKind[0] != (Kind{"cancel_intent", Share{2, 3, 2.0 / 3}}) {
		t.Errorf("recall by kind %+v, want cancel_intent 2 of 3", r.Recall.ByKind)
	}
	d := 24 * time.Hour
	if r.Lead != (Lead{N: 2, P25: 9 * d, Median: 9 * d, P75: 14 * d}) {
		t.Errorf("lead %+v, want p25 9d, median 9d, p75 14d", r.Lead)
	}
	if r.FalseAlarms.Share != (Share{1, 5, 0.2}) {
		t.Errorf("false alarms %+v, want 1 of 5", r.FalseAlarms.Share)
	}
	// 3 openings, 8 accounts, 25 days: 3 / 0.08 / (25/30) = 45.
	if got := r.FalseAlarms.PerHundredAccountsMonth; got < 44.999 || got > 45.001 {
		t.Errorf("alerts per 100 accounts per month %v, want 45", got)
	}
	if r.Precision != (Share{2, 3, 2.0 / 3}) {
		t.Errorf("precision %+v, want 2 of 3", r.Precision)
	}
	if len(r.WorstMisses) != 1 || r.WorstMisses[0].Account != "silent" || !r.WorstMisses[0].At.Equal(at(15)) {
		t.Errorf("worst misses %+v, want silent at day 15", r.WorstMisses)
	}
	opened := map[string]time.Time{}
	for _, a := range res.Alerts {
		if a.Change == ChangeOpened {
			opened[a.Account] = a.At
		}
	}
	want := map[string]time.Time{"intent-1": at(11), "intent-2": at(6), "false": at(13)}
	if !reflect.DeepEqual(opened, want) {
		t.Errorf("alerts opened %v, want %v (the midnight after each export)", opened, want)
	}
	if r.SignalsByKind["cancel_intent"] != 3 {
		t.Errorf("signals %v, want 3 cancel_intent", r.SignalsByKind)
	}
}

// TestSameInputSameReport runs the script twice: the same report, the
// same alerts at the same simulated times. The second run is in a
// temporary folder, whose streams drop what was read after every step:
// nothing is dropped before it is read.
func TestSameInputSameReport(t *testing.T) {
	a := runScript(t)
	b, _ := runScriptWith(t, func(o *Options) { o.dropEvery = 1 })
	a.Report.Took, b.Report.Took = "", ""
	if !reflect.DeepEqual(a.Report, b.Report) {
		t.Errorf("two runs differ:\n%+v\n%+v", a.Report, b.Report)
	}
	if !reflect.DeepEqual(a.Alerts, b.Alerts) {
		t.Errorf("two runs' alerts differ:\n%+v\n%+v", a.Alerts, b.Alerts)
	}
}

// With an escalation, the alerting sweep runs at each step and escalates
// the alerts left unacknowledged: two days after each opening.
func TestEscalationsRunInABacktest(t *testing.T) {
	lines, outcomes := script()
	ch := testutil.StoreConfig(t, chstore.EngineEmbedded)
	res, err := Run(context.Background(), Options{Lines: lines, Journeys: []byte(milestones.JourneyTemplate), Model: []byte(scriptModel),
		Alerting: []byte(scriptAlerting + "escalation: {after: 2d, channels: []}\n"), Outcomes: outcomes, Step: 24 * time.Hour, From: at(0), To: at(25),
		Dir: t.TempDir(), ClickHouse: &ch})
	if err != nil {
		t.Fatal(err)
	}
	escalated := map[string]time.Time{}
	for _, a := range res.Alerts {
		if a.Change == "escalated" {
			escalated[a.Account] = a.At
		}
	}
	want := map[string]time.Time{"intent-1": at(13), "intent-2": at(8), "false": at(15)}
	if !reflect.DeepEqual(escalated, want) {
		t.Errorf("alerts escalated %v, want %v", escalated, want)
	}
}

// The events are fed in time order, those at the same time in the
// history's order: as a stable sort puts them, on histories in order, out
// of order, and with many events at one time.
func TestSortByTimeIsAStableSort(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		n, times int
		sorted   bool
	}{{0, 1, false}, {1, 1, false}, {2, 1, false}, {1000, 20, false}, {1000, 1000000, false}, {1000, 20, true}} {
		evs := make([]events.Event, c.n)
		for i := range evs {
			// Whole seconds and nanoseconds both vary.
			evs[i] = events.Event{MessageID: strconv.Itoa(i), Timestamp: base.Add(time.Duration(r.IntN(c.times)) * 700 * time.Millisecond)}
		}
		if c.sorted {
			sort.SliceStable(evs, func(i, j int) bool { return evs[i].Timestamp.Before(evs[j].Timestamp) })
		}
		want := slices.Clone(evs)
		sort.SliceStable(want, func(i, j int) bool { return want[i].Timestamp.Before(want[j].Timestamp) })
		sortByTime(evs)
		for i := range evs {
			if evs[i].MessageID != want[i].MessageID {
				t.Fatalf("%d events over %d times: place %d holds %s at %s; want %s at %s", c.n, c.times, i,
					evs[i].MessageID, evs[i].Timestamp, want[i].MessageID, want[i].Timestamp)
			}
		}
	}
}

// serial runs what it is given in order, one at a time; after a failure
// it runs nothing more until Wait, which returns the failure.
func TestSerialRunsInOrderAndStopsAtAFailure(t *testing.T) {
	var s serial
	if err := s.Wait(); err != nil {
		t.Fatalf("nothing given: %v", err)
	}
	var ran []int
	running := atomic.Int32{}
	for i := range 50 {
		s.Go(func() error {
			if running.Add(1) != 1 {
				t.Error("two ran at once")
			}
			time.Sleep(time.Duration(50-i) * 10 * time.Microsecond) // the first take longest
			ran = append(ran, i)
			running.Add(-1)
			return nil
		})
	}
	if err := s.Wait(); err != nil || len(ran) != 50 || !slices.IsSorted(ran) {
		t.Fatalf("ran %v, %v: want 0-49 in order", ran, err)
	}
	failed := errors.New("failed")
	ran = nil
	s.Go(func() error { ran = append(ran, 1); return failed })
	s.Go(func() error { ran = append(ran, 2); return nil })
	if err := s.Wait(); !errors.Is(err, failed) || !slices.Equal(ran, []int{1}) {
		t.Fatalf("ran %v, %v: want 1, then the failure", ran, err)
	}
	s.Go(func() error { ran = append(ran, 3); return nil })
	if err := s.Wait(); err != nil || !slices.Equal(ran, []int{1, 3}) {
		t.Fatalf("after Wait: ran %v, %v", ran, err)
	}
	// A mark waits for what was given before it, not after.
	release := make(chan struct{})
	s.Go(func() error { ran = append(ran, 4); return nil })
	mark := s.Mark()
	s.Go(func() error { <-release; return nil })
	waited := make(chan error, 1)
	go func() { waited <- mark.Wait() }()
	select {
	case err := <-waited:
		if err != nil || !slices.Equal(ran, []int{1, 3, 4}) {
			t.Errorf("at the mark: ran %v, %v", ran, err)
		}
	case <-time.After(10 * time.Second):
		t.Error("the mark waited for what was given after it")
	}
	close(release)
	if err := s.Wait(); err != nil {
		t.Fatal(err)
	}
}
