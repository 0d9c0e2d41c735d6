package lifecycle

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	alertsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/alerts/v1"
	signalsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/signals/v1"
	"github.com/stickpoint/stickpoint/services/alerting/internal/config"
)

// clock is a fake clock the tests move by hand.
type clock struct{ now time.Time }

func (c *clock) advance(d time.Duration) time.Time { c.now = c.now.Add(d); return c.now }

func testConfig(t *testing.T) config.Config {
	t.Helper()
	c, err := config.Parse([]byte(`
owner_trait: csm_email
account_url: https://crm.example.com/accounts/{account_id}
channels:
  - {id: hook, type: webhook, url: http://127.0.0.1:1/h, secret: whsec_12345678}
  - {id: slack, type: slack, url: http://127.0.0.1:1/s}
rules:
  - {kind: cancel_intent, severity: high, channels: [hook], cooldown: 7d}
  - {kind: onboarding_stalled, severity: medium, channels: [hook]}
escalation: {after: 24h, channels: [slack]}
`))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func signal(id, kind string, at time.Time) *signalsv1.Signal {
	return &signalsv1.Signal{Id: id, TenantId: "t1", AccountId: "acme", Kind: kind, OccurredAt: timestamppb.New(at), Summary: kind + " " + id,
		Account: &signalsv1.AccountSnapshot{Name: "Acme", TraitsJson: `{"csm_email":"ana@example.com","name":"Acme"}`}}
}

// apply is what the alerter does with a signal: the rule, then OnSignal.
func apply(t *testing.T, cfg config.Config, rec *Record, sig *signalsv1.Signal, now time.Time) (*Record, string) {
	t.Helper()
	rule := cfg.Rule(sig.GetKind(), AccountOf(sig))
	if rule == nil {
		t.Fatalf("no rule for %s", sig.GetKind())
	}
	next, change := OnSignal("t1", rec, sig, rule, cfg, "", now)
	if next == nil {
		return rec, change
	}
	return next, change
}

func TestOpenThenRepeatsUpdateWithoutNotifying(t *testing.T) {
	cfg, clk := testConfig(t), &clock{now: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	rec, change := apply(t, cfg, nil, signal("s1", "cancel_intent", clk.now), clk.now)
	if change != Opened || len(rec.Outbox) != 1 || rec.Outbox[0].Channel != "hook" || rec.Outbox[0].Trigger != Opened {
		t.Fatalf("first signal: change %q, outbox %+v", change, rec.Outbox)
	}
	a := rec.Alert
	if a.GetOwner() != "ana@example.com" || a.GetAccountName() != "Acme" || a.GetSeverity() != alertsv1.Severity_SEVERITY_HIGH ||
		a.GetLink() != "https://crm.example.com/accounts/acme" || a.GetState() != alertsv1.State_STATE_OPEN || a.GetId() != AlertID("t1", "acme", "cancel_intent") {
		t.Fatalf("opened alert: %+v", a)
	}
	rec.Outbox = nil // handed over

	// The same signal again (redelivery): nothing changes.
	if next, change := OnSignal("t1", rec, signal("s1", "cancel_intent", clk.now), &cfg.Rules[0], cfg, "", clk.advance(time.Minute)); next != nil || change != "" {
		t.Fatalf("redelivered signal changed the alert: %q", change)
	}
	// A new signal of the kind: count and evidence, no notification.
	rec, change = apply(t, cfg, rec, signal("s2", "cancel_intent", clk.now), clk.advance(time.Hour))
	if change != Updated || rec.Alert.GetCount() != 2 || len(rec.Outbox) != 0 || rec.Alert.GetEvidence().GetId() != "s2" {
		t.Fatalf("repeat: change %q count %d outbox %v evidence %s", change, rec.Alert.GetCount(), rec.Outbox, rec.Alert.GetEvidence().GetId())
	}
}

func TestCooldownAfterResolve(t *testing.T) {
	cfg, clk := testConfig(t), &clock{now: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	rec, _ := apply(t, cfg, nil, signal("s1", "cancel_intent", clk.now), clk.now)
	rec.Outbox = nil
	rec, err := Resolve(rec, "ana@example.com", "called them; a budget question", clk.advance(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	resolvedAt := clk.now
	if _, err := Resolve(rec, "ana", "", clk.now); err == nil {
		t.Fatal("resolving twice succeeded")
	}
	// New evidence within the 7-day cooldown: no reopening.
	rec, change := apply(t, cfg, rec, signal("s2", "cancel_intent", resolvedAt.Add(3*24*time.Hour)), clk.advance(3*24*time.Hour))
	if change != "" || rec.Alert.GetState() != alertsv1.State_STATE_RESOLVED || len(rec.Outbox) != 0 {
		t.Fatalf("within the cooldown: change %q state %v", change, rec.Alert.GetState())
	}
	// Old evidence (before the resolve), even after the cooldown: nothing.
	clk.advance(5 * 24 * time.Hour)
	if _, change := apply(t, cfg, rec, signal("s0", "cancel_intent", resolvedAt.Add(-time.Minute)), clk.now); change != "" {
		t.Fatalf("old evidence reopened the alert: %q", change)
	}
	// New evidence after the cooldown: reopened, notified again, episode 2.
	rec, change = apply(t, cfg, rec, signal("s3", "cancel_intent", clk.now), clk.now)
	if change != Reopened || rec.Alert.GetEpisode() != 2 || rec.Alert.GetCount() != 1 || len(rec.Outbox) != 1 || rec.Outbox[0].Trigger != Reopened {
		t.Fatalf("after the cooldown: change %q episode %d outbox %+v", change, rec.Alert.GetEpisode(), rec.Outbox)
	}
	if first := DeliveryID(rec.Alert.GetId(), 1, Opened, "hook"); rec.Outbox[0].DeliveryID == first {
		t.Fatal("a reopening reuses the first episode's delivery id")
	}
}

func TestEscalationOnceUnlessAcknowledged(t *testing.T) {
	cfg, clk := testConfig(t), &clock{now: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	rec, _ := apply(t, cfg, nil, signal("s1", "onboarding_stalled", clk.now), clk.now)
	rec.Outbox = nil
	if Escalate(rec, cfg.Escalation, clk.advance(23*time.Hour)) != nil {
		t.Fatal("escalated before 24h")
	}
	esc := Escalate(rec, cfg.Escalation, clk.advance(time.Hour))
	if esc == nil || !esc.Alert.GetEscalated() || len(esc.Outbox) != 1 || esc.Outbox[0].Channel != "slack" || esc.Outbox[0].Trigger != Escalated {
		t.Fatalf("escalation at 24h: %+v", esc)
	}
	esc.Outbox = nil
	if Escalate(esc, cfg.Escalation, clk.advance(48*time.Hour)) != nil {
		t.Fatal("escalated twice")
	}
	// An acknowledged alert never escalates.
	other, _ := apply(t, cfg, nil, signal("s9", "cancel_intent", clk.now), clk.now)
	acked, err := Acknowledge(other, "ana@example.com", "on it", clk.advance(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if acked.Alert.GetState() != alertsv1.State_STATE_ACKNOWLEDGED || last(acked).GetBy() != "ana@example.com" || last(acked).GetNote() != "on it" {
		t.Fatalf("acknowledged: %+v", acked.Alert)
	}
	if Escalate(acked, cfg.Escalation, clk.advance(72*time.Hour)) != nil {
		t.Fatal("an acknowledged alert escalated")
	}
	if _, err := Acknowledge(acked, "ana", "", clk.now); err == nil {
		t.Fatal("acknowledging twice succeeded")
	}
}

func last(rec *Record) *alertsv1.Step { return rec.Alert.GetSteps()[len(rec.Alert.GetSteps())-1] }

func TestAutoResolveWhenTheConditionClears(t *testing.T) {
	cfg, clk := testConfig(t), &clock{now: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	stalled, _ := apply(t, cfg, nil, signal("s1", "onboarding_stalled", clk.now), clk.now)
	if AutoResolve(stalled, signal("s0", "onboarding_on_track", clk.now.Add(-time.Hour)), clk.now) != nil {
		t.Fatal("a clearing signal older than the alert's evidence resolved it")
	}
	onTrack := signal("s2", "onboarding_on_track", clk.advance(time.Hour))
	if got := Clears(onTrack); len(got) != 3 {
		t.Fatalf("on track clears %v", got)
	}
	resolved := AutoResolve(stalled, onTrack, clk.now)
	if resolved == nil || resolved.Alert.GetState() != alertsv1.State_STATE_RESOLVED || last(resolved).GetAction() != AutoResolved || last(resolved).GetBy() != Service {
		t.Fatalf("auto-resolve: %+v", resolved)
	}
	if AutoResolve(resolved, onTrack, clk.now) != nil {
		t.Fatal("auto-resolved twice")
	}
	if got := Clears(signal("s3", "onboarding_stalled", clk.now)); len(got) != 2 || got[0] == "onboarding_stalled" || got[1] == "onboarding_stalled" {
		t.Fatalf("stalled clears %v", got)
	}
	cleared := Clears(&signalsv1.Signal{Kind: "cancel_intent_cleared"})
	if len(cleared) != 1 || cleared[0] != "cancel_intent" {
		t.Fatalf("cancel_intent_cleared clears %v", cleared)
	}
	green := &signalsv1.Signal{Kind: "health_changed", Evidence: &signalsv1.Signal_Health{Health: &signalsv1.HealthEvidence{BandAfter: "yellow"}}}
	red := &signalsv1.Signal{Kind: "health_changed", Evidence: &signalsv1.Signal_Health{Health: &signalsv1.HealthEvidence{BandAfter: "red"}}}
	if len(Clears(green)) != 1 || len(Clears(red)) != 0 {
		t.Fatal("health_changed clears health_red only when it leaves red")
	}
}

func TestRecordRoundTrip(t *testing.T) {
	cfg, now := testConfig(t), time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	rec, _ := apply(t, cfg, nil, signal("s1", "cancel_intent", now), now)
	b, err := rec.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.Tenant != "t1" || back.Alert.GetId() != rec.Alert.GetId() || len(back.Outbox) != 1 || back.Seen[0] != "s1" || back.Announce != Opened {
		t.Fatalf("round trip: %+v", back)
	}
}
