package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	alertsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/alerts/v1"
	authv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/auth/v1"
	signalsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/signals/v1"
	"github.com/stickpoint/stickpoint/services/alerting/internal/delivery"
	"github.com/stickpoint/stickpoint/services/alerting/internal/lifecycle"
	"github.com/stickpoint/stickpoint/services/alerting/receiver"
	"github.com/stickpoint/stickpoint/services/alerting/receiver/smtpsink"
)

const tenant = "t1"

// env is the alerting service on a real NATS server, with a real receiver
// at the end of each channel: a webhook server that verifies signatures, a
// Slack-shaped server, and an SMTP server.
type env struct {
	t        *testing.T
	bus      *natsjs.Bus
	cfg      Config
	svc      *Service
	stop     func()
	hook     *receiver.Webhook
	hookAddr string
	slack    *receiver.Slack
	sink     *smtpsink.Sink
}

func newEnv(t *testing.T) *env {
	e := &env{t: t, bus: testutil.NATS(t), hook: &receiver.Webhook{Secret: "whsec_test_123"}, slack: &receiver.Slack{}}
	e.cfg = DefaultConfig()
	e.cfg.SweepInterval = time.Second
	e.cfg.Delivery = delivery.Config{MaxAttempts: 20, Backoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, Concurrency: 8}
	srv, addr, err := receiver.Listen("127.0.0.1:0", e.hook)
	if err != nil {
		t.Fatal(err)
	}
	e.hookAddr = addr
	t.Cleanup(func() { _ = srv.Close() })
	ssrv, saddr, err := receiver.Listen("127.0.0.1:0", e.slack)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ssrv.Close() })
	if e.sink, err = smtpsink.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.sink.Close() })
	e.start()
	e.putConfig(fmt.Sprintf(`
owner_trait: csm_email
account_url: https://crm.example.com/accounts/{account_id}
channels:
  - {id: team-hook, type: webhook, url: "http://%s/hooks/stickpoint", secret: whsec_test_123, timeout: 2s}
  - {id: cs-slack, type: slack, url: "http://%s/services/T000/B000/XXX"}
  - {id: owner-mail, type: email, smtp: "%s", from: alerts@stickpoint.local, starttls: "off"}
rules:
  - {kind: cancellation_requested, severity: critical, channels: [team-hook, cs-slack, owner-mail]}
  - {kind: cancel_intent, severity: high, channels: [team-hook], cooldown: 7d}
  - {kind: onboarding_stalled, severity: medium, channels: [team-hook], when: [{trait: plan, op: in, value: [pro, team]}]}
escalation: {after: 2s, channels: [cs-slack]}
`, e.hookAddr, saddr, e.sink.Addr))
	return e
}

func (e *env) start() {
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := New(ctx, e.cfg, e.bus, testutil.Logger(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	e.svc = svc
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("alerting stopped with %v", err)
			}
		})
	}
	e.stop = stop
	e.t.Cleanup(stop)
}

func (e *env) restart() {
	e.stop()
	e.stop = nil
	e.start()
}

func (e *env) ctx() context.Context {
	return tenancy.WithPrincipal(e.t.Context(), tenancy.Principal{TenantID: tenant, TokenID: "tok1",
		Scopes: []authv1.Scope{authv1.Scope_SCOPE_ADMIN}})
}

func (e *env) putConfig(src string) {
	e.t.Helper()
	if _, err := e.svc.API.PutConfig(e.ctx(), &alertsv1.PutConfigRequest{Source: src}); err != nil {
		e.t.Fatal(err)
	}
}

var seq int

// publish sends a signal as a detection service does.
func (e *env) publish(sig *signalsv1.Signal, msgID string) {
	e.t.Helper()
	data, _ := proto.Marshal(sig)
	if err := e.bus.Publish(e.t.Context(), natsjs.SignalSubject(sig.GetTenantId(), sig.GetKind()), data, msgID); err != nil {
		e.t.Fatal(err)
	}
}

