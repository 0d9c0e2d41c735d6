package config

import (
	"fmt"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/stickpoint/stickpoint/pkg/specfile"
)

// secret is where a file holds a secret: a webhook's signing secret, a
// mail server's password, or a Slack incoming-webhook URL (whoever has it
// can post).
type secret struct {
	channel, field string
	node           *yaml.Node
}

// secrets finds the secrets of a file that parses as YAML; anything else
// has none to find (Parse reports its problems).
func secrets(src []byte) []secret {
	var doc yaml.Node
	if yaml.Unmarshal(src, &doc) != nil || len(doc.Content) != 1 {
		return nil
	}
	channels := field(doc.Content[0], "channels")
	if channels == nil || channels.Kind != yaml.SequenceNode {
		return nil
	}
	var out []secret
	for _, ch := range channels.Content {
		id, typ := field(ch, "id"), field(ch, "type")
		if id == nil || typ == nil {
			continue
		}
		names := []string{"secret", "password"}
		if typ.Value == Slack {
			names = append(names, "url")
		}
		for _, name := range names {
			if v := field(ch, name); v != nil && v.Kind == yaml.ScalarNode {
				out = append(out, secret{channel: id.Value, field: name, node: v})
			}
		}
	}
	return out
}

func field(n *yaml.Node, name string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == name {
			return n.Content[i+1]
		}
	}
	return nil
}

// Redact replaces every secret of src with <redacted>, keeping the rest
// of the text (comments included) as written.
func Redact(src string) string {
	var edits []edit
	for _, s := range secrets([]byte(src)) {
		if s.node.Value != Redacted {
			edits = append(edits, edit{node: s.node, with: Redacted})
		}
	}
	return apply(src, edits)
}

// KeepSecrets returns src with each <redacted> secret replaced by the one
// current holds for the same channel and field, so that a file from
// `alerting get` can be edited and put back. A redacted secret the current
// configuration has no value for is an error naming it.
func KeepSecrets(current Config, src []byte) ([]byte, error) {
	var edits []edit
	for _, s := range secrets(src) {
		if s.node.Value != Redacted {
			continue
		}
		var value string
		if ch := current.Channel(s.channel); ch != nil {
			switch s.field {
			case "secret":
				value = ch.Secret
			case "password":
				value = ch.Password
			case "url":
				if ch.Type == Slack {
					value = ch.URL
				}
			}
		}
		if value == "" {
			return nil, &specfile.Error{What: "alerting configuration", Problems: []string{
				fmt.Sprintf("line %d: channel %s: %s is %s, but the configuration in force has none to keep; write the value", s.node.Line, s.channel, s.field, Redacted)}}
		}
		edits = append(edits, edit{node: s.node, with: value})
	}
	return []byte(apply(string(src), edits)), nil
}

type edit struct {
	node *yaml.Node
	with string
}

// apply replaces each edit's scalar in src with its value, double-quoted.
// A scalar is found by its line and column; a quoted one ends at its
// closing quote, a plain one after its value.
func apply(src string, edits []edit) string {
	lines := strings.SplitAfter(src, "\n")
	// Right to left within a line, so earlier columns stay put.
	sort.Slice(edits, func(i, j int) bool {
		a, b := edits[i].node, edits[j].node
		return a.Line > b.Line || (a.Line == b.Line && a.Column > b.Column)
	})
	for _, e := range edits {
		li, col := e.node.Line-1, e.node.Column-1
		if li < 0 || li >= len(lines) || col < 0 || col > len(lines[li]) {
			continue
		}
		line := lines[li]
		end := col + len(e.node.Value)
		switch {
		case e.node.Style&yaml.DoubleQuotedStyle != 0, e.node.Style&yaml.SingleQuotedStyle != 0:
			q := line[col]
			end = col + 1
			for end < len(line) && (line[end] != q || (q == '"' && line[end-1] == '\\')) {
				end++
			}
			end++
		case end > len(line) || line[col:end] != e.node.Value:
			continue // not written on one line as read: leave it
		}
		lines[li] = line[:col] + fmt.Sprintf("%q", e.with) + line[min(end, len(line)):]
	}
	return strings.Join(lines, "")
}
