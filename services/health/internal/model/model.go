// Package model is a tenant's health-scoring model: one file that says how
// health is scored, which behaviour shows intent to cancel, what a churn
// is, and which accounts fit (`stickpoint health model put FILE`). The
// format is a public contract; the README documents every field. Parse
// checks the whole file and names the line and field of each problem.
package model

import (
	"fmt"
	"slices"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/stickpoint/stickpoint/pkg/specfile"
)

// Limits of a model file.
const (
	MaxFileBytes   = 64 << 10
	MaxKeyFeatures = 64
	MaxSignals     = 32
	MaxFitRules    = 32
	MaxWeight      = 1000
)

// Components of health, in the order they are shown.
const (
	Adoption   = "adoption"
	Engagement = "engagement"
	Users      = "users"
	Trend      = "trend"
	Milestones = "milestones"
	Risk       = "risk"
	Sentiment  = "sentiment"
)

// ComponentNames lists the components in order.
var ComponentNames = []string{Adoption, Engagement, Users, Trend, Milestones, Risk, Sentiment}

// Bands.
const (
	Red    = "red"
	Yellow = "yellow"
	Green  = "green"
)

// Fits.
const (
	FitGood    = "good"
	FitStretch = "stretch"
	FitBad     = "bad"
)

// Fits lists the fits.
var Fits = []string{FitGood, FitStretch, FitBad}

// ComputedUsageDrop is the one computed cancel-intent signal.
const ComputedUsageDrop = "usage_drop"

// Model is a parsed, checked model with every default filled in.
type Model struct {
	Health       Health
	CancelIntent CancelIntent
	Churn        Churn
	Fit          Fit
}

// Health says how the score is made.
type Health struct {
	// Window is the span the usage components look at.
	Window time.Duration
	// Red and Yellow are the band limits: below Red red, below Yellow
	// yellow, else green.
	Red, Yellow int
	KeyFeatures []string
	// Weights by component; a component missing from the file weighs 0.
	Weights map[string]int
	// SeatsTrait is the account trait holding its licensed seats.
	SeatsTrait string
	// Recent and Baseline are the trend's spans: the last Recent against
	// the Baseline before it.
	Recent, Baseline time.Duration
	// ChangedDrop and ChangedWithin: a "health changed" signal fires on a
	// band change, or on a drop of at least ChangedDrop points within
	// ChangedWithin.
	ChangedDrop   int
	ChangedWithin time.Duration
}

// CancelIntent says which behaviour shows an intent to cancel.
type CancelIntent struct {
	// Threshold is the score at which a cancel-intent signal fires.
	Threshold float64
	Signals   []Signal
	// CancellationRequested matches the event that is an immediate signal.
	CancellationRequested Match
}

// Signal is one behaviour that adds to the cancel-intent score.
type Signal struct {
	ID   string
	Name string
	// Match selects the events (nil for a computed signal).
	Match *Match
	// Computed names a computed signal (usage_drop), with its Drop: on
	// while recent usage is at least this share below the baseline.
	Computed string
	Drop     float64
	Weight   float64
	HalfLife time.Duration
}

// Match selects events: by type (track, page, screen), by event name, and
// by properties.
type Match struct {
	Type  string
	Event string
	Where []specfile.Condition
}

// Churn says what a cancellation is.
type Churn struct {
	Event string
	// TraitName and TraitValue: the trait changing to this value.
	TraitName, TraitValue string
	ReasonProperty        string
}

// Fit gives each account a fit from its traits: the first rule that
// matches, else Default.
type Fit struct {
	Default string
	Rules   []FitRule
}

// FitRule is one fit rule: all of When must hold.
type FitRule struct {
	Fit  string
	When []specfile.Condition
}

// Parse reads a model file, YAML or JSON. Every problem is reported, each
// with its line and field; a file with any is refused (*specfile.Error).
func Parse(src []byte) (Model, error) {
	root, sp, err := specfile.Root("health model", src, MaxFileBytes)
	if err != nil {
		return Model{}, err
	}
	p := parser{sp}
	m := p.model(root)
	if err := sp.Err(); err != nil {
		return Model{}, err
	}
	return m, nil
}