func newSignal(kind, account, plan string) *signalsv1.Signal {
	seq++
	now := time.Now()
	sig := &signalsv1.Signal{Id: fmt.Sprintf("sig-%d", seq), TenantId: tenant, AccountId: account, Kind: kind,
		OccurredAt: timestamppb.New(now), DetectedAt: timestamppb.New(now), Summary: account + " " + kind,
		Account: &signalsv1.AccountSnapshot{Name: strings.ToUpper(account), TraitsJson: fmt.Sprintf(`{"csm_email":"csm-%s@example.com","plan":%q}`, account, plan)}}
	if kind == "cancellation_requested" {
		sig.Evidence = &signalsv1.Signal_CancelIntent{CancelIntent: &signalsv1.CancelIntentEvidence{
			Request: &signalsv1.CancelIntentHit{At: timestamppb.New(now), UserId: "u-42", MessageId: "m-1"}}}
	}
	return sig
}

func (e *env) alert(kind, account string) *alertsv1.Alert {
	e.t.Helper()
	resp, err := e.svc.API.Get(e.ctx(), &alertsv1.GetRequest{Id: lifecycle.AlertID(tenant, account, kind)})
	if err != nil {
		return nil
	}
	return resp.GetAlert()
}

func eventually(t *testing.T, what string, within time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAnAlertReachesEachChannelOnceWithItsEvidence(t *testing.T) {
	e := newEnv(t)
	sig := newSignal("cancellation_requested", "acme", "pro")
	e.publish(sig, sig.GetId())
	eventually(t, "the webhook, Slack and the mailbox each got the alert", 10*time.Second, func() bool {
		return len(e.hook.Got()) == 1 && len(e.slack.Got()) == 1 && len(e.sink.Mail()) == 1
	})

	// The webhook: signed (the receiver verified it), with a delivery id,
	// and the alert with its account, owner and evidence.
	got := e.hook.Got()[0]
	var p delivery.Payload
	if err := json.Unmarshal(got.Body, &p); err != nil {
		t.Fatal(err)
	}
	a := p.Alert
	if p.DeliveryID != got.DeliveryID || p.Trigger != "opened" || a.Kind != "cancellation_requested" || a.Severity != "critical" || a.State != "open" ||
		a.Account.ID != "acme" || a.Account.Name != "ACME" || a.Account.Owner != "csm-acme@example.com" || a.Link != "https://crm.example.com/accounts/acme" {
		t.Fatalf("webhook payload: %+v", p)
	}
	if !strings.Contains(strings.Join(a.Evidence, "\n"), "cancellation requested") || !strings.Contains(strings.Join(a.Evidence, "\n"), "by u-42") {
		t.Fatalf("evidence: %q", a.Evidence)
	}
	// Slack: Block Kit naming the account, kind and owner.
	msg, _ := json.Marshal(e.slack.Got()[0])
	for _, want := range []string{"cancellation requested", "ACME", "csm-acme@example.com", "cancellation requested", "https://crm.example.com/accounts/acme"} {
		if !strings.Contains(strings.ToLower(string(msg)), strings.ToLower(want)) {
			t.Fatalf("slack message lacks %q: %s", want, msg)
		}
	}
	// E-mail: to the owner, with a text and an HTML part.
	m := e.sink.Mail()[0]
	if m.From != "alerts@stickpoint.local" || len(m.To) != 1 || m.To[0] != "csm-acme@example.com" {
		t.Fatalf("mail envelope: %s -> %v", m.From, m.To)
	}
	if parts := mimeParts(t, m.Data); !strings.Contains(parts["text/plain"], "cancellation requested") || !strings.Contains(parts["text/html"], "<li>cancellation requested") {
		t.Fatalf("mail parts: %v", parts)
	}

	// A repeat signal and a redelivered one update the alert, and notify
	// nobody again.
	again := newSignal("cancellation_requested", "acme", "pro")
	e.publish(again, again.GetId())
	e.publish(sig, "redelivered-"+sig.GetId())
	eventually(t, "the alert counted the repeat", 5*time.Second, func() bool { return e.alert("cancellation_requested", "acme").GetCount() == 2 })
	time.Sleep(500 * time.Millisecond)
	if len(e.hook.Got()) != 1 || len(e.slack.Got()) != 1 || len(e.sink.Mail()) != 1 {
		t.Fatalf("a repeat notified again: %d webhook, %d slack, %d mail", len(e.hook.Got()), len(e.slack.Got()), len(e.sink.Mail()))
	}
	if dups, rejected := e.hook.Counts(); dups != 0 || rejected != 0 {
		t.Fatalf("webhook saw %d duplicates and %d bad signatures", dups, rejected)
	}
	// The delivery log shows each channel delivered.
	log := e.alert("cancellation_requested", "acme").GetDeliveries()
	delivered := map[string]bool{}
	for _, d := range log {
		if d.GetStatus() == "delivered" {
			delivered[d.GetChannelId()] = true
		}
	}
	if len(delivered) != 3 {
		t.Fatalf("delivery log: %v", log)
	}
}

func mimeParts(t *testing.T, data []byte) map[string]string {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	r := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := r.NextPart()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		b, _ := io.ReadAll(p) // multipart decodes quoted-printable
		out[ct] = string(b)
	}
}

