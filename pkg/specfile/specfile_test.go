package specfile

import (
	"strings"
	"testing"
	"time"
)

func TestEveryOperator(t *testing.T) {
	props := map[string]any{"kind": "chart", "n": 5.0, "s": "5", "ok": true, "plan": map[string]any{"name": "pro"}}
	cases := []struct {
		c    Condition
		want bool
	}{
		{Condition{Path: []string{"kind"}, Op: OpEq, Value: "chart"}, true},
		{Condition{Path: []string{"n"}, Op: OpEq, Value: "5"}, false},
		{Condition{Path: []string{"s"}, Op: OpEq, Value: "5"}, true},
		{Condition{Path: []string{"kind"}, Op: OpNe, Value: "table"}, true},
		{Condition{Path: []string{"missing"}, Op: OpNe, Value: "table"}, true},
		{Condition{Path: []string{"kind"}, Op: OpIn, Values: []any{"table", "chart"}}, true},
		{Condition{Path: []string{"kind"}, Op: OpIn, Values: []any{"table"}}, false},
		{Condition{Path: []string{"plan", "name"}, Op: OpExists, Exists: true}, true},
		{Condition{Path: []string{"plan", "seats"}, Op: OpExists, Exists: false}, true},
		{Condition{Path: []string{"kind", "x"}, Op: OpExists, Exists: true}, false},
		{Condition{Path: []string{"n"}, Op: OpGt, Value: 4.0}, true},
		{Condition{Path: []string{"n"}, Op: OpGt, Value: 5.0}, false},
		{Condition{Path: []string{"n"}, Op: OpGte, Value: 5.0}, true},
		{Condition{Path: []string{"n"}, Op: OpLt, Value: 5.0}, false},
		{Condition{Path: []string{"n"}, Op: OpLte, Value: 5.0}, true},
		{Condition{Path: []string{"s"}, Op: OpGt, Value: 1.0}, false},
		{Condition{Path: []string{"kind"}, Op: OpPrefix, Value: "ch"}, true},
		{Condition{Path: []string{"n"}, Op: OpPrefix, Value: "5"}, false},
		{Condition{Path: []string{"plan", "name"}, Op: OpEq, Value: "pro"}, true},
	}
	for _, c := range cases {
		if got := Matches([]Condition{c.c}, props); got != c.want {
			t.Errorf("%v %s %v %v: got %v", c.c.Path, c.c.Op, c.c.Value, c.c.Values, got)
		}
	}
}

func TestDurations(t *testing.T) {
	for in, want := range map[string]time.Duration{"7d": 7 * Day, "36h": 36 * time.Hour, "1d12h": 36 * time.Hour, "2w": 14 * Day, "90m": 90 * time.Minute, "1d1h1m1s": Day + time.Hour + time.Minute + time.Second} {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("%s: %v %v", in, got, err)
		}
		if back, _ := ParseDuration(FormatDuration(got)); back != got {
			t.Errorf("%s: format %s does not read back", in, FormatDuration(got))
		}
	}
	for _, bad := range []string{"", "d", "1h1d", "1d1d", "1.5d", "-1d", "7 d", "1y"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestAFileWithProblemsNamesEachLineAndField(t *testing.T) {
	root, p, err := Root("test file", []byte("a: 1\nb: {c: x}\nd: [1]\n"), 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	f := p.Fields(root, "", []string{"a", "b"}, "a", "e")
	p.Int(f["a"], "a", 2, 5, 0)
	p.Duration(p.Fields(f["b"], "b", []string{"c"})["c"], "b.c", 0)
	err = p.Err()
	for _, want := range []string{"test file is invalid", "line 3: d: unknown field", "line 1: e: required", "line 1: a: must be a whole number from 2 to 5", `line 2: b.c: "x" is not a duration`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
	if _, _, err := Root("test file", []byte("a: 1"), 2); err == nil || !strings.Contains(err.Error(), "over the limit of 2") {
		t.Errorf("size limit: %v", err)
	}
}

func TestPercent(t *testing.T) {
	p := &Parser{what: "x"}
	root, _, _ := Root("x", []byte("[50%, 0.25, 100%, 0%, 150%, abc]"), 100)
	var got []float64
	for _, n := range root.Content {
		got = append(got, p.Percent(n, "v", -1))
	}
	want := []float64{0.5, 0.25, 1, -1, -1, -1}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("item %d: got %v, want %v", i, got[i], want[i])
		}
	}
	if len(p.problems) != 3 {
		t.Errorf("want 3 problems, got %v", p.problems)
	}
}

func TestDocumentsSplitAtSeparatorLines(t *testing.T) {
	src := "# two journeys\n---\nid: a\n---   \n# only a comment\n---\nid: b\nx: \"---\"\n"
	docs := Documents([]byte(src))
	if len(docs) != 2 {
		t.Fatalf("got %d documents, want 2: %+v", len(docs), docs)
	}
	if string(docs[0].Source) != "id: a\n" || docs[0].Line != 3 {
		t.Errorf("first: %q from line %d, want \"id: a\\n\" from line 3", docs[0].Source, docs[0].Line)
	}
	if string(docs[1].Source) != "id: b\nx: \"---\"\n" || docs[1].Line != 7 {
		t.Errorf("second: %q from line %d, want from line 7", docs[1].Source, docs[1].Line)
	}
	if one := Documents([]byte("id: a\n")); len(one) != 1 || one[0].Line != 1 {
		t.Errorf("a file without separators is one document from line 1: %+v", one)
	}
}
