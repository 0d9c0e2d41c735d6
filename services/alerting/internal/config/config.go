// Package config is a tenant's alerting configuration: one file that names
// the channels alerts go to, the rules that turn signals into alerts, and
// the escalation of alerts nobody acknowledges (`stickpoint alerting put
// FILE`). The format is a public contract; the README documents every
// field. Parse checks the whole file and names the line and field of each
// problem.
package config

import (
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/stickpoint/stickpoint/pkg/specfile"
)

// Limits of a configuration file.
const (
	MaxFileBytes = 64 << 10
	MaxChannels  = 32
	MaxRules     = 64
)

// Channel types.
const (
	Webhook = "webhook"
	Slack   = "slack"
	Email   = "email"
)

// ChannelTypes lists the channel types.
var ChannelTypes = []string{Webhook, Slack, Email}

// Severities, lowest first.
var Severities = []string{"info", "low", "medium", "high", "critical"}

// Kinds are the signal kinds a rule can name: those the detection
// services publish (stickpoint.signals.v1.Signal.kind).
var Kinds = []string{
	"milestone_reached", "onboarding_at_risk", "onboarding_late", "onboarding_stalled", "onboarding_completed", "onboarding_on_track",
	"health_changed", "health_red", "cancel_intent", "cancel_intent_cleared", "cancellation_requested", "churn_recorded",
}

// Account fields a `when` condition can test with {account: <field>}.
const (
	FieldFit  = "fit"
	FieldBand = "band"
	FieldMRR  = "mrr"
)

// DefaultChannelTimeout bounds one delivery attempt.
const DefaultChannelTimeout = 10 * time.Second

// Redacted stands for a secret in a file from `alerting get`; put back, it
// keeps the secret in force.
const Redacted = "<redacted>"

// Config is a parsed, checked configuration with every default filled in.
type Config struct {
	// OwnerTrait is the account trait naming its owner: the e-mail address
	// alerts go to and the person Slack mentions.
	OwnerTrait string
	// MRRTrait is the trait an {account: mrr} condition reads.
	MRRTrait string
	// AccountURL is the link to an account, with {account_id} in it; empty
	// uses the service's default.
	AccountURL string
	Channels   []Channel
	Rules      []Rule
	// Escalation is nil when alerts don't escalate.
	Escalation *Escalation
}

// Channel is where alerts go.
type Channel struct {
	ID, Type string
	// URL is the webhook's or Slack incoming webhook's address.
	URL string
	// Secret signs webhook bodies (HMAC-SHA256).
	Secret string
	// SMTP is the mail server's host:port; From the sender; To fixed
	// recipients, when alerts should not go to the owner.
	SMTP, From string
	To         []string
	// Username and Password authenticate to the mail server, when set.
	Username, Password string
	// StartTLS is required, opportunistic or off.
	StartTLS string
	Timeout  time.Duration
}

// Rule turns signals of one kind into alerts.
type Rule struct {
	Kind     string
	Severity string
	Channels []string
	// Cooldown is how long after a resolve new evidence must wait to
	// reopen the alert.
	Cooldown time.Duration
	When     []specfile.Condition
}

// Escalation notifies more channels when an alert stays unacknowledged.
type Escalation struct {
	After    time.Duration
	Channels []string
}

// Channel returns the channel with id, or nil.
func (c Config) Channel(id string) *Channel {
	for i := range c.Channels {
		if c.Channels[i].ID == id {
			return &c.Channels[i]
		}
	}
	return nil
}

// Account is what a rule's conditions test: the account's traits (decoded
// JSON) and its fit and band, from the signal.
type Account struct {
	Traits    map[string]any
	Fit, Band string
}

// Rule returns the first rule for kind whose conditions the account meets,
// or nil: a kind with no rule raises no alert.
func (c Config) Rule(kind string, acc Account) *Rule {
	fields := map[string]any{FieldFit: acc.Fit, FieldBand: acc.Band}
	if acc.Fit == "" {
		delete(fields, FieldFit)
	}
	if acc.Band == "" {
		delete(fields, FieldBand)
	}
	if v, ok := acc.Traits[c.MRRTrait]; ok {
		if s, isText := v.(string); isText { // "49.00" from a CRM
			if f, err := strconv.ParseFloat(s, 64); err == nil {
				v = f
			}
		}
		fields[FieldMRR] = v
	}
	for i := range c.Rules {
		r := &c.Rules[i]
		if r.Kind != kind {
			continue
		}
		var traitConds, fieldConds []specfile.Condition
		for _, cond := range r.When {
			if cond.Subject == "trait" {
				traitConds = append(traitConds, cond)
			} else {
				fieldConds = append(fieldConds, cond)
			}
		}
		if specfile.Matches(traitConds, acc.Traits) && specfile.Matches(fieldConds, fields) {
			return r
		}
	}
	return nil
}