func TestRulesConditionsAndKindsWithoutARule(t *testing.T) {
	e := newEnv(t)
	free := newSignal("onboarding_stalled", "freebie", "free")
	pro := newSignal("onboarding_stalled", "bigco", "pro")
	nothing := newSignal("milestone_reached", "bigco", "pro")
	for _, s := range []*signalsv1.Signal{free, nothing, pro} {
		e.publish(s, s.GetId())
	}
	eventually(t, "the pro account's stall alerted", 5*time.Second, func() bool { return e.alert("onboarding_stalled", "bigco") != nil })
	if e.alert("onboarding_stalled", "freebie") != nil || e.alert("milestone_reached", "bigco") != nil {
		t.Fatal("a signal no rule matches raised an alert")
	}
	// Back on track: the stall resolves itself.
	e.publish(newSignal("onboarding_on_track", "bigco", "pro"), "")
	eventually(t, "the stall auto-resolved", 5*time.Second, func() bool {
		return e.alert("onboarding_stalled", "bigco").GetState() == alertsv1.State_STATE_RESOLVED
	})
}

// R9: the webhook is down, then up: the alert arrives once, after retries.
func TestWebhookDownThenUpDeliversOnce(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	down := true
	e.hook.Fail = func(*http.Request) (int, string) {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return http.StatusServiceUnavailable, "0"
		}
		return 0, ""
	}
	sig := newSignal("cancel_intent", "acme", "pro")
	e.publish(sig, sig.GetId())
	eventually(t, "two failed attempts were logged", 10*time.Second, func() bool {
		n := 0
		for _, d := range e.alert("cancel_intent", "acme").GetDeliveries() {
			if d.GetStatus() == "failed" && d.GetCode() == http.StatusServiceUnavailable {
				n++
			}
		}
		return n >= 2
	})
	if len(e.hook.Got()) != 0 {
		t.Fatal("delivered while down")
	}
	mu.Lock()
	down = false
	mu.Unlock()
	eventually(t, "the alert was delivered after recovery", 10*time.Second, func() bool { return len(e.hook.Got()) == 1 })
	time.Sleep(time.Second)
	if n := len(e.hook.Got()); n != 1 {
		t.Fatalf("delivered %d times", n)
	}
	if dups, _ := e.hook.Counts(); dups != 0 {
		t.Fatalf("%d duplicate deliveries", dups)
	}
}

// A webhook whose server is gone refuses connections; its notification is
// retried, and nothing else waits for it.
func TestAChannelThatIsDownDoesNotDelayTheOthers(t *testing.T) {
	e := newEnv(t)
	// The webhook hangs past its 2 s timeout; Slack and mail answer.
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	e.hook.Fail = func(r *http.Request) (int, string) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return http.StatusGatewayTimeout, ""
	}
	sig := newSignal("cancellation_requested", "acme", "pro")
	e.publish(sig, sig.GetId())
	eventually(t, "slack and mail delivered", 5*time.Second, func() bool { return len(e.slack.Got()) == 1 && len(e.sink.Mail()) == 1 })
	// They were delivered while the webhook's first attempt still hung.
	for _, d := range e.alert("cancellation_requested", "acme").GetDeliveries() {
		if d.GetChannelId() == "team-hook" {
			t.Fatalf("slack and mail waited for the webhook's attempt: %v", d)
		}
	}
	eventually(t, "the hung webhook attempt was logged as failed", 10*time.Second, func() bool {
		for _, d := range e.alert("cancellation_requested", "acme").GetDeliveries() {
			if d.GetChannelId() == "team-hook" && d.GetStatus() == "failed" {
				return true
			}
		}
		return false
	})
}

