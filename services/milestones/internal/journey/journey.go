// Package journey is the journey file: a tenant's ordered milestones
// toward first value, as a platform team writes it in YAML or JSON
// (`stickpoint journeys put FILE`). The format is a public contract, and
// the README documents every field. Parse checks the whole file and names
// the line and field of each problem, so a bad file is refused whole.
package journey

import (
	"fmt"
	"slices"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/stickpoint/stickpoint/pkg/specfile"
)

// Limits of a journey file.
const (
	MaxFileBytes  = 64 << 10
	MaxMilestones = 32
	MaxThreshold  = 1_000_000
)

// Defaults of the optional fields.
const (
	DefaultStart        = "created_at"
	DefaultStallAfter   = 7 * Day
	DefaultAtRiskBefore = 2 * Day
	DefaultGrace        = 3 * Day
	DefaultStickPoint   = 90 * Day
)

// Day is 24 hours: journeys count UTC days.
const Day = specfile.Day

// Journey is a parsed, checked journey with every default filled in.
type Journey struct {
	ID   string
	Name string
	// AppliesTo selects the accounts that follow the journey; nil is all.
	AppliesTo *Selector
	// Start is the account trait holding the account's start; the account's
	// first event when the trait is missing or not a time.
	Start        string
	StallAfter   time.Duration
	AtRiskBefore time.Duration
	Grace        time.Duration
	StickPoint   time.Duration
	Milestones   []Milestone
}

// Selector matches accounts by one trait.
type Selector struct {
	Trait string
	// In lists the values that match, compared as text ("5" matches 5).
	In []string
}

// Milestone is one step of a journey.
type Milestone struct {
	ID        string
	Name      string
	Event     string
	Where     []specfile.Condition
	Threshold Threshold
	// Target is how long after the account's start it should be reached.
	Target time.Duration
	// Grace is how late it may be before the account is stalled.
	Grace time.Duration
}

// Threshold kinds.
const (
	Count         = "count"
	DistinctUsers = "distinct_users"
	DistinctDays  = "distinct_days"
)

// Threshold is what the matching events must add up to.
type Threshold struct {
	Kind string
	N    int
	// Window bounds the span of the distinct days (DistinctDays), whole
	// days: N distinct UTC days within any Window.
	Window time.Duration
}

// Parse reads a journey file, YAML or JSON (JSON is YAML). Every problem
// is reported, each with its line and field; a file with any is refused
// (a *specfile.Error).
func Parse(src []byte) (Journey, error) {
	root, sp, err := specfile.Root("journey file", src, MaxFileBytes)
	if err != nil {
		return Journey{}, err
	}
	p := parser{sp}
	j := p.journey(root)
	if err := sp.Err(); err != nil {
		return Journey{}, err
	}
	return j, nil
}

// parser reads a journey's fields.
type parser struct{ *specfile.Parser }

func (p *parser) journey(n *yaml.Node) Journey {
	f := p.Fields(n, "", []string{"id", "name", "applies_to", "start", "stall_after", "at_risk_before", "grace", "stick_point", "milestones"}, "id", "milestones")
	j := Journey{Start: DefaultStart, StallAfter: DefaultStallAfter, AtRiskBefore: DefaultAtRiskBefore, Grace: DefaultGrace, StickPoint: DefaultStickPoint}
	if f == nil {
		return j
	}
	j.ID = p.ID(f["id"], "id")
	j.Name = p.Text(f["name"], "name", j.ID)
	if v := f["applies_to"]; v != nil {
		j.AppliesTo = p.selector(v)
	}
	j.Start = p.Text(f["start"], "start", DefaultStart)
	j.StallAfter = p.Duration(f["stall_after"], "stall_after", DefaultStallAfter)
	j.AtRiskBefore = p.Duration(f["at_risk_before"], "at_risk_before", DefaultAtRiskBefore)
	j.Grace = p.Duration(f["grace"], "grace", DefaultGrace)
	j.StickPoint = p.Duration(f["stick_point"], "stick_point", DefaultStickPoint)
	if ms := f["milestones"]; ms != nil {
		switch {
		case ms.Kind != yaml.SequenceNode:
			p.Fail(ms, "milestones", "must be a list")
		case len(ms.Content) == 0:
			p.Fail(ms, "milestones", "needs at least one milestone")
		case len(ms.Content) > MaxMilestones:
			p.Fail(ms, "milestones", "%d milestones is over the limit of %d", len(ms.Content), MaxMilestones)
		default:
			seen := map[string]int{}
			for i, m := range ms.Content {
				path := fmt.Sprintf("milestones[%d]", i)
				mm := p.milestone(m, path, j.Grace)
				if mm.ID != "" {
					if line, dup := seen[mm.ID]; dup {
						p.Fail(m, path+".id", "duplicate milestone id %q (first on line %d)", mm.ID, line)
					}
					seen[mm.ID] = m.Line
				}
				j.Milestones = append(j.Milestones, mm)
			}
		}
	}
	return j
}

