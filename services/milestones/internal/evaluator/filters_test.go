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
	values := []any{"chart", "ch", "", "5", 5.0, 5.5, -1.0, 0.0, true, false, nil, map[string]any{"a": "chart"}, []any{1.0}}
	scalars := []any{"chart", "ch", "", "5", 5.0, 5.5, -1.0, true, false, nil}
	paths := [][]string{{"k"}, {"n"}, {"o", "a"}, {"missing"}, {"k", "a"}}
	checked := map[string]int{}
	for round := range 1500 {
		props := map[string]any{}
		for _, k := range []string{"k", "n", "o"} {
			if r.IntN(5) > 0 {
				props[k] = values[r.IntN(len(values))]
			}
		}
		raw, _ := json.Marshal(props)
		c := specfile.Condition{Path: paths[r.IntN(len(paths))], Op: specfile.Operators[r.IntN(len(specfile.Operators))]}
		switch c.Op {
		case specfile.OpExists:
			c.Exists = r.IntN(2) == 0
		case specfile.OpIn:
			c.Values = []any{scalars[r.IntN(len(scalars))], scalars[r.IntN(len(scalars))]}
		case specfile.OpPrefix:
			c.Value = []string{"ch", "", "x", "5"}[r.IntN(4)]
		case specfile.OpGt, specfile.OpGte, specfile.OpLt, specfile.OpLte:
			c.Value = []float64{-1, 0, 5, 5.5, 6}[r.IntN(5)]
		default:
			c.Value = scalars[r.IntN(len(scalars))]
		}
		var decoded map[string]any
		_ = json.Unmarshal(raw, &decoded)
		want := specfile.Matches([]specfile.Condition{c}, decoded)
		cond, args := whereSQL("props", []specfile.Condition{c})
		rows, err := db.Query(t.Context(), "SELECT "+cond+" FROM (SELECT ? AS props)", append(args, string(raw))...)
		if err != nil {
			t.Fatalf("round %d: %s: %v", round, cond, err)
		}
		var got uint8
		if !rows.Next() || rows.Scan(&got) != nil {
			t.Fatalf("round %d: no answer", round)
		}
		if (got == 1) != want {
			t.Fatalf("round %d: %s on %s: ClickHouse %v, Go %v\n%s %v", round, c.Op, raw, got == 1, want, cond, args)
		}
		checked[c.Op+map[bool]string{true: "+", false: "-"}[want]]++
	}
	for _, op := range specfile.Operators {
		if checked[op+"+"] == 0 || checked[op+"-"] == 0 {
			t.Errorf("%s: %d matches and %d misses checked", op, checked[op+"+"], checked[op+"-"])
		}
	}
}
