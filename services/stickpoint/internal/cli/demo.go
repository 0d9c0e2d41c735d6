package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stickpoint/stickpoint/pkg/sdk"
	alertsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/alerts/v1"
	eventsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/events/v1"
	healthv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/health/v1"
	milestonesv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/milestones/v1"
	"github.com/stickpoint/stickpoint/services/alerting/receiver"
	milestones "github.com/stickpoint/stickpoint/services/milestones/app"
	"github.com/stickpoint/stickpoint/services/stickpoint/app"
	"github.com/stickpoint/stickpoint/services/stickpoint/internal/demo"
)

// demoSecret signs the demo's webhook deliveries.
const demoSecret = "whsec_stickpoint_demo"

func demoCommand(env environ) *cobra.Command {
	return leaf("demo", "Load a simulated customer base into a running `make run` and show what a CSM sees: alerts, risk, expansion, the funnel, churn", 0, func(fs *pflag.FlagSet) runner {
		cf := addClientFlags(fs, env)
		url := fs.String("url", envOr(env, "STICKPOINT_URL", "http://127.0.0.1:8080"), "the server's HTTP address, for events (env STICKPOINT_URL)")
		writeKey := fs.String("write-key", env.getenv("STICKPOINT_WRITE_KEY"), "the write key (env STICKPOINT_WRITE_KEY; default: read from --data-dir)")
		dataDir := fs.String("data-dir", ".stickpoint", "the data folder of `make run`, where it saved the demo tenant's credentials")
		modelFile := fs.String("model", "scripts/health-model.yaml", "the health model to put")
		seed := fs.Uint64("seed", 1, "the seed of the simulated customer base")
		wait := fs.Duration("wait", 2*time.Minute, "how long to wait for the platform to process everything")
		quiet := fs.Bool("quiet", false, "no progress bar")
		history := fs.String("history", "", "write the customer base to this folder as files for `stickpoint backtest` (history.jsonl, journeys.yaml, model.yaml, alerting.yaml) instead of sending it")
		return func(ctx context.Context, _ []string) error {
			if *history != "" {
				return writeDemoHistory(env, *history, *modelFile, *seed)
			}
			if *cf.token == "" && env.getenv("STICKPOINT_TOKEN") == "" {
				b, err := os.ReadFile(filepath.Join(*dataDir, app.TokenFile))
				if err != nil {
					return fmt.Errorf("no API token: set STICKPOINT_TOKEN to the `api token:` that `make run` printed on its first start (it saves it in %s; start it on a fresh --data-dir to get one): %w",
						filepath.Join(*dataDir, app.TokenFile), errUsage)
				}
				*cf.token = strings.TrimSpace(string(b))
			}
			if *writeKey == "" {
				b, err := os.ReadFile(filepath.Join(*dataDir, app.WriteKeyFile))
				if err != nil {
					return fmt.Errorf("no write key: pass --write-key or set STICKPOINT_WRITE_KEY to the `write key:` that `make run` prints: %w", errUsage)
				}
				*writeKey = strings.TrimSpace(string(b))
			}
			model, err := os.ReadFile(*modelFile)
			if err != nil {
				return fmt.Errorf("the health model: %w (run make demo from the repository's root, or pass --model)", err)
			}
			*cf.timeout = time.Minute
			s, done, err := dial(ctx, cf, env)
			if err != nil {
				return err
			}
			defer done()
			d := &demoRun{env: env, s: s, cf: cf, url: *url, writeKey: *writeKey, model: model, seed: *seed, wait: *wait, quiet: *quiet}
			return d.run(ctx)
		}
	})
}

type demoRun struct {
	env          environ
	s            *session
	cf           clientFlags
	url          string
	writeKey     string
	model        []byte
	seed         uint64
	wait         time.Duration
	quiet        bool
	hook         *receiver.Webhook
	hookURL      string
	alertsConfig string
}

func (d *demoRun) say(format string, args ...any) { fmt.Fprintf(d.env.stdout, format+"\n", args...) }

