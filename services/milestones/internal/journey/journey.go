// Package journey is the journey file: a tenant's ordered milestones
// toward first value, as a platform team writes it in YAML or JSON
// (`stickpoint journeys put FILE`). The format is a public contract, and
// the README documents every field. Parse checks the whole file and names
// the line and field of each problem, so a bad file is refused whole.
package journey

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Limits of a journey file.
const (
	MaxFileBytes     = 64 << 10
	MaxMilestones    = 32
	MaxConditions    = 16
	MaxThreshold     = 1_000_000
	maxErrorsShown   = 20
	maxNameLength    = 200
	maxEventNameSize = 200
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
const Day = 24 * time.Hour

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
	Where     []Condition
	Threshold Threshold
	// Target is how long after the account's start it should be reached.
	Target time.Duration
	// Grace is how late it may be before the account is stalled.
	Grace time.Duration
}

// Operators of a where condition.
const (
	OpEq     = "eq"
	OpNe     = "ne"
	OpIn     = "in"
	OpExists = "exists"
	OpGt     = "gt"
	OpGte    = "gte"
	OpLt     = "lt"
	OpLte    = "lte"
	OpPrefix = "prefix"
)

// Operators lists every operator.
var Operators = []string{OpEq, OpNe, OpIn, OpExists, OpGt, OpGte, OpLt, OpLte, OpPrefix}

