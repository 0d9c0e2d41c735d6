package accounts

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
)

// Value decodes as json.Unmarshal into an any does, fast path or not.
func TestValueDecodesAsUnmarshal(t *testing.T) {
	cases := []string{`"pro"`, `""`, `"é ü 漢"`, `"a\"b"`, `"tab\there"`, `"\u00e9"`, `"line\nbreak"`, "\"bad \xff utf8\"", "\"ctl \x01\"",
		`0`, `-0`, `12`, `-3.5`, `1e3`, `1E-2`, `01`, `1.`, `-`, `1e400`, `123456789012345678901234567890`,
		`true`, `false`, `null`, `{"a":1}`, `[1,"x"]`, ``, `"unterminated`, `x`}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 { // random strings and numbers, through json.Marshal
		var v any
		switch r.IntN(3) {
		case 0:
			b := make([]byte, r.IntN(12))
			for i := range b {
				b[i] = byte(r.IntN(256))
			}
			v = string(b)
		case 1:
			v = r.NormFloat64() * math.Pow(10, float64(r.IntN(40)-20))
		default:
			v = r.Int64() - r.Int64()
		}
		raw, _ := json.Marshal(v)
		cases = append(cases, string(raw))
	}
	for _, c := range cases {
		var want any
		wantErr := json.Unmarshal([]byte(c), &want)
		got, err := Value([]byte(c))
		if (err != nil) != (wantErr != nil) || !reflect.DeepEqual(got, want) {
			t.Errorf("Value(%q) = %#v, %v; json.Unmarshal gives %#v, %v", c, got, err, want, wantErr)
		}
	}
	tr := Traits{"plan": json.RawMessage(`"pro"`), "seats": json.RawMessage(`12`), "bad": json.RawMessage(`{`)}
	if got := tr.Values(); !reflect.DeepEqual(got, map[string]any{"plan": "pro", "seats": 12.0}) {
		t.Errorf("Values: %v", got)
	}
	if tr.Text("plan") != "pro" || tr.Text("seats") != "12" || tr.Text("missing") != "" {
		t.Errorf("Text: %q %q", tr.Text("plan"), tr.Text("seats"))
	}
}
