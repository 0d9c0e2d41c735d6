package chstore

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Bind replaces each ? placeholder in query with the matching argument as a
// ClickHouse literal. Placeholders inside quoted strings, quoted identifiers
// and comments are left alone. Both engines bind here, so a query means the
// same thing on each, and the 18.16 server (which lacks server-side query
// parameters) is covered too.
func Bind(query string, args ...any) (string, error) {
	if len(args) == 0 && !strings.Contains(query, "?") {
		return query, nil
	}
	var b strings.Builder
	b.Grow(len(query) + 16*len(args))
	n := 0
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case c == '\'' || c == '"' || c == '`':
			end := skipQuoted(query, i, c)
			b.WriteString(query[i:end])
			i = end - 1
		case c == '-' && i+1 < len(query) && query[i+1] == '-':
			end := strings.IndexByte(query[i:], '\n')
			if end < 0 {
				end = len(query) - i
			}
			b.WriteString(query[i : i+end])
			i += end - 1
		case c == '/' && i+1 < len(query) && query[i+1] == '*':
			end := strings.Index(query[i+2:], "*/")
			if end < 0 {
				return "", fmt.Errorf("bind: unterminated comment")
			}
			b.WriteString(query[i : i+2+end+2])
			i += 2 + end + 1
		case c == '?':
			if n >= len(args) {
				return "", fmt.Errorf("bind: query has more placeholders than the %d arguments given", len(args))
			}
			if err := appendLiteral(&b, args[n]); err != nil {
				return "", fmt.Errorf("bind argument %d: %w", n+1, err)
			}
			n++
		default:
			b.WriteByte(c)
		}
	}
	if n != len(args) {
		return "", fmt.Errorf("bind: %d arguments given for %d placeholders", len(args), n)
	}
	return b.String(), nil
}

// skipQuoted returns the index just past the quoted token starting at i.
func skipQuoted(s string, i int, q byte) int {
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case q:
			if j+1 < len(s) && s[j+1] == q { // doubled quote
				j++
				continue
			}
			return j + 1
		}
	}
	return len(s)
}

// In is a list of strings bound as a tuple, for `col IN ?`. (A plain
// []string binds as an Array, for has(); the 18.16 server rejects an Array
// on the right of IN.) An empty In matches nothing.
type In []string

func appendLiteral(b *strings.Builder, v any) error {
	switch x := v.(type) {
	case In:
		if len(x) == 0 {
			// IN () is a syntax error, and NULL matches no value.
			b.WriteString("(NULL)")
			return nil
		}
		b.WriteByte('(')
		for i, s := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			appendQuoted(b, s)
		}
		b.WriteByte(')')
	case nil:
		b.WriteString("NULL")
	case string:
		appendQuoted(b, x)
	case []byte:
		appendQuoted(b, string(x))
	case bool:
		if x {
			b.WriteString("1")
		} else {
			b.WriteString("0")
		}
	case int:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case int8:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case int16:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case int32:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case uint:
		b.WriteString(strconv.FormatUint(uint64(x), 10))
	case uint8:
		b.WriteString(strconv.FormatUint(uint64(x), 10))
	case uint16:
		b.WriteString(strconv.FormatUint(uint64(x), 10))
	case uint32:
		b.WriteString(strconv.FormatUint(uint64(x), 10))
	case uint64:
		b.WriteString(strconv.FormatUint(x, 10))
	case float32:
		return appendFloat(b, float64(x))
	case float64:
		return appendFloat(b, x)
	case time.Time:
		// Unix seconds are unambiguous whatever the session time zone is.
		// They are clamped to DateTime's range: older servers wrap a
		// negative value (such as the zero time.Time) instead of clamping.
		b.WriteString("toDateTime(")
		b.WriteString(strconv.FormatInt(min(max(x.Unix(), 0), maxDateTime), 10))
		b.WriteString(")")
	case []string:
		b.WriteByte('[')
		for i, s := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			appendQuoted(b, s)
		}
		b.WriteByte(']')
	case []int64:
		b.WriteByte('[')
		for i, n := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatInt(n, 10))
		}
		b.WriteByte(']')
	case []uint64:
		b.WriteByte('[')
		for i, n := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatUint(n, 10))
		}
		b.WriteByte(']')
	default:
		return fmt.Errorf("unsupported type %T", v)
	}
	return nil
}

// maxDateTime is the last second a DateTime holds (2106-02-07).
const maxDateTime = 1<<32 - 1

func appendFloat(b *strings.Builder, f float64) error {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("non-finite float %v", f)
	}
	b.WriteString(strconv.FormatFloat(f, 'g', -1, 64))
	return nil
}

// appendQuoted writes s as a single-quoted ClickHouse string literal.
func appendQuoted(b *strings.Builder, s string) {
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'':
			b.WriteString(`\'`)
		case '\\':
			b.WriteString(`\\`)
		case 0:
			b.WriteString(`\0`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
}