// Condition filters events by a property.
type Condition struct {
	// Path is the property's dotted path in the event's properties.
	Path []string
	Op   string
	// Value is a JSON-like scalar (string, float64, bool, nil); Values
	// the list of `in`; Exists the wanted presence for `exists`.
	Value  any
	Values []any
	Exists bool
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

var idRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// ValidID reports whether id can name a journey or a milestone: letters,
// digits, '-' and '_', at most 64, starting with a letter or digit.
func ValidID(id string) bool { return idRe.MatchString(id) }

// Error lists a file's problems, each with its line.
type Error struct{ Problems []string }

func (e *Error) Error() string {
	shown := e.Problems
	more := ""
	if len(shown) > maxErrorsShown {
		more = fmt.Sprintf("\n  ... and %d more", len(shown)-maxErrorsShown)
		shown = shown[:maxErrorsShown]
	}
	return "journey file is invalid:\n  " + strings.Join(shown, "\n  ") + more
}

// parser collects problems while it walks the document.
type parser struct{ problems []string }

func (p *parser) fail(n *yaml.Node, field, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.problems = append(p.problems, fmt.Sprintf("line %d: %s: %s", line, field, fmt.Sprintf(format, args...)))
}

// Parse reads a journey file, YAML or JSON (JSON is YAML). Every problem
// is reported, each with its line and field; a file with any is refused.
func Parse(src []byte) (Journey, error) {
	if len(src) > MaxFileBytes {
		return Journey{}, &Error{Problems: []string{fmt.Sprintf("file: %d bytes is over the limit of %d", len(src), MaxFileBytes)}}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return Journey{}, &Error{Problems: []string{strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return Journey{}, &Error{Problems: []string{"file: empty: a journey needs at least id and milestones"}}
	}
	p := &parser{}
	j := p.journey(doc.Content[0])
	if len(p.problems) > 0 {
		return Journey{}, &Error{Problems: p.problems}
	}
	return j, nil
}

// fields returns a mapping's values by key, reporting unknown and repeated
// keys and missing required ones.
func (p *parser) fields(n *yaml.Node, path string, known []string, required ...string) map[string]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		p.fail(n, path, "must be a mapping of fields")
		return nil
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := join(path, k.Value)
		switch {
		case !slices.Contains(known, k.Value):
			p.fail(k, name, "unknown field (known: %s)", strings.Join(known, ", "))
		case out[k.Value] != nil:
			p.fail(k, name, "given twice")
		default:
			out[k.Value] = v
		}
	}
	for _, r := range required {
		if out[r] == nil {
			p.fail(n, join(path, r), "required")
		}
	}
	return out
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func (p *parser) journey(n *yaml.Node) Journey {
	f := p.fields(n, "", []string{"id", "name", "applies_to", "start", "stall_after", "at_risk_before", "grace", "stick_point", "milestones"}, "id", "milestones")
	j := Journey{Start: DefaultStart, StallAfter: DefaultStallAfter, AtRiskBefore: DefaultAtRiskBefore, Grace: DefaultGrace, StickPoint: DefaultStickPoint}
	if f == nil {
		return j
	}
	j.ID = p.id(f["id"], "id")
	j.Name = p.text(f["name"], "name", j.ID)
	if v := f["applies_to"]; v != nil {
		j.AppliesTo = p.selector(v)
	}
	j.Start = p.text(f["start"], "start", DefaultStart)
	j.StallAfter = p.duration(f["stall_after"], "stall_after", DefaultStallAfter)
	j.AtRiskBefore = p.duration(f["at_risk_before"], "at_risk_before", DefaultAtRiskBefore)
	j.Grace = p.duration(f["grace"], "grace", DefaultGrace)
	j.StickPoint = p.duration(f["stick_point"], "stick_point", DefaultStickPoint)
	if ms := f["milestones"]; ms != nil {
		switch {
		case ms.Kind != yaml.SequenceNode:
			p.fail(ms, "milestones", "must be a list")
		case len(ms.Content) == 0:
			p.fail(ms, "milestones", "needs at least one milestone")
		case len(ms.Content) > MaxMilestones:
			p.fail(ms, "milestones", "%d milestones is over the limit of %d", len(ms.Content), MaxMilestones)
		default:
			seen := map[string]int{}
			for i, m := range ms.Content {
				path := fmt.Sprintf("milestones[%d]", i)
				mm := p.milestone(m, path, j.Grace)
				if mm.ID != "" {
					if line, dup := seen[mm.ID]; dup {
						p.fail(m, path+".id", "duplicate milestone id %q (first on line %d)", mm.ID, line)
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
	f := p.fields(n, "applies_to", []string{"trait", "in"}, "trait", "in")
	if f == nil || f["trait"] == nil || f["in"] == nil {
		return nil
	}
	s := &Selector{Trait: p.text(f["trait"], "applies_to.trait", "")}
	if s.Trait == "" {
		p.fail(f["trait"], "applies_to.trait", "must not be empty")
	}
	in := f["in"]
	if in.Kind != yaml.SequenceNode || len(in.Content) == 0 {
		p.fail(in, "applies_to.in", "must be a non-empty list of values")
		return s
	}
	for i, v := range in.Content {
		if v.Kind != yaml.ScalarNode {
			p.fail(v, fmt.Sprintf("applies_to.in[%d]", i), "must be a single value")
			continue
		}
		s.In = append(s.In, v.Value)
	}
	return s
}

func (p *parser) milestone(n *yaml.Node, path string, journeyGrace time.Duration) Milestone {
	f := p.fields(n, path, []string{"id", "name", "event", "where", "threshold", "target", "grace"}, "id", "event", "target")
	m := Milestone{Threshold: Threshold{Kind: Count, N: 1}, Grace: journeyGrace}
	if f == nil {
		return m
	}
	if f["id"] != nil {
		m.ID = p.id(f["id"], path+".id")
	}
	m.Name = p.text(f["name"], path+".name", m.ID)
	m.Event = p.text(f["event"], path+".event", "")
	if f["event"] != nil && (m.Event == "" || len(m.Event) > maxEventNameSize) {
		p.fail(f["event"], path+".event", "must be an event name of 1 to %d characters", maxEventNameSize)
	}
	if w := f["where"]; w != nil {
		switch {
		case w.Kind != yaml.SequenceNode:
			p.fail(w, path+".where", "must be a list of conditions")
		case len(w.Content) > MaxConditions:
			p.fail(w, path+".where", "%d conditions is over the limit of %d", len(w.Content), MaxConditions)
		default:
			for i, c := range w.Content {
				if cond, ok := p.condition(c, fmt.Sprintf("%s.where[%d]", path, i)); ok {
					m.Where = append(m.Where, cond)
				}
			}
		}
	}
	if t := f["threshold"]; t != nil {
		m.Threshold = p.threshold(t, path+".threshold")
	}
	if f["target"] != nil {
		m.Target = p.duration(f["target"], path+".target", 0)
	}
	m.Grace = p.duration(f["grace"], path+".grace", journeyGrace)
	return m
}

func (p *parser) condition(n *yaml.Node, path string) (Condition, bool) {
	f := p.fields(n, path, []string{"property", "op", "value"}, "property", "op")
	if f == nil || f["property"] == nil || f["op"] == nil {
		return Condition{}, false
	}
	prop := p.text(f["property"], path+".property", "")
	c := Condition{Path: strings.Split(prop, "."), Op: p.text(f["op"], path+".op", "")}
	for _, part := range c.Path {
		if part == "" {
			p.fail(f["property"], path+".property", "%q is not a dotted path (like plan.name)", prop)
			return c, false
		}
	}
	if !slices.Contains(Operators, c.Op) {
		p.fail(f["op"], path+".op", "unknown operator %q (known: %s)", c.Op, strings.Join(Operators, ", "))
		return c, false
	}
	v := f["value"]
	switch c.Op {
	case OpExists:
		c.Exists = true
		if v != nil {
			b, ok := scalar(v).(bool)
			if !ok {
				p.fail(v, path+".value", "exists takes true or false")
				return c, false
			}
			c.Exists = b
		}
	case OpIn:
		if v == nil || v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
			p.fail(orNode(v, n), path+".value", "in takes a non-empty list of values")
			return c, false
		}
		for i, item := range v.Content {
			if item.Kind != yaml.ScalarNode {
				p.fail(item, fmt.Sprintf("%s.value[%d]", path, i), "must be a single value")
				return c, false
			}
			c.Values = append(c.Values, scalar(item))
		}
	default:
		if v == nil || v.Kind != yaml.ScalarNode {
			p.fail(orNode(v, n), path+".value", "%s takes a single value", c.Op)
			return c, false
		}
		c.Value = scalar(v)
		switch c.Op {
		case OpGt, OpGte, OpLt, OpLte:
			if _, ok := c.Value.(float64); !ok {
				p.fail(v, path+".value", "%s compares numbers; %q is not one", c.Op, v.Value)
				return c, false
			}
		case OpPrefix:
			if _, ok := c.Value.(string); !ok {
				p.fail(v, path+".value", "prefix takes a string")
				return c, false
			}
		}
	}
	return c, true
}

func orNode(n, fallback *yaml.Node) *yaml.Node {
	if n != nil {
		return n
	}
	return fallback
}

// scalar is a YAML scalar as JSON would hold it: string, float64, bool or
// nil. A quoted "5" stays a string.
func scalar(n *yaml.Node) any {
	if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
		return n.Value
	}
	switch n.Tag {
	case "!!int", "!!float":
		if f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64); err == nil {
			return f
		}
	case "!!bool":
		if b, err := strconv.ParseBool(n.Value); err == nil {
			return b
		}
		return strings.EqualFold(n.Value, "yes") || strings.EqualFold(n.Value, "on")
	case "!!null":
		return nil
	}
	return n.Value
}

func (p *parser) threshold(n *yaml.Node, path string) Threshold {
	f := p.fields(n, path, []string{Count, DistinctUsers, DistinctDays, "window"})
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
		p.fail(n, path, "must give exactly one of count, distinct_users, distinct_days")
		return t
	}
	t.Kind = kinds[0]
	t.N = p.positive(f[t.Kind], join(path, t.Kind))
	switch {
	case t.Kind == DistinctDays && f["window"] == nil:
		p.fail(n, path+".window", "required with distinct_days (e.g. 7d)")
	case t.Kind == DistinctDays:
		t.Window = p.duration(f["window"], path+".window", 0)
		if t.Window > 0 && t.Window%Day != 0 {
			p.fail(f["window"], path+".window", "must be whole days (distinct days are UTC days)")
		} else if t.Window > 0 && t.N > int(t.Window/Day) {
			p.fail(f[t.Kind], join(path, t.Kind), "%d distinct days can't fit in a %d-day window", t.N, t.Window/Day)
		}
	case f["window"] != nil:
		p.fail(f["window"], path+".window", "only distinct_days takes a window")
	}
	return t
}

func (p *parser) positive(n *yaml.Node, path string) int {
	v, err := strconv.Atoi(n.Value)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || err != nil || v < 1 || v > MaxThreshold {
		p.fail(n, path, "must be a whole number from 1 to %d, got %q", MaxThreshold, n.Value)
		return 1
	}
	return v
}

func (p *parser) id(n *yaml.Node, path string) string {
	if n.Kind != yaml.ScalarNode || !ValidID(n.Value) {
		p.fail(n, path, "%q is not an id: letters, digits, '-' and '_', at most 64, starting with a letter or digit", n.Value)
		return ""
	}
	return n.Value
}

func (p *parser) text(n *yaml.Node, path, def string) string {
	if n == nil {
		return def
	}
	if n.Kind != yaml.ScalarNode {
		p.fail(n, path, "must be text")
		return def
	}
	if len(n.Value) > maxNameLength {
		p.fail(n, path, "longer than %d characters", maxNameLength)
	}
	return n.Value
}

func (p *parser) duration(n *yaml.Node, path string, def time.Duration) time.Duration {
	if n == nil {
		return def
	}
	d, err := ParseDuration(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		p.fail(n, path, "%q is not a duration (like 3d, 36h, 1d12h)", n.Value)
		return def
	}
	if d <= 0 {
		p.fail(n, path, "must be positive")
		return def
	}
	return d
}

var durationRe = regexp.MustCompile(`^(\d+)(w|d|h|m|s)`)

// ParseDuration reads a duration in weeks (w), days (d), hours (h),
// minutes (m) and seconds (s), largest unit first: 7d, 36h, 1d12h, 90m.
func ParseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("empty duration")
	}
	units := map[string]time.Duration{"w": 7 * Day, "d": Day, "h": time.Hour, "m": time.Minute, "s": time.Second}
	order := "wdhms"
	var total time.Duration
	last := -1
	for rest := s; rest != ""; {
		m := durationRe.FindStringSubmatch(rest)
		if m == nil {
			return 0, fmt.Errorf("duration %q: want a number and a unit (w, d, h, m, s)", s)
		}
		pos := strings.Index(order, m[2])
		if pos <= last {
			return 0, fmt.Errorf("duration %q: units must go from largest to smallest, once each", s)
		}
		last = pos
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil || n > 100_000 {
			return 0, fmt.Errorf("duration %q: too large", s)
		}
		total += time.Duration(n) * units[m[2]]
		rest = rest[len(m[0]):]
	}
	return total, nil
}

// FormatDuration writes d as ParseDuration reads it: 7d, 1d12h, 90m.
func FormatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	var b strings.Builder
	for _, u := range []struct {
		unit string
		size time.Duration
	}{{"d", Day}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}} {
		if n := d / u.size; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.unit)
			d -= n * u.size
		}
	}
	return b.String()
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
