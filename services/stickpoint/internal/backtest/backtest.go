// Package backtest replays a history through the real ingest writer,
// milestone tracking, health scoring and alerting, in one process, on a
// temporary data folder, on a simulated clock (DESIGN.md, "Detection":
// state is a function of stored events and a clock). It feeds the events
// in time order a step at a time, runs the services' handlers and their
// scheduled sweeps at each step as production does, records every signal
// and alert at its simulated time, and reports how early the alerts came
// before the churns, and how many were false.
//
// It drives the services' own handlers instead of running their
// consumers: one step is stored, evaluated and scored before the clock
// moves, and alerted on in the order signalled, on a clock set to the
// step the signals came from (up to a step behind), so the same input
// gives the same answer.
package backtest

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/service"
	"github.com/stickpoint/stickpoint/pkg/signals"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	alertsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/alerts/v1"
	alerting "github.com/stickpoint/stickpoint/services/alerting/app"
	health "github.com/stickpoint/stickpoint/services/health/app"
	ingest "github.com/stickpoint/stickpoint/services/ingest/app"
	milestones "github.com/stickpoint/stickpoint/services/milestones/app"
	"github.com/stickpoint/stickpoint/services/stickpoint/app"
)

// Tenant is the tenant a backtest's data is stored under.
const Tenant = "backtest"

// Options are a backtest's inputs.
type Options struct {
	// Lines are the history: Segment calls, one JSON object per line.
	Lines [][]byte
	// Journeys is a journeys file (one or several journeys); Model and
	// Alerting are a health model and an alerting configuration, nil for
	// the defaults.
	Journeys, Model, Alerting []byte
	// Outcomes are the accounts' outcomes by account; nil takes churn from
	// the model's churn rule over the history.
	Outcomes map[string]Outcome
	// Step is how far the clock moves at a time.
	Step time.Duration
	// From and To bound the simulated time; zero takes the history's
	// first and last events.
	From, To time.Time
	// Dir is the data folder; empty makes a temporary one and removes it.
	Dir string
	// ClickHouse, when set, replaces the embedded engine in Dir (tests:
	// chDB opens one folder per process, so they keep apart by database).
	ClickHouse *chstore.Config
	// Progress, when set, is called after each step.
	Progress func(Progress)
	// Log receives the services' logs (warnings and errors); nil drops them.
	Log io.Writer

	// configure, when set, changes the embedded configuration (tests).
	configure func(*app.Config)
	// dropEvery, when set, replaces dropEvery (tests).
	dropEvery uint64
}

// Progress is how far a backtest has got.
type Progress struct {
	At, To        time.Time
	Events, Total int
	Signals       int
	// Alert is the alert changes recorded so far: alerting may be a step
	// behind the rest until the last step.
	Alert int
}

// Result is a backtest's report, and every alert change it recorded.
type Result struct {
	Report  Report
	Alerts  []AlertEvent
	Refused []ingest.HistoryRejection
	// Signals are every signal emitted, in order, at its simulated time.
	Signals []SignalEvent
	// Timings are the wall time spent in each phase: storing the events,
	// evaluating what they changed, each sweep, and waiting for alerting
	// (which runs alongside the rest, up to a step behind).
	Timings map[string]time.Duration
	// Warnings are inputs the backtest ignored, worded.
	Warnings []string
}

// SignalEvent is a signal as emitted, at its simulated time.
type SignalEvent struct {
	At         time.Time `json:"at"`
	Account    string    `json:"account_id"`
	Kind       string    `json:"kind"`
	OccurredAt time.Time `json:"occurred_at"`
}

// clock is the simulated clock every service reads.
type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time  { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) set(t time.Time) { c.ns.Store(t.UnixNano()) }

