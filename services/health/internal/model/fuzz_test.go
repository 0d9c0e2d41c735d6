package model

import (
	"testing"
)

// FuzzParse: a tenant's model file never panics the parser, and a model it
// accepts keeps the invariants scoring relies on.
func FuzzParse(f *testing.F) {
	f.Add([]byte(issueModel))
	f.Add([]byte(Template))
	f.Add([]byte("{}"))
	f.Add([]byte("health: {bands: {red: 80, yellow: 70}}"))
	f.Add([]byte("cancel_intent: {signals: [{id: x, weight: 5, computed: usage_drop, drop: 150%}]}"))
	f.Fuzz(func(t *testing.T, src []byte) {
		m, err := Parse(src)
		if err != nil {
			return
		}
		h := m.Health
		total := 0
		for _, w := range h.Weights {
			total += w
		}
		if h.Red >= h.Yellow || total <= 0 || h.Window <= 0 || h.Recent <= 0 || h.Baseline <= 0 || m.CancelIntent.Threshold <= 0 {
			t.Fatalf("accepted a model scoring can't use: %+v", m)
		}
		for _, s := range m.CancelIntent.Signals {
			if s.Weight <= 0 || (s.Match == nil) == (s.Computed == "") || (s.Match != nil && s.HalfLife <= 0) {
				t.Fatalf("accepted a signal scoring can't use: %+v", s)
			}
		}
	})
}