// Parse checks a whole configuration file (YAML or JSON).
func Parse(src []byte) (Config, error) {
	root, sp, err := specfile.Root("alerting configuration", src, MaxFileBytes)
	if err != nil {
		return Config{}, err
	}
	p := parser{sp}
	c := p.config(root)
	if err := sp.Err(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Default is the configuration in force until a tenant puts one.
func Default() Config {
	c, err := Parse([]byte(Template))
	if err != nil {
		panic(fmt.Sprintf("config: the default configuration is invalid: %v", err))
	}
	return c
}

type parser struct{ *specfile.Parser }

func (p parser) config(n *yaml.Node) Config {
	f := p.Fields(n, "", []string{"owner_trait", "mrr_trait", "account_url", "channels", "rules", "escalation"})
	c := Config{
		OwnerTrait: p.Text(f["owner_trait"], "owner_trait", "csm_email"),
		MRRTrait:   p.Text(f["mrr_trait"], "mrr_trait", "mrr"),
		AccountURL: p.Text(f["account_url"], "account_url", ""),
	}
	if c.AccountURL != "" {
		p.httpURL(f["account_url"], "account_url", strings.ReplaceAll(c.AccountURL, "{account_id}", "x"))
	}
	for i, cn := range p.List(f["channels"], "channels", MaxChannels) {
		path := fmt.Sprintf("channels[%d]", i)
		ch := p.channel(cn, path)
		if ch.ID != "" && c.Channel(ch.ID) != nil {
			p.Fail(cn, path+".id", "channel %q is defined twice", ch.ID)
		}
		c.Channels = append(c.Channels, ch)
	}
	for i, rn := range p.List(f["rules"], "rules", MaxRules) {
		c.Rules = append(c.Rules, p.rule(rn, fmt.Sprintf("rules[%d]", i), c))
	}
	if e := f["escalation"]; e != nil {
		ef := p.Fields(e, "escalation", []string{"after", "channels"}, "after", "channels")
		c.Escalation = &Escalation{After: p.Duration(ef["after"], "escalation.after", 0), Channels: p.channelRefs(ef["channels"], "escalation.channels", c)}
	}
	return c
}

func (p parser) channel(n *yaml.Node, path string) Channel {
	f := p.Fields(n, path, []string{"id", "type", "url", "secret", "smtp", "from", "to", "username", "password", "starttls", "timeout"}, "id", "type")
	if f == nil {
		return Channel{}
	}
	ch := Channel{ID: p.ID(f["id"], path+".id"), Type: p.Text(f["type"], path+".type", ""), Timeout: p.Duration(f["timeout"], path+".timeout", DefaultChannelTimeout)}
	if ch.Timeout > 5*time.Minute {
		p.Fail(f["timeout"], path+".timeout", "must be at most 5m")
	}
	allowed := map[string][]string{
		Webhook: {"url", "secret"},
		Slack:   {"url"},
		Email:   {"smtp", "from", "to", "username", "password", "starttls"},
	}
	own, known := allowed[ch.Type]
	if !known {
		p.Fail(f["type"], path+".type", "unknown channel type %q (known: %s)", ch.Type, strings.Join(ChannelTypes, ", "))
		return ch
	}
	for _, k := range []string{"url", "secret", "smtp", "from", "to", "username", "password", "starttls"} {
		if f[k] != nil && !slices.Contains(own, k) {
			p.Fail(f[k], path+"."+k, "a %s channel takes no %s", ch.Type, k)
		}
	}
	switch ch.Type {
	case Webhook, Slack:
		if f["url"] == nil {
			p.Fail(n, path+".url", "missing field: url")
			break
		}
		ch.URL = p.Text(f["url"], path+".url", "")
		p.httpURL(f["url"], path+".url", ch.URL)
		if ch.Type == Webhook {
			if f["secret"] == nil {
				p.Fail(n, path+".secret", "missing field: secret (a webhook's body is signed with it)")
				break
			}
			ch.Secret = p.Text(f["secret"], path+".secret", "")
			if len(ch.Secret) < 8 {
				p.Fail(f["secret"], path+".secret", "must be at least 8 characters")
			}
		}
	case Email:
		if f["smtp"] == nil || f["from"] == nil {
			p.Fail(n, path, "an email channel needs smtp (host:port) and from")
			break
		}
		ch.SMTP = p.Text(f["smtp"], path+".smtp", "")
		if host, port, err := net.SplitHostPort(ch.SMTP); err != nil || host == "" || port == "" {
			p.Fail(f["smtp"], path+".smtp", "%q is not host:port", ch.SMTP)
		}
		ch.From = p.Text(f["from"], path+".from", "")
		if _, err := mail.ParseAddress(ch.From); err != nil {
			p.Fail(f["from"], path+".from", "%q is not an e-mail address", ch.From)
		}
		if to := f["to"]; to != nil {
			for i, t := range p.List(to, path+".to", 50) {
				addr := p.Text(t, fmt.Sprintf("%s.to[%d]", path, i), "")
				if _, err := mail.ParseAddress(addr); err != nil {
					p.Fail(t, fmt.Sprintf("%s.to[%d]", path, i), "%q is not an e-mail address", addr)
				}
				ch.To = append(ch.To, addr)
			}
		}
		ch.Username = p.Text(f["username"], path+".username", "")
		ch.Password = p.Text(f["password"], path+".password", "")
		if (ch.Username == "") != (ch.Password == "") {
			p.Fail(n, path, "give both username and password, or neither")
		}
		ch.StartTLS = p.Text(f["starttls"], path+".starttls", "opportunistic")
		if !slices.Contains([]string{"required", "opportunistic", "off"}, ch.StartTLS) {
			p.Fail(f["starttls"], path+".starttls", "must be required, opportunistic or off")
		}
	}
	return ch
}

// httpURL refuses anything but an absolute http(s) address.
func (p parser) httpURL(n *yaml.Node, path, raw string) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.Fail(n, path, "%q is not an http(s) URL", raw)
	}
}