func (d *demoRun) run(ctx context.Context) error {
	// 1. A webhook receiver on loopback that verifies every signature.
	d.hook = &receiver.Webhook{Secret: demoSecret}
	srv, addr, err := receiver.Listen("127.0.0.1:0", d.hook)
	if err != nil {
		return fmt.Errorf("start the demo's webhook receiver: %w", err)
	}
	defer func() { _ = srv.Close() }()
	d.hookURL = "http://" + addr + "/hooks/stickpoint"
	var received atomic.Int64
	d.hook.OnReceive = func(receiver.Received) { received.Add(1) }

	// 2. The health model and the alerting configuration. The journey
	// comes after the history, so that onboarding is judged on all of it.
	d.say("== Stickpoint demo: 200 accounts, 60 days of product use\n")
	health := healthv1.NewHealthServiceClient(d.s.conn)
	if _, err := health.PutModel(d.s.ctx, &healthv1.PutModelRequest{Source: string(d.model)}); err != nil {
		return d.s.explain(err)
	}
	d.say("put the health model (scripts/health-model.yaml)")
	alerts := alertsv1.NewAlertsServiceClient(d.s.conn)
	d.alertsConfig = demoAlerting(d.hookURL, true)
	if _, err := alerts.PutConfig(d.s.ctx, &alertsv1.PutConfigRequest{Source: d.alertsConfig}); err != nil {
		return d.s.explain(err)
	}
	d.say("put the alerting configuration: alerts go to a webhook receiver on %s that verifies their signatures", d.hookURL)

	// 3. The customer base, through the HTTP API with the Go SDK.
	before, err := eventsv1.NewEventsServiceClient(d.s.conn).Count(d.s.ctx, &eventsv1.CountRequest{})
	if err != nil {
		return d.s.explain(err)
	}
	base := demo.Generate(time.Now(), d.seed)
	d.say("sending %d calls (200 groups, then each account's events, oldest first) to %s", len(base.Calls), d.url)
	if err := d.send(base); err != nil {
		return err
	}
	want := before.GetCount() + uint64(len(base.Calls)-len(base.Accounts))
	if err := d.until(ctx, "every event stored", func() (bool, error) {
		n, err := eventsv1.NewEventsServiceClient(d.s.conn).Count(d.s.ctx, &eventsv1.CountRequest{})
		return n.GetCount() >= want, err
	}); err != nil {
		return err
	}
	ms := milestonesv1.NewMilestonesServiceClient(d.s.conn)
	put, err := ms.PutJourney(d.s.ctx, &milestonesv1.PutJourneyRequest{Source: milestones.JourneyTemplate})
	if err != nil {
		return d.s.explain(err)
	}
	d.say("put the onboarding journey (stickpoint journeys template); every account is evaluated")
	reason := journeyBackfill(put.GetJourney())
	if err := d.until(ctx, "the journey's backfill", func() (bool, error) {
		if put.GetUnchanged() { // put before, on this data folder: nothing to wait for
			return true, nil
		}
		bf, err := ms.GetBackfill(d.s.ctx, &milestonesv1.GetBackfillRequest{})
		if status.Code(err) == codes.NotFound {
			return false, nil // queued, not started yet
		}
		return bf.GetReason() == reason && bf.GetDone(), err
	}); err != nil {
		return err
	}
	// Alerts settle once nothing new has come for a few seconds.
	var last int64 = -1
	stableSince := time.Now()
	if err := d.until(ctx, "alerts to settle", func() (bool, error) {
		n := received.Load()
		if n != last {
			last, stableSince = n, time.Now()
		}
		return n > 0 && time.Since(stableSince) > 5*time.Second, nil
	}); err != nil {
		return err
	}

	// 4. What a CSM sees.
	d.show("Open alerts: critical", "alerts", "list", "--state", "open", "--severity", "critical")
	d.show("Open alerts: high", "alerts", "list", "--state", "open", "--severity", "high", "--limit", "15")
	d.show("Open alerts: medium (the first 10)", "alerts", "list", "--state", "open", "--severity", "medium", "--limit", "10")
	if err := d.showEvidence(alerts); err != nil {
		return err
	}
	dups, rejected := d.hook.Counts()
	d.say("\nThe webhook receiver got %d signed alerts: every signature verified (%d refused), %d duplicate deliveries.", len(d.hook.Got()), rejected, dups)
	d.show("Accounts at risk, lowest health first", "accounts", "list", "--at-risk", "--sort", "health", "--limit", "15")
	d.show("Accounts ready to expand", "accounts", "list", "--expansion-ready")
	d.show("The onboarding funnel", "milestones", "funnel")
	d.show("Churn: foreseen, and how early", "churn", "report")

	// The receiver goes away with this command: keep the rules, drop the
	// channel, so that later alerts are listed and watched, not sent to a
	// closed port.
	if _, err := alerts.PutConfig(d.s.ctx, &alertsv1.PutConfigRequest{Source: demoAlerting("", false)}); err != nil {
		return d.s.explain(err)
	}
	d.say(`
Next:
  stickpoint alerts watch                 # alerts as they happen (send a "Cancellation Requested" event and watch)
  stickpoint alerts get <ID>              # one alert: evidence, lifecycle, delivery log
  stickpoint alerts ack <ID> --by you@example.com
  stickpoint accounts get <ACCOUNT>       # health and why, cancel intent, onboarding
  stickpoint alerting get                 # the configuration; put your own channels with alerting put FILE
(The demo's webhook receiver has stopped, so its channel is removed from the configuration; the rules stay.)`)
	return nil
}

