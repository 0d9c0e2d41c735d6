package progress

import (
	"fmt"
	"strings"

	"github.com/stickpoint/stickpoint/services/milestones/internal/journey"
)

// Matches reports whether the properties satisfy every condition.
//
// A value is compared as JSON holds it: eq, ne and in compare numbers as
// numbers and anything else by type and value ("5" is not 5); gt, gte, lt
// and lte hold only for numbers; prefix only for strings. A missing
// property (or a path through a non-object) fails every operator but ne
// and `exists: false`.
func Matches(where []journey.Condition, props map[string]any) bool {
	for _, c := range where {
		v, ok := lookup(props, c.Path)
		if !holds(c, v, ok) {
			return false
		}
	}
	return true
}

func lookup(props map[string]any, path []string) (any, bool) {
	var cur any = props
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

func holds(c journey.Condition, v any, present bool) bool {
	switch c.Op {
	case journey.OpExists:
		return present == c.Exists
	case journey.OpNe:
		return !present || !equal(v, c.Value)
	}
	if !present {
		return false
	}
	switch c.Op {
	case journey.OpEq:
		return equal(v, c.Value)
	case journey.OpIn:
		for _, want := range c.Values {
			if equal(v, want) {
				return true
			}
		}
		return false
	case journey.OpPrefix:
		s, ok := v.(string)
		p, _ := c.Value.(string)
		return ok && strings.HasPrefix(s, p)
	case journey.OpGt, journey.OpGte, journey.OpLt, journey.OpLte:
		n, ok := v.(float64)
		want, _ := c.Value.(float64)
		if !ok {
			return false
		}
		switch c.Op {
		case journey.OpGt:
			return n > want
		case journey.OpGte:
			return n >= want
		case journey.OpLt:
			return n < want
		default:
			return n <= want
		}
	}
	panic(fmt.Sprintf("progress: operator %q passed the journey checks", c.Op))
}

// equal compares JSON scalars; objects and arrays never equal a scalar.
func equal(a, b any) bool {
	switch x := a.(type) {
	case float64, string, bool, nil:
		return x == b
	}
	return false
}