func (p parser) rule(n *yaml.Node, path string, c Config) Rule {
	f := p.Fields(n, path, []string{"kind", "severity", "channels", "cooldown", "when"}, "kind", "severity")
	if f == nil {
		return Rule{}
	}
	r := Rule{Kind: p.Text(f["kind"], path+".kind", ""), Severity: p.Text(f["severity"], path+".severity", "")}
	if f["kind"] != nil && !slices.Contains(Kinds, r.Kind) {
		p.Fail(f["kind"], path+".kind", "unknown signal kind %q (known: %s)", r.Kind, strings.Join(Kinds, ", "))
	}
	if f["severity"] != nil && !slices.Contains(Severities, r.Severity) {
		p.Fail(f["severity"], path+".severity", "unknown severity %q (known: %s)", r.Severity, strings.Join(Severities, ", "))
	}
	if f["channels"] != nil {
		r.Channels = p.channelRefs(f["channels"], path+".channels", c)
	}
	if f["cooldown"] != nil {
		r.Cooldown = p.Duration(f["cooldown"], path+".cooldown", 0)
	}
	r.When = p.Conditions(f["when"], path+".when", "trait", "account")
	for i, cond := range r.When {
		if cond.Subject == "account" && (len(cond.Path) != 1 || !slices.Contains([]string{FieldFit, FieldBand, FieldMRR}, cond.Path[0])) {
			p.Fail(f["when"], fmt.Sprintf("%s.when[%d].account", path, i), "%q is not an account field (fit, band, mrr)", strings.Join(cond.Path, "."))
		}
	}
	return r
}

func (p parser) channelRefs(n *yaml.Node, path string, c Config) []string {
	var out []string
	for i, item := range p.List(n, path, MaxChannels) {
		id := p.Text(item, fmt.Sprintf("%s[%d]", path, i), "")
		if c.Channel(id) == nil {
			p.Fail(item, fmt.Sprintf("%s[%d]", path, i), "no channel %q is defined", id)
			continue
		}
		if slices.Contains(out, id) {
			p.Fail(item, fmt.Sprintf("%s[%d]", path, i), "channel %q is listed twice", id)
			continue
		}
		out = append(out, id)
	}
	return out
}
