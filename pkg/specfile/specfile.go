// Package specfile is the grammar shared by the files tenants write:
// journeys, the health model, and alerting. It reads YAML or JSON (JSON
// is YAML) as nodes, so every problem names its line and field, and it
// holds what the files have in common: durations (7d, 1d12h), conditions
// with their operators, and ids. A file with any problem is refused whole,
// with every problem listed.
package specfile

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Day is 24 hours: the files count UTC days.
const Day = 24 * time.Hour

// Limits shared by the files.
const (
	MaxConditions  = 16
	MaxTextLength  = 200
	maxErrorsShown = 20
)

// Error lists a file's problems, each with its line.
type Error struct {
	// What names the file: "journey file", "health model".
	What     string
	Problems []string
}

func (e *Error) Error() string {
	shown := e.Problems
	more := ""
	if len(shown) > maxErrorsShown {
		more = fmt.Sprintf("\n  ... and %d more", len(shown)-maxErrorsShown)
		shown = shown[:maxErrorsShown]
	}
	return e.What + " is invalid:\n  " + strings.Join(shown, "\n  ") + more
}

// Parser collects problems while a file's reader walks its document.
type Parser struct {
	what     string
	problems []string
}

// Root reads src, at most maxBytes, and returns its root node and a
// parser to walk it. An empty or unreadable file is an *Error naming what.
func Root(what string, src []byte, maxBytes int) (*yaml.Node, *Parser, error) {
	if len(src) > maxBytes {
		return nil, nil, &Error{What: what, Problems: []string{fmt.Sprintf("file: %d bytes is over the limit of %d", len(src), maxBytes)}}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, nil, &Error{What: what, Problems: []string{strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, nil, &Error{What: what, Problems: []string{"file: empty"}}
	}
	return doc.Content[0], &Parser{what: what}, nil
}

// Err is the problems found, as an *Error, or nil.
func (p *Parser) Err() error {
	if len(p.problems) == 0 {
		return nil
	}
	return &Error{What: p.what, Problems: p.problems}
}

// Fail records a problem at n's line.
func (p *Parser) Fail(n *yaml.Node, field, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.problems = append(p.problems, fmt.Sprintf("line %d: %s: %s", line, field, fmt.Sprintf(format, args...)))
}

// Fields returns a mapping's values by key, reporting unknown and repeated
// keys and missing required ones. It returns nil for a node that is not a
// mapping.
func (p *Parser) Fields(n *yaml.Node, path string, known []string, required ...string) map[string]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		p.Fail(n, path, "must be a mapping of fields")
		return nil
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := Join(path, k.Value)
		switch {
		case !slices.Contains(known, k.Value):
			p.Fail(k, name, "unknown field (known: %s)", strings.Join(known, ", "))
		case out[k.Value] != nil:
			p.Fail(k, name, "given twice")
		default:
			out[k.Value] = v
		}
	}
	for _, r := range required {
		if out[r] == nil {
			p.Fail(n, Join(path, r), "required")
		}
	}
	return out
}

// Join is a field's path: parent.field.
func Join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// List returns a sequence's items, at most max, reporting anything else.
// An absent list (n nil) is empty.
func (p *Parser) List(n *yaml.Node, path string, max int) []*yaml.Node {
	switch {
	case n == nil:
	case n.Kind != yaml.SequenceNode:
		p.Fail(n, path, "must be a list")
	case len(n.Content) > max:
		p.Fail(n, path, "%d items is over the limit of %d", len(n.Content), max)
	default:
		return n.Content
	}
	return nil
}

var idRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// ValidID reports whether id can name a journey, milestone, signal or
// channel: letters, digits, '-' and '_', at most 64, starting with a
// letter or digit.
func ValidID(id string) bool { return idRe.MatchString(id) }

// ID reads an id.
func (p *Parser) ID(n *yaml.Node, path string) string {
	if n.Kind != yaml.ScalarNode || !ValidID(n.Value) {
		p.Fail(n, path, "%q is not an id: letters, digits, '-' and '_', at most 64, starting with a letter or digit", n.Value)
		return ""
	}
	return n.Value
}

