package chstore_test

import (
	"strings"
	"testing"

	"github.com/stickpoint/stickpoint/pkg/chstore"
)

// unquote reads one ClickHouse single-quoted literal at the start of s and
// returns its value and the rest of s.
func unquote(t *testing.T, s string) (string, string) {
	t.Helper()
	if !strings.HasPrefix(s, "'") {
		t.Fatalf("no literal at %q", s)
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
			switch s[i] {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case '0':
				b.WriteByte(0)
			default:
				b.WriteByte(s[i])
			}
		case '\'':
			return b.String(), s[i+1:]
		default:
			b.WriteByte(s[i])
		}
	}
	t.Fatalf("unterminated literal in %q", s)
	return "", ""
}

// FuzzBind checks that any string value stays inside its literal: the bound
// query reads back as exactly the value, and nothing after it changes.
func FuzzBind(f *testing.F) {
	for _, s := range []string{"", "plain", "it's", `back\slash`, "'; DROP TABLE events; --", "?", "\x00\n\r\t", "\\'", "é🙂"} {
		f.Add(s, "tail")
	}
	f.Fuzz(func(t *testing.T, value, other string) {
		q, err := chstore.Bind("SELECT ? AS a, ? AS b", value, other)
		if err != nil {
			t.Fatal(err)
		}
		rest, ok := strings.CutPrefix(q, "SELECT ")
		if !ok {
			t.Fatalf("prefix changed: %q", q)
		}
		got, rest := unquote(t, rest)
		if got != value {
			t.Fatalf("first value %q read back as %q", value, got)
		}
		rest, ok = strings.CutPrefix(rest, " AS a, ")
		if !ok {
			t.Fatalf("text between values changed: %q", q)
		}
		got, rest = unquote(t, rest)
		if got != other || rest != " AS b" {
			t.Fatalf("second value %q read back as %q, rest %q", other, got, rest)
		}
	})
}