// writeDemoHistory writes the demo's customer base, 60 days up to now,
// and its journey, model and alerting rules, as a backtest's inputs.
func writeDemoHistory(env environ, dir, modelFile string, seed uint64) error {
	model, err := os.ReadFile(modelFile)
	if err != nil {
		return fmt.Errorf("the health model: %w (run it from the repository's root, or pass --model)", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--history: %w", err)
	}
	base := demo.Generate(time.Now(), seed)
	f, err := os.Create(filepath.Join(dir, "history.jsonl"))
	if err != nil {
		return fmt.Errorf("--history: %w", err)
	}
	if err := base.WriteHistory(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("--history: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--history: %w", err)
	}
	for name, content := range map[string]string{"journeys.yaml": milestones.JourneyTemplate, "model.yaml": string(model), "alerting.yaml": demoAlerting("", false)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("--history: %w", err)
		}
	}
	fmt.Fprintf(env.stdout, "wrote %d calls of %d accounts over 60 days to %s, with the demo's journey, model and alerting rules\n",
		len(base.Calls), len(base.Accounts), filepath.Join(dir, "history.jsonl"))
	fmt.Fprintf(env.stdout, "try: stickpoint backtest --events %[1]s/history.jsonl --journeys %[1]s/journeys.yaml --model %[1]s/model.yaml --alerting %[1]s/alerting.yaml --step 1d\n", dir)
	return nil
}

// demoAlerting is the demo's configuration: the rules, every one
// to the demo's webhook while it runs.
func demoAlerting(hookURL string, withHook bool) string {
	channels, to := "channels: []\n", ""
	if withHook {
		channels = fmt.Sprintf("channels:\n  - id: demo-hook\n    type: webhook\n    url: %s\n    secret: %s\n", hookURL, demoSecret)
		to = "\n    channels: [demo-hook]"
	}
	return `# The demo's alerting configuration (stickpoint demo).
owner_trait: csm_email
` + channels + `rules:
  - kind: cancellation_requested
    severity: critical` + to + `
  - kind: cancel_intent
    severity: high` + to + `
    cooldown: 7d
  - kind: onboarding_stalled
    severity: medium
    when: [{trait: plan, op: in, value: [pro, team]}]` + to + `
  - kind: onboarding_late
    severity: low` + to + `
  - kind: health_red
    severity: medium` + to + `
  - kind: churn_recorded
    severity: info` + to + "\n"
}