// Default is the model in force until a tenant puts one: Template parsed.
func Default() Model {
	m, err := Parse([]byte(Template))
	if err != nil {
		panic(fmt.Sprintf("model: the default model is invalid: %v", err))
	}
	return m
}

type parser struct{ *specfile.Parser }

func (p parser) model(n *yaml.Node) Model {
	f := p.Fields(n, "", []string{"health", "cancel_intent", "churn", "fit"})
	m := Model{}
	m.Health = p.health(f["health"])
	m.CancelIntent = p.cancelIntent(f["cancel_intent"])
	m.Churn = p.churn(f["churn"])
	m.Fit = p.fit(f["fit"])
	return m
}

// empty stands for a section left out: every field takes its default.
var empty = &yaml.Node{Kind: yaml.MappingNode}

func (p parser) health(n *yaml.Node) Health {
	h := Health{Window: 30 * specfile.Day, Red: 40, Yellow: 70, SeatsTrait: "seats", Recent: 7 * specfile.Day, Baseline: 28 * specfile.Day,
		ChangedDrop: 15, ChangedWithin: 7 * specfile.Day, Weights: map[string]int{}}
	f := p.Fields(specfile.OrNode(n, empty), "health", []string{"window", "bands", "key_features", "components", "changed"})
	if f == nil {
		return h
	}
	h.Window = p.Duration(f["window"], "health.window", h.Window)
	if h.Window%specfile.Day != 0 {
		p.Fail(f["window"], "health.window", "must be whole days (usage is counted by UTC day)")
	}
	if b := f["bands"]; b != nil {
		bf := p.Fields(b, "health.bands", []string{"red", "yellow"}, "red", "yellow")
		h.Red = p.Int(bf["red"], "health.bands.red", 1, 100, h.Red)
		h.Yellow = p.Int(bf["yellow"], "health.bands.yellow", 1, 100, h.Yellow)
		if bf["red"] != nil && bf["yellow"] != nil && h.Red >= h.Yellow {
			p.Fail(b, "health.bands", "red (%d) must be below yellow (%d)", h.Red, h.Yellow)
		}
	}
	if k := f["key_features"]; k != nil {
		for i, item := range p.List(k, "health.key_features", MaxKeyFeatures) {
			name := p.Name(item, fmt.Sprintf("health.key_features[%d]", i))
			if slices.Contains(h.KeyFeatures, name) {
				p.Fail(item, fmt.Sprintf("health.key_features[%d]", i), "%q is listed twice", name)
			}
			h.KeyFeatures = append(h.KeyFeatures, name)
		}
	}
	comps := f["components"]
	if comps == nil {
		for _, c := range ComponentNames {
			h.Weights[c] = defaultWeights[c]
		}
	} else {
		cf := p.Fields(comps, "health.components", ComponentNames)
		for _, c := range ComponentNames {
			if cf[c] == nil {
				continue
			}
			path := "health.components." + c
			known := []string{"weight"}
			switch c {
			case Users:
				known = append(known, "seats_trait")
			case Trend:
				known = append(known, "recent", "baseline")
			}
			ff := p.Fields(cf[c], path, known, "weight")
			h.Weights[c] = p.Int(ff["weight"], path+".weight", 0, MaxWeight, 0)
			h.SeatsTrait = p.Text(ff["seats_trait"], path+".seats_trait", h.SeatsTrait)
			h.Recent = p.wholeDays(ff["recent"], path+".recent", h.Recent)
			h.Baseline = p.wholeDays(ff["baseline"], path+".baseline", h.Baseline)
		}
		total := 0
		for _, w := range h.Weights {
			total += w
		}
		if total == 0 {
			p.Fail(comps, "health.components", "at least one component needs a weight above 0")
		}
	}
	if c := f["changed"]; c != nil {
		cf := p.Fields(c, "health.changed", []string{"drop", "within"})
		h.ChangedDrop = p.Int(cf["drop"], "health.changed.drop", 1, 100, h.ChangedDrop)
		h.ChangedWithin = p.Duration(cf["within"], "health.changed.within", h.ChangedWithin)
	}
	return h
}