// run is one backtest's parts.
type run struct {
	opts  Options
	cfg   app.Config // the services' configuration: their sweep intervals
	clock *clock
	// alertClock is alerting's: it runs up to a step behind the others.
	alertClock *clock
	base       *service.Base
	ing        *ingest.Service
	ms         *milestones.Service
	hs         *health.Service
	as         *alerting.Service

	stored, signals, alerts, deliveries *puller
	alerting                            serial       // alerting's handling of the signals
	alerted                             atomic.Int64 // len(alertEvents), for the progress
	signalMemory                        *signals.Memory

	writeKey    string // the tenant's, for tests that send over HTTP
	timings     map[string]time.Duration
	signalKinds map[string]int
	signalLog   []SignalEvent
	alertEvents []AlertEvent
}

// Run runs a backtest.
func Run(ctx context.Context, opts Options) (*Result, error) {
	began := time.Now()
	if opts.Step <= 0 {
		return nil, errors.New("step: must be positive")
	}
	evs, refused := ingest.DecodeHistory(opts.Lines, Tenant)
	if len(evs) == 0 {
		if len(refused) == 0 {
			return nil, errors.New("the history is empty")
		}
		return nil, fmt.Errorf("the history holds no valid call: %d lines refused, the first: line %d: %s", len(refused), refused[0].Line, refused[0].Reason)
	}
	sortByTime(evs)
	from, to := opts.From, opts.To
	if from.IsZero() {
		from = evs[0].Timestamp.Truncate(opts.Step)
	}
	if to.IsZero() {
		to = evs[len(evs)-1].Timestamp
	}
	if !to.After(from) {
		return nil, fmt.Errorf("to: %s is not after from %s", to.Format(time.RFC3339), from.Format(time.RFC3339))
	}
	res := &Result{Refused: refused}
	if kept := countUpTo(evs, to); kept < len(evs) {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%d events after --to %s are left out", len(evs)-kept, to.Format(time.RFC3339)))
		evs = evs[:kept]
	}

	dir := opts.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "stickpoint-backtest-")
		if err != nil {
			return nil, err
		}
		defer func() { _ = os.RemoveAll(tmp) }()
		dir = tmp
	}
	r, err := open(ctx, opts, dir)
	if err != nil {
		return nil, err
	}
	defer r.base.Close(context.WithoutCancel(ctx))
	// A replay that failed may leave alerting handling signals: it ends
	// before the services close.
	defer func() { _ = r.alerting.Wait() }()
	if err := r.replay(ctx, evs, from, to); err != nil {
		return nil, err
	}
	if opts.Dir != "" {
		if err := r.save(ctx); err != nil {
			return nil, err
		}
	}
	in, warnings := r.inputs(from, to)
	res.Warnings = append(res.Warnings, warnings...)
	res.Report = Compute(in)
	res.Report.Step = opts.Step.String()
	res.Report.Events, res.Report.Refused = len(evs), len(refused)
	res.Report.SignalsByKind = r.signalKinds
	res.Report.OutcomesFrom = "churn rule"
	if opts.Outcomes != nil {
		res.Report.OutcomesFrom = "outcomes file"
	}
	sort.SliceStable(r.alertEvents, func(i, j int) bool {
		a, b := r.alertEvents[i], r.alertEvents[j]
		if !a.At.Equal(b.At) {
			return a.At.Before(b.At)
		}
		return a.Account+"\x00"+a.Kind < b.Account+"\x00"+b.Kind
	})
	res.Alerts, res.Signals, res.Timings = r.alertEvents, r.signalLog, r.timings
	res.Report.Took = time.Since(began).Round(time.Millisecond).String()
	return res, nil
}

// sortByTime sorts the events by time, those at the same time in the
// history's order. It sorts small keys and then moves each event once:
// sorting the events themselves, a few hundred bytes each, was 2 s of a
// million-event backtest, on one core.
func sortByTime(evs []events.Event) {
	type key struct {
		sec  int64
		nsec int32
		i    int // the event's place in the history: breaks ties
	}
	keys := make([]key, len(evs))
	for i := range evs {
		t := evs[i].Timestamp
		keys[i] = key{t.Unix(), int32(t.Nanosecond()), i}
	}
	if slices.IsSortedFunc(keys, func(a, b key) int { return cmp.Or(cmp.Compare(a.sec, b.sec), cmp.Compare(a.nsec, b.nsec)) }) {
		return
	}
	slices.SortFunc(keys, func(a, b key) int {
		return cmp.Or(cmp.Compare(a.sec, b.sec), cmp.Compare(a.nsec, b.nsec), cmp.Compare(a.i, b.i))
	})
	// Place j takes the event at keys[j].i: follow each cycle of moves,
	// holding its first event aside.
	done := make([]bool, len(evs))
	for start := range evs {
		if done[start] {
			continue
		}
		held := evs[start]
		j := start
		for {
			done[j] = true
			from := keys[j].i
			if from == start {
				evs[j] = held
				break
			}
			evs[j] = evs[from]
			j = from
		}
	}
}