func (p *parser) selector(n *yaml.Node) *Selector {
	f := p.Fields(n, "applies_to", []string{"trait", "in"}, "trait", "in")
	if f == nil || f["trait"] == nil || f["in"] == nil {
		return nil
	}
	s := &Selector{Trait: p.Text(f["trait"], "applies_to.trait", "")}
	if s.Trait == "" {
		p.Fail(f["trait"], "applies_to.trait", "must not be empty")
	}
	in := f["in"]
	if in.Kind != yaml.SequenceNode || len(in.Content) == 0 {
		p.Fail(in, "applies_to.in", "must be a non-empty list of values")
		return s
	}
	for i, v := range in.Content {
		if v.Kind != yaml.ScalarNode {
			p.Fail(v, fmt.Sprintf("applies_to.in[%d]", i), "must be a single value")
			continue
		}
		s.In = append(s.In, v.Value)
	}
	return s
}

func (p *parser) milestone(n *yaml.Node, path string, journeyGrace time.Duration) Milestone {
	f := p.Fields(n, path, []string{"id", "name", "event", "where", "threshold", "target", "grace"}, "id", "event", "target")
	m := Milestone{Threshold: Threshold{Kind: Count, N: 1}, Grace: journeyGrace}
	if f == nil {
		return m
	}
	if f["id"] != nil {
		m.ID = p.ID(f["id"], path+".id")
	}
	m.Name = p.Text(f["name"], path+".name", m.ID)
	if f["event"] != nil {
		m.Event = p.Name(f["event"], path+".event")
	}
	if w := f["where"]; w != nil {
		m.Where = p.Conditions(w, path+".where", "property")
	}
	if t := f["threshold"]; t != nil {
		m.Threshold = p.threshold(t, path+".threshold")
	}
	if f["target"] != nil {
		m.Target = p.Duration(f["target"], path+".target", 0)
	}
	m.Grace = p.Duration(f["grace"], path+".grace", journeyGrace)
	return m
}

func (p *parser) threshold(n *yaml.Node, path string) Threshold {
	f := p.Fields(n, path, []string{Count, DistinctUsers, DistinctDays, "window"})
	t := Threshold{Kind: Count, N: 1}
	if f == nil {
		return t
	}
	var kinds []string
	for _, k := range []string{Count, DistinctUsers, DistinctDays} {
		if f[k] != nil {
			kinds = append(kinds, k)
		}
	}
	if len(kinds) != 1 {
		p.Fail(n, path, "must give exactly one of count, distinct_users, distinct_days")
		return t
	}
	t.Kind = kinds[0]
	t.N = p.Int(f[t.Kind], specfile.Join(path, t.Kind), 1, MaxThreshold, 1)
	switch {
	case t.Kind == DistinctDays && f["window"] == nil:
		p.Fail(n, path+".window", "required with distinct_days (e.g. 7d)")
	case t.Kind == DistinctDays:
		t.Window = p.Duration(f["window"], path+".window", 0)
		if t.Window > 0 && t.Window%Day != 0 {
			p.Fail(f["window"], path+".window", "must be whole days (distinct days are UTC days)")
		} else if t.Window > 0 && t.N > int(t.Window/Day) {
			p.Fail(f[t.Kind], specfile.Join(path, t.Kind), "%d distinct days can't fit in a %d-day window", t.N, t.Window/Day)
		}
	case f["window"] != nil:
		p.Fail(f["window"], path+".window", "only distinct_days takes a window")
	}
	return t
}

// Events is the distinct event names the journey's milestones watch.
func (j Journey) Events() []string {
	var out []string
	for _, m := range j.Milestones {
		if !slices.Contains(out, m.Event) {
			out = append(out, m.Event)
		}
	}
	return out
}
