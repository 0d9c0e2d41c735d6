package evaluator

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/specfile"
	"github.com/stickpoint/stickpoint/pkg/testutil"
)

// TestSQLFiltersMatchTheGoFilters checks whereSQL against specfile.Matches
// on random properties and conditions, every operator, on the engine that
// runs them (the embedded one; the 18.16 server filters in Go).
func TestSQLFiltersMatchTheGoFilters(t *testing.T) {
	db := testutil.Store(t, chstore.EngineEmbedded)
	if !db.Version().AtLeast(jsonFunctions) {
		t.Fatalf("the embedded engine %s has no JSON functions", db.Version())
	}
	r := rand.New(rand.NewPCG(21, 22))
	values := []any{"chart", "ch", "", "5", "ch\"a\\rt", "ché", "a<b", 5.0, 5.5, -1.0, 0.0, true, false, nil, map[string]any{"a": "chart"}, []any{1.0}}
	scalars := []any{"chart", "ch", "", "5", "ch\"a\\rt", "ché", "a<b", 5.0, 5.5, -1.0, true, false, nil}
	paths := [][]string{{"k"}, {"n"}, {"o", "a"}, {"missing"}, {"k", "a"}}
	checked := map[string]int{}
	for round := range 3000 {
		props := map[string]any{}
		for _, k := range []string{"k", "n", "o"} {
			if r.IntN(5) > 0 {
				props[k] = values[r.IntN(len(values))]
			}
		}
		raw, _ := json.Marshal(props)
		// One to three conditions, so each condition's args are checked in
		// their place among the others'.
		conds := make([]specfile.Condition, 1+r.IntN(3))
		for i := range conds {
			conds[i] = randomCondition(r, paths, scalars)
		}
		var decoded map[string]any
		_ = json.Unmarshal(raw, &decoded)
		want := specfile.Matches(conds, decoded)
		cond, args := whereSQL("props", conds)
		rows, err := db.Query(t.Context(), "SELECT "+cond+" FROM (SELECT ? AS props)", append(args, string(raw))...)
		if err != nil {
			t.Fatalf("round %d: %s: %v", round, cond, err)
		}
		var got uint8
		if !rows.Next() || rows.Scan(&got) != nil {
			t.Fatalf("round %d: no answer", round)
		}
		if (got == 1) != want {
			t.Fatalf("round %d: %+v on %s: ClickHouse %v, Go %v\n%s %v", round, conds, raw, got == 1, want, cond, args)
		}
		if len(conds) == 1 {
			checked[conds[0].Op+map[bool]string{true: "+", false: "-"}[want]]++
		}
	}
	for _, op := range specfile.Operators {
		if checked[op+"+"] == 0 || checked[op+"-"] == 0 {
			t.Errorf("%s: %d matches and %d misses checked", op, checked[op+"+"], checked[op+"-"])
		}
	}
}

// randomCondition is a condition on one of paths, with any operator.
func randomCondition(r *rand.Rand, paths [][]string, scalars []any) specfile.Condition {
	c := specfile.Condition{Path: paths[r.IntN(len(paths))], Op: specfile.Operators[r.IntN(len(specfile.Operators))]}
	switch c.Op {
	case specfile.OpExists:
		c.Exists = r.IntN(2) == 0
	case specfile.OpIn:
		c.Values = make([]any, 1+r.IntN(3))
		for i := range c.Values {
			c.Values[i] = scalars[r.IntN(len(scalars))]
		}
	case specfile.OpPrefix:
		c.Value = []string{"ch", "", "x", "5", "ch\"", "a<"}[r.IntN(6)]
	case specfile.OpGt, specfile.OpGte, specfile.OpLt, specfile.OpLte:
		c.Value = []float64{-1, 0, 5, 5.5, 6}[r.IntN(5)]
	default:
		c.Value = scalars[r.IntN(len(scalars))]
	}
	return c
}