// countUpTo is how many of the sorted events are at or before t.
func countUpTo(evs []events.Event, t time.Time) int {
	return sort.Search(len(evs), func(i int) bool { return evs[i].Timestamp.After(t) })
}

// open starts the embedded engines on dir and the four services on the
// simulated clock, and puts the tenant's journeys, model and alerting.
func open(ctx context.Context, opts Options, dir string) (_ *run, err error) {
	cfg := app.DefaultConfig()
	cfg.DataDir, cfg.DemoTenant = dir, ""
	cfg.HTTPAddr, cfg.GRPC.Addr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Telemetry.LogLevel = "warn"
	cfg.Health.AccountsCache = 0 // no one calls the accounts API in a backtest
	// A temporary folder's streams need not be files: they go with it.
	cfg.NATS.MemoryStorage = opts.Dir == ""
	if opts.ClickHouse != nil {
		cfg.ClickHouse = *opts.ClickHouse
	}
	if opts.configure != nil {
		opts.configure(&cfg)
	}
	cfg.Resolve()
	logw := opts.Log
	if logw == nil {
		logw = io.Discard
	}
	r := &run{opts: opts, cfg: cfg, clock: &clock{}, alertClock: &clock{}, signalKinds: map[string]int{}, timings: map[string]time.Duration{}}
	if r.base, err = service.Start(ctx, cfg.Config, "stickpoint-backtest", app.Version, logw); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			r.base.Close(context.WithoutCancel(ctx))
		}
	}()
	b := r.base
	if _, err := app.Migrate(ctx, b.Store, b.Log); err != nil {
		return nil, err
	}
	key, _, err := b.Registry.EnsureTenant(ctx, Tenant, "Backtest")
	if err != nil {
		return nil, fmt.Errorf("backtest tenant: %w", err)
	}
	r.writeKey = key.Key
	// The registry's list of tenants, which the sweeps go through, follows
	// a moment after the tenant is stored: the first steps, a millisecond
	// away, must find it.
	for !slices.ContainsFunc(b.Registry.Tenants(), func(t tenancy.Tenant) bool { return t.ID == Tenant }) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	if r.ing, err = ingest.New(cfg.Ingest, b.Bus, b.Store, b.Registry, b.Log); err != nil {
		return nil, err
	}
	if r.ms, err = milestones.New(ctx, cfg.Milestones, b.Bus, b.Store, b.Registry, b.Log); err != nil {
		return nil, err
	}
	if r.hs, err = health.New(ctx, cfg.Health, b.Bus, b.Store, b.Registry, b.Log); err != nil {
		return nil, err
	}
	if r.as, err = alerting.New(ctx, cfg.Alerting, b.Bus, b.Log); err != nil {
		return nil, err
	}
	// The writer stores the events in memory, where the services read
	// them and keep their evaluations, scores, signals and alerts: a step
	// costs no query, and an alert no round trip to the key-value bucket.
	history, sigs := accounts.NewHistory(), signals.NewMemory()
	r.ing.UseMemory(history, opts.Dir != "")
	r.as.UseMemory()
	r.signalMemory = sigs
	r.hs.UseMemory(history, sigs, r.ms.UseMemory(history, sigs))
	r.ing.SetClock(r.clock.Now)
	r.ms.SetClock(r.clock.Now)
	r.hs.SetClock(r.clock.Now)
	r.as.SetClock(r.alertClock.Now)
	if err := r.ing.LoadWriter(ctx); err != nil {
		return nil, err
	}
	if err := r.ms.PutJourneys(ctx, Tenant, opts.Journeys); err != nil {
		return nil, fmt.Errorf("journeys: %w", err)
	}
	if opts.Model != nil {
		if err := r.hs.PutModel(ctx, Tenant, opts.Model); err != nil {
			return nil, fmt.Errorf("model: %w", err)
		}
	}
	if opts.Alerting != nil {
		if err := r.as.PutConfig(ctx, Tenant, opts.Alerting); err != nil {
			return nil, fmt.Errorf("alerting: %w", err)
		}
	}
	for _, p := range []struct {
		to           **puller
		name, stream string
	}{
		{&r.stored, "backtest-stored", natsjs.StoredStream},
		{&r.signals, "backtest-signals", natsjs.SignalsStream},
		{&r.alerts, "backtest-alerts", natsjs.AlertsStream},
		{&r.deliveries, "backtest-deliveries", natsjs.DeliveriesStream},
	} {
		if *p.to, err = newPuller(ctx, b.Bus.JS, p.name, p.stream); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// replay moves the clock from from to to a step at a time: it stores the
// step's events, lets each service handle what that stored and signalled,
// then runs the sweeps that are due, as their schedules would in
// production.
func (r *run) replay(ctx context.Context, evs []events.Event, from, to time.Time) error {
	cfg := r.cfg
	sweeps := []struct {
		name  string
		every time.Duration
		last  time.Time
		run   func(context.Context) error
	}{
		{name: "milestones sweep", every: cfg.Milestones.SweepInterval, run: r.ms.Sweep},
		{name: "health sweep", every: cfg.Health.SweepInterval, run: r.hs.Sweep},
		{name: "alerting sweep", every: cfg.Alerting.SweepInterval, run: func(ctx context.Context) error {
			r.alert(ctx, func() error { _, err := r.as.Alerter.Sweep(ctx); return err })
			return nil
		}},
	}
	// The alerting sweep escalates, and hands on what a crash left in an
	// alert's outbox. A backtest doesn't crash between storing an alert
	// and handing it on, so without an escalation the sweep has nothing to
	// do, and reading every alert at every step of --step 1h is most of a
	// long backtest's time: it is left out.
	escalates, err := r.as.Alerter.Escalates(ctx, Tenant)
	if err != nil {
		return err
	}
	if !escalates {
		sweeps = sweeps[:2]
	}
	for i := range sweeps {
		sweeps[i].last = from
	}
	next := 0
	var lastStep *job // alerting's work of the last step
	for now := from.Add(r.opts.Step); ; now = now.Add(r.opts.Step) {
		if now.After(to) {
			now = to
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		r.clock.set(now)
		end := next + countUpTo(evs[next:], now)
		lap := time.Now()
		if end > next {
			if err := r.ing.WriteHistory(ctx, evs[next:end]); err != nil {
				return fmt.Errorf("store the events up to %s: %w", now.Format(time.RFC3339), err)
			}
			next = end
		}
		r.timings["store"] += time.Since(lap)
		lap = time.Now()
		if err := r.settle(ctx); err != nil {
			return err
		}
		r.timings["evaluate"] += time.Since(lap)
		for i := range sweeps {
			s := &sweeps[i]
			if now.Sub(s.last) < s.every && !now.Equal(to) {
				continue
			}
			s.last = now
			lap := time.Now()
			if err := s.run(ctx); err != nil {
				return fmt.Errorf("sweep at %s: %w", now.Format(time.RFC3339), err)
			}
			if err := r.settle(ctx); err != nil {
				return err
			}
			r.timings[s.name] += time.Since(lap)
		}
		// Alerting handles this step's signals, on its own clock, while
		// the next step is stored and evaluated (it reads nothing of it).
		// Here the replay waits for the last step's alerting: alerting is
		// at most one step behind. The last step waits for all of it.
		lap = time.Now()
		last := !now.Before(to)
		wait := lastStep
		if last {
			wait = r.alerting.Mark()
		}
		if err := wait.Wait(); err != nil {
			return err
		}
		lastStep = r.alerting.Mark()
		r.timings["wait for alerting"] += time.Since(lap)
		if err := r.dropRead(ctx); err != nil {
			return err
		}
		if r.opts.Progress != nil {
			r.opts.Progress(Progress{At: now, To: to, Events: next, Total: len(evs), Signals: sum(r.signalKinds), Alert: int(r.alerted.Load())})
		}
		if last {
			return nil
		}
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// settle hands what the last move stored and signalled to the services
// that consume it, as their consumers would, until nothing is left: the
// notices to milestone tracking and health scoring, the onboarding
// signals to health scoring, every signal to alerting.
//
// Alerting reads nothing the others write, and they read nothing it
// writes: it takes the signals on a goroutine of its own (alert), in the
// order they came, while the others go on.
func (r *run) settle(ctx context.Context) error {
	for range 100 {
		busy := false
		notices, err := r.stored.take(ctx)
		if err != nil {
			return err
		}
		if len(notices) > 0 {
			busy = true
			if err := r.ms.HandleNotices(ctx, notices); err != nil {
				return err
			}
			if err := r.hs.ScoreNotices(ctx, notices); err != nil {
				return err
			}
			r.stored.ack(notices)
		}
		sigs, err := r.signals.take(ctx)
		if err != nil {
			return err
		}
		if len(sigs) > 0 {
			busy = true
			if err := r.recordSignals(sigs); err != nil {
				return err
			}
			r.alert(ctx, func() error {
				if err := r.as.Alerter.Handle(ctx, sigs); err != nil {
					return err
				}
				r.signals.ack(sigs)
				return nil
			})
			// The onboarding signals go to health scoring too. What it
			// signals is taken in the next round, after these: alerting
			// gets every signal in the order published.
			var onboarding []jetstream.Msg
			for _, m := range sigs {
				if isOnboarding(m) {
					onboarding = append(onboarding, m)
				}
			}
			if len(onboarding) > 0 {
				if err := r.hs.HandleOnboarding(ctx, onboarding); err != nil {
					return err
				}
			}
		}
		if !busy {
			return nil
		}
	}
	return errors.New("the services kept signalling each other for 100 rounds in one step: a loop")
}

// alert runs f, alerting's work, after the alerting work given before,
// on alerting's clock set to now; then records the alert changes f
// made, at that time.
func (r *run) alert(ctx context.Context, f func() error) {
	at := r.clock.Now()
	r.alerting.Go(func() error {
		r.alertClock.set(at)
		if err := f(); err != nil {
			return err
		}
		if err := r.recordAlerts(ctx, at); err != nil {
			return err
		}
		return r.drop(ctx, r.alerts)
	})
}

// isOnboarding: m is an onboarding signal, which health scoring takes.
func isOnboarding(m jetstream.Msg) bool {
	for _, k := range health.OnboardingKinds {
		if strings.HasSuffix(m.Subject(), "."+k) {
			return true
		}
	}
	return false
}

// recordSignals records signals at the simulated time.
func (r *run) recordSignals(msgs []jetstream.Msg) error {
	now := r.clock.Now()
	for _, m := range msgs {
		sig, err := signals.Decode(m.Data())
		if err != nil {
			return err
		}
		r.signalKinds[sig.GetKind()]++
		r.signalLog = append(r.signalLog, SignalEvent{At: now, Account: sig.GetAccountId(), Kind: sig.GetKind(), OccurredAt: sig.GetOccurredAt().AsTime()})
	}
	return nil
}

// recordAlerts records the alert changes announced since the last call,
// at the simulated time now, with the channels they would have been sent
// to.
func (r *run) recordAlerts(ctx context.Context, now time.Time) error {
	msgs, err := r.alerts.take(ctx)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		a := &alertsv1.Alert{}
		if err := proto.Unmarshal(m.Data(), a); err != nil {
			return fmt.Errorf("an alert change: %w", err)
		}
		r.alertEvents = append(r.alertEvents, AlertEvent{At: now, AlertID: a.GetId(), Account: a.GetAccountId(), Kind: a.GetKind(),
			Change: m.Headers().Get(alerting.ChangeHeader), Severity: strings.ToLower(strings.TrimPrefix(a.GetSeverity().String(), "SEVERITY_")),
			Owner: a.GetOwner(), Summary: a.GetSummary(), Evidence: signals.Evidence(a.GetEvidence())})
	}
	r.alerts.ack(msgs)
	r.alerted.Store(int64(len(r.alertEvents)))
	if r.deliveries == nil {
		return nil
	}
	jobs, err := r.deliveries.take(ctx)
	if err != nil {
		return err
	}
	for _, m := range jobs {
		var j struct {
			AlertID string `json:"alert_id"`
			Channel string `json:"channel"`
			Trigger string `json:"trigger"`
		}
		if json.Unmarshal(m.Data(), &j) != nil {
			continue
		}
		for i := len(r.alertEvents) - 1; i >= 0; i-- {
			if e := &r.alertEvents[i]; e.AlertID == j.AlertID && e.Change == j.Trigger {
				e.Notify = append(e.Notify, j.Channel)
				break
			}
		}
	}
	r.deliveries.ack(jobs)
	return nil
}

// save writes what the services kept in memory to the data folder's
// ClickHouse, to inspect: the events stored, the signals, the onboarding
// evaluations, the health scores and the churn records.
func (r *run) save(ctx context.Context) error {
	lap := time.Now()
	for _, f := range []func(context.Context) error{
		r.ing.SaveMemory, r.ms.SaveMemory, r.hs.SaveMemory, r.as.SaveMemory,
		func(ctx context.Context) error { return r.signalMemory.Save(ctx, r.base.Store) },
	} {
		if err := f(ctx); err != nil {
			return fmt.Errorf("save to the data folder: %w", err)
		}
	}
	r.timings["save"] = time.Since(lap)
	return nil
}

// inputs is what the report needs once the replay is over: the accounts
// scored and their fit, and their outcomes (the file's, or the churns the
// model's rule recorded), as health scoring kept them.
func (r *run) inputs(from, to time.Time) (Inputs, []string) {
	in := Inputs{From: from, To: to, Alerts: r.alertEvents, Outcomes: map[string]Outcome{}}
	scored := r.hs.Scored(Tenant)
	known := map[string]bool{}
	for _, a := range scored {
		in.Accounts = append(in.Accounts, Account{ID: a.AccountID, Fit: a.Fit})
		known[a.AccountID] = true
	}
	if r.opts.Outcomes != nil {
		var unknown []string
		for id, o := range r.opts.Outcomes {
			if !known[id] {
				unknown = append(unknown, id)
				continue
			}
			in.Outcomes[id] = o
		}
		var warnings []string
		if len(unknown) > 0 {
			slices.Sort(unknown)
			warnings = append(warnings, fmt.Sprintf("%d accounts of the outcomes file have no events in the history, and are left out: %s",
				len(unknown), strings.Join(unknown[:min(len(unknown), 5)], ", ")))
		}
		return in, warnings
	}
	for _, a := range scored {
		if a.Churned {
			in.Outcomes[a.AccountID] = Outcome{Churned: true, At: a.ChurnedAt, Reason: a.ChurnReason}
		}
	}
	return in, nil
}

// puller reads a stream for the backtest, as a service's consumer would,
// and says when it has read it all.
type puller struct {
	stream jetstream.Stream
	cons   jetstream.Consumer
	// acks: only a work queue's consumer acknowledges (the stream removes
	// what is acked). The others need not: the backtest is the one reader
	// and reads each message once, and an ack for every signal and notice
	// is work for the embedded server, for nothing.
	acks bool
	// read is the stream sequence of the last message fetched: the
	// consumer reads every message of the stream, in order.
	read uint64
	// dropped: the messages up to this sequence are purged (dropRead).
	dropped uint64
}

func newPuller(ctx context.Context, js jetstream.JetStream, name, stream string) (*puller, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	acks := st.CachedInfo().Config.Retention == jetstream.WorkQueuePolicy
	cfg := jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckNonePolicy}
	if acks {
		cfg.AckPolicy, cfg.AckWait, cfg.MaxAckPending = jetstream.AckExplicitPolicy, time.Hour, -1
	}
	cons, err := st.CreateOrUpdateConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer of %s: %w", stream, err)
	}
	return &puller{stream: st, cons: cons, acks: acks}, nil
}

const fetchMax = 1000

// take returns every message stored on the stream so far: it asks the
// stream for its last sequence and fetches until it has read it. A fetch
// that does not wait can come back short of what was just stored, and so
// can the consumer's own count of pending messages (the server updates it
// a moment later): a message left for the next step would be handled a
// step late, and the report would depend on the machine's load.
func (p *puller) take(ctx context.Context) ([]jetstream.Msg, error) {
	si, err := p.stream.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []jetstream.Msg
	wait := false
	for p.read < si.State.LastSeq {
		var batch jetstream.MessageBatch
		if wait {
			batch, err = p.cons.Fetch(fetchMax, jetstream.FetchMaxWait(5*time.Millisecond))
		} else {
			batch, err = p.cons.FetchNoWait(fetchMax)
		}
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			p.read = meta.Sequence.Stream
			out = append(out, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, nats.ErrTimeout) {
			return nil, err
		}
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		wait = n == 0
	}
	return out, nil
}

// serial runs functions one after another, in the order given, each on
// a goroutine apart from the caller's. The zero value is ready.
type serial struct {
	last *job // the last function given
}

// job is a function given to serial.
type job struct {
	done chan struct{} // closed when it returned, or was skipped
	err  error         // its error, or the first of those before it
}

// Go runs f after the functions given before it have returned, unless
// one failed.
func (s *serial) Go(f func() error) {
	prev, j := s.last, &job{done: make(chan struct{})}
	s.last = j
	go func() {
		defer close(j.done)
		if j.err = prev.Wait(); j.err == nil {
			j.err = f()
		}
	}()
}

// Mark is the functions given so far: its Wait waits for them.
func (s *serial) Mark() *job { return s.last }

// Wait waits for the functions given so far, and returns the first
// error; after an error, it is ready again.
func (s *serial) Wait() error {
	err := s.last.Wait()
	s.last = nil
	return err
}

// Wait waits for the job and those before it, and returns the first
// error. A nil job has nothing to wait for.
func (j *job) Wait() error {
	if j == nil {
		return nil
	}
	<-j.done
	return j.err
}

// dropEvery is how many messages a stream gathers, read, before a
// backtest in a temporary folder drops them: a purge is a request to the
// server, and --step 1h has thousands of steps.
const dropEvery = 10_000

// dropRead removes from the streams of a temporary folder what the
// backtest has read. The streams are in memory and keep every message
// for days of wall time: the notices, signals and alert changes of a
// million-event backtest were 300 MB of its 2.7 GB heap, which the
// garbage collector went through again at each cycle, and which grew
// the memory the process touched. A kept folder keeps its streams.
func (r *run) dropRead(ctx context.Context) error {
	for _, p := range []*puller{r.stored, r.signals} {
		if err := r.drop(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// drop removes what p has read from its stream, as dropRead, once that
// is dropEvery messages. Alerting's goroutine drops what it reads.
func (r *run) drop(ctx context.Context, p *puller) error {
	if r.opts.Dir != "" || p.read < p.dropped+cmp.Or(r.opts.dropEvery, dropEvery) {
		return nil
	}
	if err := p.stream.Purge(ctx, jetstream.WithPurgeSequence(p.read+1)); err != nil {
		return fmt.Errorf("drop what was read of %s: %w", p.stream.CachedInfo().Config.Name, err)
	}
	p.dropped = p.read
	return nil
}

// ack acknowledges msgs, if the consumer takes acks.
func (p *puller) ack(msgs []jetstream.Msg) {
	if !p.acks {
		return
	}
	for _, m := range msgs {
		_ = m.Ack()
	}
}