// defaultWeights are the weights of a model without components.
var defaultWeights = map[string]int{Adoption: 20, Engagement: 20, Users: 15, Trend: 15, Milestones: 15, Risk: 15, Sentiment: 10}

func (p parser) wholeDays(n *yaml.Node, path string, def time.Duration) time.Duration {
	d := p.Duration(n, path, def)
	if d%specfile.Day != 0 {
		p.Fail(n, path, "must be whole days (usage is counted by UTC day)")
	}
	return d
}

func (p parser) cancelIntent(n *yaml.Node) CancelIntent {
	ci := CancelIntent{Threshold: 50, CancellationRequested: Match{Event: "Cancellation Requested"}}
	f := p.Fields(specfile.OrNode(n, empty), "cancel_intent", []string{"threshold", "signals", "cancellation_requested"})
	if f == nil {
		return ci
	}
	ci.Threshold = float64(p.Int(f["threshold"], "cancel_intent.threshold", 1, 100_000, 50))
	seen := map[string]int{}
	if f["signals"] == nil {
		ci.Signals = defaultSignals()
	}
	if s := f["signals"]; s != nil {
		for i, item := range p.List(s, "cancel_intent.signals", MaxSignals) {
			path := fmt.Sprintf("cancel_intent.signals[%d]", i)
			sig := p.signal(item, path)
			if line, dup := seen[sig.ID]; dup && sig.ID != "" {
				p.Fail(item, path+".id", "duplicate signal id %q (first on line %d)", sig.ID, line)
			}
			seen[sig.ID] = item.Line
			ci.Signals = append(ci.Signals, sig)
		}
	}
	if c := f["cancellation_requested"]; c != nil {
		ci.CancellationRequested = p.match(c, "cancel_intent.cancellation_requested")
	}
	return ci
}

func (p parser) signal(n *yaml.Node, path string) Signal {
	f := p.Fields(n, path, []string{"id", "name", "match", "computed", "drop", "weight", "half_life"}, "id", "weight")
	s := Signal{HalfLife: 14 * specfile.Day}
	if f == nil {
		return s
	}
	if f["id"] != nil {
		s.ID = p.ID(f["id"], path+".id")
	}
	s.Name = p.Text(f["name"], path+".name", s.ID)
	s.Weight = float64(p.Int(f["weight"], path+".weight", 1, MaxWeight, 1))
	switch {
	case (f["match"] == nil) == (f["computed"] == nil):
		p.Fail(n, path, "give exactly one of match (events that show it) or computed (usage_drop)")
	case f["match"] != nil:
		m := p.match(f["match"], path+".match")
		s.Match = &m
		s.HalfLife = p.Duration(f["half_life"], path+".half_life", s.HalfLife)
		if f["drop"] != nil {
			p.Fail(f["drop"], path+".drop", "only a computed signal takes drop")
		}
	default:
		s.Computed = p.Text(f["computed"], path+".computed", "")
		if s.Computed != ComputedUsageDrop {
			p.Fail(f["computed"], path+".computed", "unknown computed signal %q (known: %s)", s.Computed, ComputedUsageDrop)
		}
		s.Drop = p.Percent(f["drop"], path+".drop", 0.5)
		s.HalfLife = 0
		if f["half_life"] != nil {
			p.Fail(f["half_life"], path+".half_life", "a computed signal counts while it is on; it has no half-life")
		}
	}
	return s
}

// defaultSignals are the signals of a model that lists none: the
// template's.
func defaultSignals() []Signal {
	return []Signal{
		{ID: "billing_page", Name: "Viewed the billing or cancel page", Weight: 15, HalfLife: 7 * specfile.Day,
			Match: &Match{Type: "page", Where: []specfile.Condition{{Subject: "property", Path: []string{"path"}, Op: specfile.OpPrefix, Value: "/settings/billing"}}}},
		{ID: "export", Name: "Bulk data export", Weight: 30, HalfLife: 14 * specfile.Day, Match: &Match{Event: "Data Exported"}},
		{ID: "seats_removed", Name: "Seats removed", Weight: 20, HalfLife: 14 * specfile.Day, Match: &Match{Event: "Seats Removed"}},
		{ID: "usage_drop", Name: "Usage dropped against the account's baseline", Weight: 55, Computed: ComputedUsageDrop, Drop: 0.5},
	}
}

