package backtest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	milestones "github.com/stickpoint/stickpoint/services/milestones/app"
	"github.com/stickpoint/stickpoint/services/stickpoint/app"
)

// TestLiveServicesGiveTheBacktestsSignals sends the script to the
// services running as in `make run` (their own consumers, events through
// the HTTP API with the write key) while a fake clock moves a day at a
// time, and compares what they signal and alert with the backtest of the
// same history. Each day: the clock moves, that day's events are sent,
// everything settles, then the sweeps fire as their tickers would (their
// wall-clock intervals are set past the test's length, so only the fake
// clock moves them).
func TestLiveServicesGiveTheBacktestsSignals(t *testing.T) {
	backtest := runScript(t)

	lines, _ := script()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := testutil.StoreConfig(t, chstore.EngineEmbedded)
	r, err := open(ctx, Options{Journeys: []byte(milestones.JourneyTemplate), Model: []byte(scriptModel), Alerting: []byte(scriptAlerting),
		ClickHouse: &ch, configure: func(c *app.Config) {
			c.Milestones.SweepInterval, c.Health.SweepInterval, c.Alerting.SweepInterval = 24*time.Hour, 24*time.Hour, 24*time.Hour
		}}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r.ing.Register(r.base.Mux, r.base.GRPC)
	// DELIVERIES is a work queue: the dispatcher takes it over from the
	// backtest's reader.
	if err := r.base.Bus.JS.DeleteConsumer(ctx, natsjs.DeliveriesStream, "backtest-deliveries"); err != nil {
		t.Fatal(err)
	}
	r.deliveries = nil
	served := make(chan error, 1)
	go func() { served <- r.base.Serve(ctx, r.ing, r.ms, r.hs, r.as) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	url := "http://" + r.base.HTTPAddr() + "/v1/batch"

	type timed struct {
		at   time.Time
		line json.RawMessage
	}
	var calls []timed
	for _, l := range lines {
		var c struct{ Timestamp time.Time }
		if err := json.Unmarshal(l, &c); err != nil {
			t.Fatal(err)
		}
		calls = append(calls, timed{c.Timestamp, l})
	}
	slices.SortStableFunc(calls, func(a, b timed) int { return a.at.Compare(b.at) })

	next := 0
	for now := at(1); !now.After(at(25)); now = now.Add(24 * time.Hour) {
		r.clock.set(now)
		r.alertClock.set(now)
		var batch []json.RawMessage
		for ; next < len(calls) && !calls[next].at.After(now); next++ {
			batch = append(batch, calls[next].line)
		}
		if len(batch) > 0 {
			body, _ := json.Marshal(map[string]any{"batch": batch})
			testutil.Post(t, url, r.writeKey, string(body))
		}
		r.live(t, ctx)
		if err := r.ms.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		r.live(t, ctx)
		if err := r.hs.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		r.live(t, ctx)
		if _, err := r.as.Alerter.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		r.live(t, ctx)
	}

	if got, want := signalSet(r.signalLog), signalSet(backtest.Signals); !slices.Equal(got, want) {
		t.Errorf("live signals differ from the backtest's:\nlive:     %v\nbacktest: %v", got, want)
	}
	if got, want := alertSet(r.alertEvents), alertSet(backtest.Alerts); !slices.Equal(got, want) {
		t.Errorf("live alerts differ from the backtest's:\nlive:     %v\nbacktest: %v", got, want)
	}
	t.Logf("%d signals and %d alert changes, the same live and in the backtest", len(signalSet(backtest.Signals)), len(backtest.Alerts))
	if len(backtest.Alerts) == 0 || len(backtest.Signals) == 0 {
		t.Errorf("the script signalled nothing: the comparison proves nothing")
	}
}

// live waits until every consumer of the running services has handled
// everything, then records the signals and alert changes at the clock.
func (r *run) live(t *testing.T, ctx context.Context) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	quiet := 0
	for quiet < 3 {
		if time.Now().After(deadline) {
			t.Fatal("the services did not settle within a minute")
		}
		if r.busy(t, ctx) {
			quiet = 0
		} else {
			quiet++
		}
		time.Sleep(50 * time.Millisecond)
	}
	sigs, err := r.signals.take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.recordSignals(sigs); err != nil {
		t.Fatal(err)
	}
	r.signals.ack(sigs)
	if err := r.recordAlerts(ctx, r.clock.Now()); err != nil {
		t.Fatal(err)
	}
}

// busy reports whether a service's consumer has messages left.
func (r *run) busy(t *testing.T, ctx context.Context) bool {
	t.Helper()
	for _, name := range []string{natsjs.EventsStream, natsjs.StoredStream, natsjs.SignalsStream, natsjs.DeliveriesStream} {
		st, err := r.base.Bus.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		for info := range st.ListConsumers(ctx).Info() {
			if strings.HasPrefix(info.Name, "backtest-") {
				continue
			}
			if info.NumPending > 0 || info.NumAckPending > 0 {
				return true
			}
		}
	}
	return false
}

func signalSet(sigs []SignalEvent) []string {
	var out []string
	for _, s := range sigs {
		out = append(out, fmt.Sprintf("%s %s %s occurred %s", s.At.Format(time.DateOnly), s.Account, s.Kind, s.OccurredAt.Format(time.RFC3339)))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func alertSet(alerts []AlertEvent) []string {
	var out []string
	for _, a := range alerts {
		out = append(out, fmt.Sprintf("%s %s %s %s", a.At.Format(time.DateOnly), a.Account, a.Kind, a.Change))
	}
	slices.Sort(out)
	return out
}