func TestEscalationAndLifecycleOverTheAPI(t *testing.T) {
	e := newEnv(t)
	acked := newSignal("cancel_intent", "calm", "pro")
	ignored := newSignal("cancel_intent", "ignored", "pro")
	e.publish(acked, acked.GetId())
	e.publish(ignored, ignored.GetId())
	eventually(t, "both alerts open", 5*time.Second, func() bool {
		return e.alert("cancel_intent", "calm") != nil && e.alert("cancel_intent", "ignored") != nil
	})
	id := lifecycle.AlertID(tenant, "calm", "cancel_intent")
	resp, err := e.svc.API.Acknowledge(e.ctx(), &alertsv1.AcknowledgeRequest{Id: id, By: "ana@example.com", Note: "calling them"})
	if err != nil || resp.GetAlert().GetState() != alertsv1.State_STATE_ACKNOWLEDGED {
		t.Fatalf("acknowledge: %v %v", resp, err)
	}
	// After 2 s the unacknowledged one escalates to Slack, once.
	eventually(t, "the ignored alert escalated to Slack", 10*time.Second, func() bool { return len(e.slack.Got()) == 1 })
	if !strings.Contains(fmt.Sprint(e.slack.Got()[0]), "IGNORED") || !e.alert("cancel_intent", "ignored").GetEscalated() || e.alert("cancel_intent", "calm").GetEscalated() {
		t.Fatalf("escalated the wrong alert: %v", e.slack.Got()[0])
	}
	if _, err := e.svc.API.Resolve(e.ctx(), &alertsv1.ResolveRequest{Id: id, Note: "budget sorted"}); err != nil {
		t.Fatal(err)
	}
	a := e.alert("cancel_intent", "calm")
	steps := a.GetSteps()
	if a.GetState() != alertsv1.State_STATE_RESOLVED || len(steps) != 3 || steps[1].GetBy() != "ana@example.com" || steps[2].GetBy() != "token:tok1" || steps[2].GetNote() != "budget sorted" {
		t.Fatalf("lifecycle: %v", steps)
	}
	list, err := e.svc.API.List(e.ctx(), &alertsv1.ListRequest{State: alertsv1.State_STATE_OPEN})
	if err != nil || len(list.GetAlerts()) != 1 || list.GetAlerts()[0].GetAccountId() != "ignored" {
		t.Fatalf("list open: %v %v", list, err)
	}
	if _, err := e.svc.API.Acknowledge(e.ctx(), &alertsv1.AcknowledgeRequest{Id: "nope"}); err == nil {
		t.Fatal("acknowledged an alert that does not exist")
	}
	other := tenancy.WithPrincipal(t.Context(), tenancy.Principal{TenantID: "t2", Scopes: []authv1.Scope{authv1.Scope_SCOPE_ADMIN}})
	if _, err := e.svc.API.Get(other, &alertsv1.GetRequest{Id: id}); err == nil {
		t.Fatal("another tenant read the alert")
	}
}

// R10 for alerting: a restart loses nothing and repeats nothing, and a
// notification a crash left in an alert's outbox is sent once.
func TestRestartNeitherLosesNorRepeats(t *testing.T) {
	e := newEnv(t)
	first := newSignal("cancel_intent", "acme", "pro")
	e.publish(first, first.GetId())
	eventually(t, "delivered", 5*time.Second, func() bool { return len(e.hook.Got()) == 1 })
	e.deliveriesAcked()
	e.stop()
	e.stop = nil
	// While it is down: a repeat, and a new alert.
	repeat := newSignal("cancel_intent", "acme", "pro")
	other := newSignal("cancel_intent", "globex", "pro")
	e.publish(repeat, repeat.GetId())
	e.publish(other, other.GetId())
	e.start()
	eventually(t, "the new alert delivered after the restart", 5*time.Second, func() bool { return len(e.hook.Got()) == 2 })
	eventually(t, "the repeat counted", 5*time.Second, func() bool { return e.alert("cancel_intent", "acme").GetCount() == 2 })
	e.deliveriesAcked()

	// A crash between storing a change and handing over its notification:
	// the outbox is in the store; the sweep sends it, once.
	crashed := newSignal("cancel_intent", "initech", "pro")
	e.stop()
	e.stop = nil
	if err := e.writeUnsent(crashed); err != nil {
		t.Fatal(err)
	}
	e.start()
	eventually(t, "the unsent notification went out", 5*time.Second, func() bool { return len(e.hook.Got()) == 3 })
	e.deliveriesAcked()
	e.restart()
	time.Sleep(1500 * time.Millisecond) // a sweep or two
	if n := len(e.hook.Got()); n != 3 {
		t.Fatalf("%d deliveries, want 3", n)
	}
	if dups, _ := e.hook.Counts(); dups != 0 {
		t.Fatalf("%d duplicate deliveries", dups)
	}
}

