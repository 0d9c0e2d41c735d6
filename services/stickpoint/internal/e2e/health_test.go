package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHealthWalkthrough is the README's health walkthrough: put the
// issue's model, send 30 days of three accounts' history, list the
// accounts at risk, read why, and see a churn foreseen.
func TestHealthWalkthrough(t *testing.T) {
	dev := startDev(t, t.TempDir())
	addr, token, writeKey := dev.lines["grpc"], dev.lines["api token"], dev.lines["write key"]
	dir := t.TempDir()
	_, file, _, _ := runtime.Caller(0)
	scripts := filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "scripts")

	// The default model, commented, until one is put.
	out, errOut, code := cli(t, addr, "health", "model", "get", "--token", token)
	require.Zero(t, code, errOut)
	require.Contains(t, out, "# Stickpoint health model")
	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("health:\n  bands: {red: 80, yellow: 70}\n"), 0o600))
	_, errOut, code = cli(t, addr, "health", "model", "put", bad, "--token", token)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "line 2: health.bands: red (80) must be below yellow (70)")
	out, errOut, code = cli(t, addr, "health", "model", "put", filepath.Join(scripts, "health-model.yaml"), "--token", token)
	require.Zero(t, code, errOut)
	require.Contains(t, out, "health model version 1 stored")

	history, err := exec.Command(filepath.Join(scripts, "health-demo.sh")).Output()
	require.NoError(t, err)
	historyFile := filepath.Join(dir, "history.jsonl")
	require.NoError(t, os.WriteFile(historyFile, history, 0o600))
	out, errOut, code = cli(t, addr, "send", historyFile, "--url", dev.lines["http"], "--write-key", writeKey, "--quiet")
	require.Zero(t, code, out+errOut)

	var last string
	require.Eventually(t, func() bool {
		out, _, code := cli(t, addr, "accounts", "list", "--at-risk", "--json", "--token", token)
		last = out
		var resp struct {
			Accounts []struct {
				ID string `json:"id"`
			} `json:"accounts"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &resp) != nil {
			return false
		}
		var ids []string
		for _, a := range resp.Accounts {
			ids = append(ids, a.ID)
		}
		return strings.Join(ids, " ") == "collapsing-co leaving-co"
	}, 30*time.Second, 200*time.Millisecond, "at risk: %s", &last)

	out, _, code = cli(t, addr, "health", "get", "collapsing-co", "--token", token)
	require.Zero(t, code)
	require.Contains(t, out, "at risk: cancel intent")
	require.Contains(t, out, "Usage dropped against the account's baseline: 0 events/day in the 7d before today")
	out, _, code = cli(t, addr, "health", "get", "leaving-co", "--token", token)
	require.Zero(t, code)
	require.Contains(t, out, "Viewed the billing or cancel page 4 times")
	require.Contains(t, out, "by leaving-co-u2")
	require.Contains(t, out, "Bulk data export once")
	require.Contains(t, out, "by leaving-co-u1")
	out, _, code = cli(t, addr, "health", "get", "healthy-co", "--token", token)
	require.Zero(t, code)
	require.Contains(t, out, "green")
	require.NotContains(t, out, "at risk")

	// The leaving account cancels: its churn was foreseen.
	cancel := filepath.Join(dir, "cancel.jsonl")
	require.NoError(t, os.WriteFile(cancel, []byte(`{"type":"track","userId":"leaving-co-u1","event":"Subscription Cancelled","properties":{"reason":"too expensive"},"context":{"groupId":"leaving-co"}}`+"\n"), 0o600))
	out, errOut, code = cli(t, addr, "send", cancel, "--url", dev.lines["http"], "--write-key", writeKey, "--quiet")
	require.Zero(t, code, out+errOut)
	require.Eventually(t, func() bool {
		out, _, _ := cli(t, addr, "churn", "report", "--token", token)
		last = out
		return strings.Contains(out, "overall      1 churns, 1 foreseen (100%)")
	}, 30*time.Second, 200*time.Millisecond, "churn report: %s", &last)
	require.Regexp(t, `leaving-co\s+\S+ \S+\s+good\s+too expensive\s+yes\s+4h\d*m?\s+cancel_intent`, last)

	// Sentiment is its own component, with its author and note. The
	// history keeps a point a second per account (health_history's key is
	// the second scored): the rescore is made in a second of its own, so it
	// adds a point rather than replacing the last score's.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	out, errOut, code = cli(t, addr, "health", "sentiment", "healthy-co", "--score", "30", "--note", "champion left", "--expires", "30d", "--token", token)
	require.Zero(t, code, errOut)
	require.Contains(t, out, "sentiment 30 set on healthy-co")
	out, _, _ = cli(t, addr, "health", "get", "healthy-co", "--token", token)
	require.Regexp(t, `sentiment\s+30\s+\(weight 10\) CSM sentiment 30 by token \S+, until \S+: "champion left"`, out)
	out, _, code = cli(t, addr, "health", "history", "healthy-co", "--token", token)
	require.Zero(t, code)
	require.GreaterOrEqual(t, strings.Count(out, "\n"), 3, out) // a header and two scores at least
	out, _, code = cli(t, addr, "accounts", "usage", "healthy-co", "--days", "7", "--token", token)
	require.Zero(t, code)
	require.Contains(t, out, "Report Built 5")
}
