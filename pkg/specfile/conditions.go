package specfile

import (
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Operators of a condition.
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

// Condition tests one value: an event property (journeys, cancel-intent
// signals) or an account trait (fit rules, alerting).
type Condition struct {
	// Subject is what Path is in: "property", "trait", or another
	// subject the file names (see Conditions).
	Subject string
	// Path is the value's dotted path (plan.name).
	Path []string
	Op   string
	// Value is a JSON-like scalar (string, float64, bool, nil); Values
	// the list of `in`; Exists the wanted presence for `exists`.
	Value  any
	Values []any
	Exists bool
}

// Conditions reads a list of conditions, each {<subject>: path, op, value},
// where subject is one of subjects ("property", "trait", ...).
func (p *Parser) Conditions(n *yaml.Node, path string, subjects ...string) []Condition {
	var out []Condition
	for i, c := range p.List(n, path, MaxConditions) {
		if cond, ok := p.condition(c, fmt.Sprintf("%s[%d]", path, i), subjects); ok {
			out = append(out, cond)
		}
	}
	return out
}

func (p *Parser) condition(n *yaml.Node, path string, subjects []string) (Condition, bool) {
	required := []string{"op"}
	if len(subjects) == 1 {
		required = append(required, subjects[0])
	}
	f := p.Fields(n, path, append(slices.Clone(subjects), "op", "value"), required...)
	if f == nil || f["op"] == nil {
		return Condition{}, false
	}
	var subject string
	for _, s := range subjects {
		if f[s] == nil {
			continue
		}
		if subject != "" {
			p.Fail(n, path, "give one of %s, not both %s and %s", strings.Join(subjects, ", "), subject, s)
			return Condition{}, false
		}
		subject = s
	}
	if subject == "" {
		if len(subjects) > 1 {
			p.Fail(n, path, "missing field: one of %s", strings.Join(subjects, ", "))
		}
		return Condition{}, false
	}
	name := p.Text(f[subject], Join(path, subject), "")
	c := Condition{Subject: subject, Path: strings.Split(name, "."), Op: p.Text(f["op"], path+".op", "")}
	for _, part := range c.Path {
		if part == "" {
			p.Fail(f[subject], Join(path, subject), "%q is not a dotted path (like plan.name)", name)
			return c, false
		}
	}
	if !slices.Contains(Operators, c.Op) {
		p.Fail(f["op"], path+".op", "unknown operator %q (known: %s)", c.Op, strings.Join(Operators, ", "))
		return c, false
	}
	v := f["value"]
	switch c.Op {
	case OpExists:
		c.Exists = true
		if v != nil {
			b, ok := Scalar(v).(bool)
			if !ok {
				p.Fail(v, path+".value", "exists takes true or false")
				return c, false
			}
			c.Exists = b
		}
	case OpIn:
		if v == nil || v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
			p.Fail(OrNode(v, n), path+".value", "in takes a non-empty list of values")
			return c, false
		}
		for i, item := range v.Content {
			if item.Kind != yaml.ScalarNode {
				p.Fail(item, fmt.Sprintf("%s.value[%d]", path, i), "must be a single value")
				return c, false
			}
			c.Values = append(c.Values, Scalar(item))
		}
	default:
		if v == nil || v.Kind != yaml.ScalarNode {
			p.Fail(OrNode(v, n), path+".value", "%s takes a single value", c.Op)
			return c, false
		}
		c.Value = Scalar(v)
		switch c.Op {
		case OpGt, OpGte, OpLt, OpLte:
			if _, ok := c.Value.(float64); !ok {
				p.Fail(v, path+".value", "%s compares numbers; %q is not one", c.Op, v.Value)
				return c, false
			}
		case OpPrefix:
			if _, ok := c.Value.(string); !ok {
				p.Fail(v, path+".value", "prefix takes a string")
				return c, false
			}
		}
	}
	return c, true
}

// Matches reports whether the values (event properties, account traits,
// decoded from JSON) satisfy every condition.
//
// A value is compared as JSON holds it: eq, ne and in compare numbers as
// numbers and anything else by type and value ("5" is not 5); gt, gte, lt
// and lte hold only for numbers; prefix only for strings. A missing value
// (or a path through a non-object) fails every operator but ne and
// `exists: false`.
func Matches(conds []Condition, values map[string]any) bool {
	for _, c := range conds {
		v, ok := lookup(values, c.Path)
		if !holds(c, v, ok) {
			return false
		}
	}
	return true
}

func lookup(values map[string]any, path []string) (any, bool) {
	var cur any = values
	for _, key := range path {
		obj, isObj := cur.(map[string]any)
		if !isObj {
			return nil, false
		}
		if cur, isObj = obj[key]; !isObj {
			return nil, false
		}
	}
	return cur, true
}

func holds(c Condition, v any, present bool) bool {
	switch c.Op {
	case OpExists:
		return present == c.Exists
	case OpNe:
		return !present || !equal(v, c.Value)
	}
	if !present {
		return false
	}
	switch c.Op {
	case OpEq:
		return equal(v, c.Value)
	case OpIn:
		return slices.ContainsFunc(c.Values, func(want any) bool { return equal(v, want) })
	case OpPrefix:
		s, ok := v.(string)
		p, _ := c.Value.(string)
		return ok && strings.HasPrefix(s, p)
	case OpGt, OpGte, OpLt, OpLte:
		n, ok := v.(float64)
		want, _ := c.Value.(float64)
		if !ok {
			return false
		}
		switch c.Op {
		case OpGt:
			return n > want
		case OpGte:
			return n >= want
		case OpLt:
			return n < want
		default:
			return n <= want
		}
	}
	panic(fmt.Sprintf("specfile: operator %q passed the checks", c.Op))
}

// equal compares JSON scalars; objects and arrays never equal a scalar.
func equal(a, b any) bool {
	switch x := a.(type) {
	case float64, string, bool, nil:
		return x == b
	}
	return false
}