// Types of event a match can name.
var matchTypes = []string{"track", "page", "screen"}

func (p parser) match(n *yaml.Node, path string) Match {
	f := p.Fields(n, path, []string{"type", "event", "where"})
	m := Match{}
	if f == nil {
		return m
	}
	if t := f["type"]; t != nil {
		m.Type = p.Text(t, path+".type", "")
		if !slices.Contains(matchTypes, m.Type) {
			p.Fail(t, path+".type", "%q is not one of %v", m.Type, matchTypes)
		}
	}
	if e := f["event"]; e != nil {
		m.Event = p.Name(e, path+".event")
	}
	if m.Type == "" && m.Event == "" {
		p.Fail(n, path, "needs an event, or a type (track, page, screen), or both")
	}
	if w := f["where"]; w != nil {
		m.Where = p.Conditions(w, path+".where", "property")
	}
	return m
}

func (p parser) churn(n *yaml.Node) Churn {
	c := Churn{Event: "Subscription Cancelled", TraitName: "status", TraitValue: "cancelled", ReasonProperty: "reason"}
	f := p.Fields(specfile.OrNode(n, empty), "churn", []string{"event", "trait", "reason_property"})
	if f == nil {
		return c
	}
	if f["event"] != nil {
		c.Event = p.Name(f["event"], "churn.event")
	}
	if t := f["trait"]; t != nil {
		tf := p.Fields(t, "churn.trait", []string{"name", "value"}, "name", "value")
		if tf["name"] != nil {
			c.TraitName = p.Name(tf["name"], "churn.trait.name")
		}
		if tf["value"] != nil {
			c.TraitValue = p.Name(tf["value"], "churn.trait.value")
		}
	}
	c.ReasonProperty = p.Text(f["reason_property"], "churn.reason_property", c.ReasonProperty)
	return c
}

func (p parser) fit(n *yaml.Node) Fit {
	fit := Fit{Default: FitStretch}
	f := p.Fields(specfile.OrNode(n, empty), "fit", []string{"default", "rules"})
	if f == nil {
		return fit
	}
	fit.Default = p.fitName(f["default"], "fit.default", FitStretch)
	if r := f["rules"]; r != nil {
		for i, item := range p.List(r, "fit.rules", MaxFitRules) {
			path := fmt.Sprintf("fit.rules[%d]", i)
			rf := p.Fields(item, path, []string{"fit", "when"}, "fit", "when")
			if rf == nil || rf["fit"] == nil || rf["when"] == nil {
				continue
			}
			fit.Rules = append(fit.Rules, FitRule{Fit: p.fitName(rf["fit"], path+".fit", ""), When: p.Conditions(rf["when"], path+".when", "trait")})
		}
	}
	return fit
}

func (p parser) fitName(n *yaml.Node, path, def string) string {
	s := p.Text(n, path, def)
	if n != nil && !slices.Contains(Fits, s) {
		p.Fail(n, path, "%q is not one of %v", s, Fits)
	}
	return s
}

// TraitsRead are the traits the model reads: the seats trait, and those
// the fit rules test (each path's first name).
func (m Model) TraitsRead() []string {
	var out []string
	if m.Health.SeatsTrait != "" {
		out = append(out, m.Health.SeatsTrait)
	}
	for _, r := range m.Fit.Rules {
		for _, c := range r.When {
			if len(c.Path) > 0 && !slices.Contains(out, c.Path[0]) {
				out = append(out, c.Path[0])
			}
		}
	}
	return out
}

// FitOf is the fit of an account with these traits (decoded JSON).
func (f Fit) FitOf(traits map[string]any) string {
	for _, r := range f.Rules {
		if specfile.Matches(r.When, traits) {
			return r.Fit
		}
	}
	return f.Default
}