// Text reads text of at most MaxTextLength; def when n is nil.
func (p *Parser) Text(n *yaml.Node, path, def string) string {
	if n == nil {
		return def
	}
	if n.Kind != yaml.ScalarNode {
		p.Fail(n, path, "must be text")
		return def
	}
	if len(n.Value) > MaxTextLength {
		p.Fail(n, path, "longer than %d characters", MaxTextLength)
	}
	return n.Value
}

// Name reads a required event or trait name: 1 to MaxTextLength characters.
func (p *Parser) Name(n *yaml.Node, path string) string {
	s := p.Text(n, path, "")
	if n != nil && n.Kind == yaml.ScalarNode && s == "" {
		p.Fail(n, path, "must not be empty")
	}
	return s
}

// Int reads a whole number from lo to hi; def when n is nil.
func (p *Parser) Int(n *yaml.Node, path string, lo, hi, def int) int {
	if n == nil {
		return def
	}
	v, err := strconv.Atoi(n.Value)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || err != nil || v < lo || v > hi {
		p.Fail(n, path, "must be a whole number from %d to %d, got %q", lo, hi, n.Value)
		return def
	}
	return v
}

// Percent reads a share written 50% or 0.5, as a fraction in (0, 1].
func (p *Parser) Percent(n *yaml.Node, path string, def float64) float64 {
	if n == nil {
		return def
	}
	s := strings.TrimSpace(n.Value)
	scale := 1.0
	if strings.HasSuffix(s, "%") {
		s, scale = strings.TrimSpace(strings.TrimSuffix(s, "%")), 100
	}
	v, err := strconv.ParseFloat(s, 64)
	if n.Kind != yaml.ScalarNode || err != nil || v/scale <= 0 || v/scale > 1 {
		p.Fail(n, path, "%q is not a share above 0%% and up to 100%% (like 50%%)", n.Value)
		return def
	}
	return v / scale
}

// Duration reads a positive duration; def when n is nil.
func (p *Parser) Duration(n *yaml.Node, path string, def time.Duration) time.Duration {
	if n == nil {
		return def
	}
	d, err := ParseDuration(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		p.Fail(n, path, "%q is not a duration (like 3d, 36h, 1d12h)", n.Value)
		return def
	}
	if d <= 0 {
		p.Fail(n, path, "must be positive")
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

// OrNode is n, else fallback: the node to name in a problem about a
// missing value.
func OrNode(n, fallback *yaml.Node) *yaml.Node {
	if n != nil {
		return n
	}
	return fallback
}

// Scalar is a YAML scalar as JSON would hold it: string, float64, bool or
// nil. A quoted "5" stays a string.
func Scalar(n *yaml.Node) any {
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

// Document is one YAML document of a file, and the line it starts on.
type Document struct {
	Source []byte
	Line   int
}

// Documents splits a file into its YAML documents, apart at lines that
// are "---": a file may hold several journeys. Documents holding nothing
// but comments and blank lines are left out.
func Documents(src []byte) []Document {
	var out []Document
	start, startLine := 0, 1
	flush := func(end, nextLine int) {
		doc := src[start:end]
		if hasContent(doc) {
			out = append(out, Document{Source: doc, Line: startLine})
		}
		startLine = nextLine
	}
	line := 1
	for i := 0; i < len(src); {
		j := bytes.IndexByte(src[i:], '\n')
		next := len(src)
		if j >= 0 {
			next = i + j + 1
		}
		if strings.TrimRight(string(src[i:next]), " \t\r\n") == "---" {
			flush(i, line+1)
			start = next
		}
		i, line = next, line+1
	}
	flush(len(src), line)
	return out
}

func hasContent(doc []byte) bool {
	for l := range strings.SplitSeq(string(doc), "\n") {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
			return true
		}
	}
	return false
}