// deliveriesAcked waits until the dispatcher has acknowledged every
// delivery it made. A stop between a webhook's answer and that ack
// delivers again after the restart, with the same delivery id, as
// at-least-once delivery must (receivers dedup on the id); the test stops
// the service at the points it means to, after the acks.
func (e *env) deliveriesAcked() {
	e.t.Helper()
	eventually(e.t, "every delivery acknowledged", 5*time.Second, func() bool {
		c, err := e.bus.JS.Consumer(e.t.Context(), natsjs.DeliveriesStream, delivery.Durable)
		if err != nil {
			return false
		}
		info, err := c.Info(e.t.Context())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
}

// writeUnsent stores the alert a signal opens, outbox and all, as a crash
// right after the store would leave it.
func (e *env) writeUnsent(sig *signalsv1.Signal) error {
	cfgs, err := OpenConfigs(e.t.Context(), e.bus)
	if err != nil {
		return err
	}
	st, err := cfgs.Get(e.t.Context(), tenant)
	if err != nil {
		return err
	}
	rule := st.Spec.Rule(sig.GetKind(), lifecycle.AccountOf(sig))
	rec, _ := lifecycle.OnSignal(tenant, nil, sig, rule, st.Spec, "", time.Now())
	b, err := rec.Marshal()
	if err != nil {
		return err
	}
	kv, err := e.bus.JS.KeyValue(e.t.Context(), "alerts")
	if err != nil {
		return err
	}
	_, err = kv.Create(e.t.Context(), tenant+"."+rec.Alert.GetId(), b)
	return err
}

// watchStream is the server side of a Watch call, in memory.
type watchStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent chan *alertsv1.WatchResponse
}

func (w *watchStream) Context() context.Context             { return w.ctx }
func (w *watchStream) Send(r *alertsv1.WatchResponse) error { w.sent <- r; return nil }

func TestWatchStreamsChangesAndResumesFromACursor(t *testing.T) {
	e := newEnv(t)
	watch := func(cursor string) (*watchStream, func()) {
		ctx, cancel := context.WithCancel(e.ctx())
		w := &watchStream{ctx: ctx, sent: make(chan *alertsv1.WatchResponse, 100)}
		done := make(chan struct{})
		go func() { _ = e.svc.API.Watch(&alertsv1.WatchRequest{Cursor: cursor}, w); close(done) }()
		return w, func() { cancel(); <-done }
	}
	next := func(w *watchStream) *alertsv1.WatchResponse {
		select {
		case r := <-w.sent:
			return r
		case <-time.After(5 * time.Second):
			t.Fatal("no change within 5s")
			return nil
		}
	}
	w, stop := watch("")
	time.Sleep(300 * time.Millisecond) // the watcher is subscribed
	a := newSignal("cancel_intent", "acme", "pro")
	e.publish(a, a.GetId())
	got := next(w)
	if got.GetChange() != "opened" || got.GetAlert().GetAccountId() != "acme" {
		t.Fatalf("first change: %v", got)
	}
	stop() // the client disconnects; meanwhile two more changes happen
	b := newSignal("cancel_intent", "globex", "pro")
	e.publish(b, b.GetId())
	c := newSignal("cancel_intent", "acme", "pro")
	e.publish(c, c.GetId())
	eventually(t, "both applied", 5*time.Second, func() bool { return e.alert("cancel_intent", "acme").GetCount() == 2 })
	w2, stop2 := watch(got.GetCursor())
	defer stop2()
	r1, r2 := next(w2), next(w2)
	if r1.GetChange() != "opened" || r1.GetAlert().GetAccountId() != "globex" || r2.GetChange() != "updated" || r2.GetAlert().GetAccountId() != "acme" {
		t.Fatalf("resumed: %v, %v", r1, r2)
	}
}