func (d *demoRun) send(base demo.Base) error {
	var refused atomic.Int64
	client, err := sdk.New(sdk.Config{Endpoint: d.url, WriteKey: d.writeKey, BatchSize: 500, FlushInterval: 200 * time.Millisecond,
		OnError:  func(error, int) { refused.Add(1) },
		OnReject: func(sdk.Rejection) { refused.Add(1) }})
	if err != nil {
		return err
	}
	bar := newProgress(d.env.stderr, int64(len(base.Calls)), d.quiet)
	for i, c := range base.Calls {
		// Each account's history goes in requests of its own, so that it
		// is stored, and scored, whole (see demo.Generate).
		if i > 0 && c.Account != base.Calls[i-1].Account && c.Traits == nil {
			client.Flush()
		}
		ctx := map[string]any{"groupId": c.Account}
		call := func() error {
			switch {
			case c.Traits != nil:
				return client.Group(sdk.Group{UserID: c.User, GroupID: c.Account, Traits: c.Traits, Timestamp: c.At})
			case c.Path != "":
				return client.Page(sdk.Page{UserID: c.User, Name: "Billing", Properties: map[string]any{"path": c.Path}, Context: ctx, Timestamp: c.At})
			}
			return client.Track(sdk.Track{UserID: c.User, Event: c.Event, Properties: c.Properties, Context: ctx, Timestamp: c.At})
		}
		// The SDK never blocks its caller: when its queue is full, the
		// demo waits its turn.
		for err = call(); errors.Is(err, sdk.ErrQueueFull); err = call() {
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			return err
		}
		if i%500 == 0 {
			bar.set(int64(i))
		}
	}
	if err := client.Close(); err != nil {
		return err
	}
	bar.done(int64(len(base.Calls)))
	if n := refused.Load(); n > 0 {
		return fmt.Errorf("the server refused %d batches or calls; see the server's log", n)
	}
	return nil
}

// until polls ok every half second until it holds, for at most the wait.
func (d *demoRun) until(ctx context.Context, what string, ok func() (bool, error)) error {
	deadline := time.Now().Add(d.wait)
	for {
		done, err := ok()
		if err != nil {
			return d.s.explain(err)
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waited %s for %s; is the server busy? see its log", d.wait, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// show runs a CLI command as a CSM would type it, under a title.
func (d *demoRun) show(title string, args ...string) {
	d.say("\n== %s\n$ stickpoint %s", title, strings.Join(args, " "))
	sub := environ{stdin: strings.NewReader(""), stdout: d.env.stdout, stderr: d.env.stderr, getenv: func(k string) string {
		switch k {
		case "STICKPOINT_ADDR":
			return *d.cf.addr
		case "STICKPOINT_TOKEN":
			return *d.cf.token
		}
		return ""
	}}
	root := rootCommand(sub)
	root.SetArgs(args)
	root.SetOut(d.env.stdout)
	root.SetErr(d.env.stderr)
	if err := root.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(d.env.stderr, "stickpoint:", err)
	}
}

// showEvidence prints the evidence of the most severe open alert of each
// kind, as `stickpoint alerts get` does.
func (d *demoRun) showEvidence(client alertsv1.AlertsServiceClient) error {
	resp, err := client.List(d.s.ctx, &alertsv1.ListRequest{State: alertsv1.State_STATE_OPEN, PageSize: 1000})
	if err != nil {
		return d.s.explain(err)
	}
	seen := map[string]bool{}
	for _, a := range resp.GetAlerts() {
		if seen[a.GetKind()] {
			continue
		}
		seen[a.GetKind()] = true
		d.show("Why: one "+a.GetKind()+" alert, whole", "alerts", "get", a.GetId())
	}
	return nil
}
