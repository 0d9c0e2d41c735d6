package config

import (
	"os"
	"strings"
	"testing"
	"time"
)

func issueFile(t *testing.T) []byte {
	t.Helper()
	src, err := os.ReadFile("../../../../scripts/alerting.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func TestParseAcceptsTheIssueFile(t *testing.T) {
	c, err := Parse(issueFile(t))
	if err != nil {
		t.Fatal(err)
	}
	if c.OwnerTrait != "csm_email" || len(c.Channels) != 3 || len(c.Rules) != 5 {
		t.Fatalf("parsed %+v", c)
	}
	hook := c.Channel("team-hook")
	if hook == nil || hook.Type != Webhook || hook.Secret != "whsec_test_123" || hook.Timeout != DefaultChannelTimeout {
		t.Fatalf("team-hook: %+v", hook)
	}
	if mail := c.Channel("owner-mail"); mail.SMTP != "127.0.0.1:2525" || mail.From != "alerts@stickpoint.local" || mail.StartTLS != "opportunistic" {
		t.Fatalf("owner-mail: %+v", mail)
	}
	if r := c.Rules[1]; r.Kind != "cancel_intent" || r.Cooldown != 7*24*time.Hour || strings.Join(r.Channels, ",") != "team-hook,owner-mail" {
		t.Fatalf("cancel_intent rule: %+v", r)
	}
	if c.Escalation == nil || c.Escalation.After != 24*time.Hour || c.Escalation.Channels[0] != "cs-slack" {
		t.Fatalf("escalation: %+v", c.Escalation)
	}
}

func TestRuleFirstMatchWithConditions(t *testing.T) {
	c, err := Parse([]byte(`
rules:
  - kind: onboarding_stalled
    severity: high
    when: [{trait: plan, op: in, value: [pro, team]}, {account: mrr, op: gte, value: 1000}]
  - kind: onboarding_stalled
    severity: medium
    when: [{account: band, op: eq, value: red}]
  - kind: health_red
    severity: low
`))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		acc  Account
		kind string
		want string
	}{
		{Account{Traits: map[string]any{"plan": "pro", "mrr": 1500.0}}, "onboarding_stalled", "high"},
		{Account{Traits: map[string]any{"plan": "pro", "mrr": "1500.00"}}, "onboarding_stalled", "high"},
		{Account{Traits: map[string]any{"plan": "pro", "mrr": 10.0}, Band: "red"}, "onboarding_stalled", "medium"},
		{Account{Traits: map[string]any{"plan": "free"}}, "onboarding_stalled", ""},
		{Account{}, "health_red", "low"},
		{Account{}, "cancel_intent", ""},
	}
	for _, tc := range cases {
		got := ""
		if r := c.Rule(tc.kind, tc.acc); r != nil {
			got = r.Severity
		}
		if got != tc.want {
			t.Errorf("%s for %+v: rule %q, want %q", tc.kind, tc.acc, got, tc.want)
		}
	}
}

func TestParseRefusesBadFilesNamingTheField(t *testing.T) {
	cases := map[string]string{
		"channels:\n  - {id: h, type: webhook, url: ftp://x/y, secret: whsec_123456}\n":                 `line 2: channels[0].url: "ftp://x/y" is not an http(s) URL`,
		"channels:\n  - {id: h, type: slack, url: not a url}\n":                                         `channels[0].url: "not a url" is not an http(s) URL`,
		"channels:\n  - {id: h, type: webhook, url: http://127.0.0.1/x}\n":                              "channels[0].secret: missing field: secret",
		"channels:\n  - {id: h, type: pager, url: http://127.0.0.1/x}\n":                                `channels[0].type: unknown channel type "pager"`,
		"channels:\n  - {id: m, type: email, smtp: nohost, from: a@b.c}\n":                              `channels[0].smtp: "nohost" is not host:port`,
		"rules:\n  - {kind: cancel_intnet, severity: high}\n":                                           `rules[0].kind: unknown signal kind "cancel_intnet"`,
		"rules:\n  - {kind: cancel_intent, severity: urgent}\n":                                         `rules[0].severity: unknown severity "urgent"`,
		"rules:\n  - {kind: cancel_intent, severity: high, channels: [nope]}\n":                         `rules[0].channels[0]: no channel "nope" is defined`,
		"rules:\n  - {kind: cancel_intent, severity: high, cooldown: soon}\n":                           `rules[0].cooldown: "soon" is not a duration`,
		"rules:\n  - {kind: cancel_intent, severity: high, when: [{account: arr, op: eq, value: 1}]}\n": `rules[0].when[0].account: "arr" is not an account field`,
		"escalation: {after: 24h}\n":                                                                    "escalation.channels: required",
		"owner_trait: csm_email\nchanels: []\n":                                                         "line 2: chanels: unknown field",
	}
	for src, want := range cases {
		_, err := Parse([]byte(src))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", src, err, want)
		}
	}
}

func TestRedactAndKeepSecrets(t *testing.T) {
	src := issueFile(t)
	red := Redact(string(src))
	for _, s := range []string{"whsec_test_123", "T000/B000/XXX"} {
		if strings.Contains(red, s) {
			t.Fatalf("redacted file still holds %q:\n%s", s, red)
		}
	}
	if !strings.Contains(red, "# HMAC-SHA256 signing secret") || !strings.Contains(red, "http://127.0.0.1:9999/hooks/stickpoint") {
		t.Fatalf("redaction lost comments or non-secrets:\n%s", red)
	}
	if _, err := Parse([]byte(red)); err == nil {
		t.Fatal("a redacted file parsed on its own: the slack url should be refused")
	}
	current, err := Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(red, "severity: critical", "severity: high", 1)
	kept, err := KeepSecrets(current, []byte(edited))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(kept)
	if err != nil {
		t.Fatalf("%v\n%s", err, kept)
	}
	if c.Channel("team-hook").Secret != "whsec_test_123" || c.Channel("cs-slack").URL != "http://127.0.0.1:9998/services/T000/B000/XXX" || c.Rules[0].Severity != "high" {
		t.Fatalf("kept: %+v", c)
	}
	if _, err := KeepSecrets(Default(), []byte(red)); err == nil || !strings.Contains(err.Error(), "channel team-hook: secret is <redacted>") {
		t.Fatalf("keeping a secret nobody has: %v", err)
	}
}

func TestTemplateIsValid(t *testing.T) {
	c := Default()
	if len(c.Channels) != 0 || c.Rule("cancellation_requested", Account{}) == nil {
		t.Fatalf("default: %+v", c)
	}
}
