package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func run(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestExitCodes(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		text string
	}{
		{nil, 2, "no command given"},
		{[]string{"bogus"}, 2, `unknown command "bogus"`},
		{[]string{"events"}, 2, "needs a subcommand: count, recent, stats, warnings"},
		{[]string{"events", "count", "--bogus"}, 2, "unknown flag: --bogus"},
		{[]string{"milestones", "progress"}, 2, "takes 1 argument(s), got 0"},
		{[]string{"journeys", "put", "a.yaml", "--token", ""}, 2, "no API token"},
		{[]string{"journeys", "put", "/no/such/file.yaml", "--token", "spt.x.y", "--addr", "127.0.0.1:1"}, 1, "no such file"},
		{[]string{"--help"}, 0, ""},
		{[]string{"version"}, 0, ""},
	} {
		code, _, errOut := run(c.args...)
		if code != c.code || !strings.Contains(errOut, c.text) {
			t.Errorf("%v: exit %d, want %d; stderr %q", c.args, code, c.code, errOut)
		}
	}
}

func TestHelpAndCompletionAreGenerated(t *testing.T) {
	_, out, _ := run("--help")
	for _, cmd := range []string{"dev", "send", "events", "journeys", "milestones", "accounts", "signals", "completion"} {
		if !strings.Contains(out, "  "+cmd+" ") {
			t.Errorf("--help does not list %s:\n%s", cmd, out)
		}
	}
	_, out, _ = run("accounts", "list", "--help")
	for _, flag := range []string{"--json", "--addr", "--token", "--status", "--owner", "--trait", "STICKPOINT_ADDR", "STICKPOINT_TOKEN"} {
		if !strings.Contains(out, flag) {
			t.Errorf("accounts list --help lacks %s:\n%s", flag, out)
		}
	}
	if code, out, _ := run("completion", "bash"); code != 0 || !strings.Contains(out, "bash completion") {
		t.Errorf("completion bash: %d %.100s", code, out)
	}
	if code, out, _ := run("journeys", "template"); code != 0 || !strings.HasPrefix(out, "# A journey") {
		t.Errorf("journeys template: %d %.100s", code, out)
	}
}
