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

// TestOnboardingWalkthrough is the README's milestones walkthrough: put the
// template journey, send four accounts' history, and read their statuses,
// progress, funnel and signals.
func TestOnboardingWalkthrough(t *testing.T) {
	dev := startDev(t, t.TempDir())
	addr, token, writeKey := dev.lines["grpc"], dev.lines["api token"], dev.lines["write key"]
	dir := t.TempDir()

	// A bad file is refused whole, naming the line and field.
	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("id: j\nmilestones:\n  - {id: m, event: E, target: 3 days}\n"), 0o600))
	_, errOut, code := cli(t, addr, "journeys", "put", bad, "--token", token)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `line 3: milestones[0].target: "3 days" is not a duration`)

	tmpl, errOut, code := cli(t, addr, "journeys", "template")
	require.Zero(t, code, errOut)
	journeyFile := filepath.Join(dir, "onboarding.yaml")
	require.NoError(t, os.WriteFile(journeyFile, []byte(tmpl), 0o600))
	out, errOut, code := cli(t, addr, "journeys", "put", journeyFile, "--token", token)
	require.Zero(t, code, errOut)
	require.Contains(t, out, "journey onboarding version 1 stored: 4 milestones")
	require.Contains(t, out, "recomputed 0 accounts")
	out, _, code = cli(t, addr, "journeys", "put", journeyFile, "--token", token)
	require.Zero(t, code)
	require.Contains(t, out, "journey onboarding unchanged (version 1)")

	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "scripts", "onboarding-demo.sh")
	history, err := exec.Command(script).Output()
	require.NoError(t, err)
	historyFile := filepath.Join(dir, "history.jsonl")
	require.NoError(t, os.WriteFile(historyFile, history, 0o600))
	out, errOut, code = cli(t, addr, "send", historyFile, "--write-key", writeKey, "--url", dev.lines["http"])
	require.Zero(t, code, out+errOut)

	want := map[string]string{"done-co": "completed", "first-co": "stalled", "idle10-co": "stalled", "idle4-co": "late"}
	var last string
	require.Eventually(t, func() bool {
		out, _, code := cli(t, addr, "accounts", "list", "--json", "--token", token)
		last = out
		var resp struct {
			Accounts []struct {
				ID               string `json:"id"`
				OnboardingStatus string `json:"onboardingStatus"`
			} `json:"accounts"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &resp) != nil {
			return false
		}
		got := map[string]string{}
		for _, a := range resp.Accounts {
			got[a.ID] = a.OnboardingStatus
		}
		for id, st := range want {
			if got[id] != st {
				return false
			}
		}
		return true
	}, 30*time.Second, 200*time.Millisecond, "statuses: %s", &last)

	out, _, code = cli(t, addr, "milestones", "list", "--status", "stalled", "--token", token)
	require.Zero(t, code)
	require.Contains(t, out, "first-co")
	require.Contains(t, out, "idle10-co")
	require.NotContains(t, out, "done-co")
	require.NotContains(t, out, "idle4-co")

	out, _, code = cli(t, addr, "milestones", "progress", "first-co", "--token", token)
	require.Zero(t, code)
	require.Contains(t, out, "status: stalled since")
	require.Regexp(t, `connected\s+reached\s+1/1`, out)
	require.Regexp(t, `first_report\s+overdue\s+0/2`, out) // a pie chart is not a chart or table
	require.Contains(t, out, "time to first value: 1d")

	out, _, code = cli(t, addr, "accounts", "get", "idle4-co", "--token", token)
	require.Zero(t, code)
	require.Contains(t, out, "onboarding: late (journey onboarding)")
	require.Contains(t, out, "owner: raj@example.com")

	// The tenant's owner trait: the accounts' owner follows it at once.
	out, errOut, code = cli(t, addr, "tenants", "update", "--owner-trait", "name", "--token", token)
	require.Zero(t, code, errOut)
	require.Contains(t, out, "owner trait name")
	out, _, code = cli(t, addr, "accounts", "list", "--owner", "done-co", "--token", token)
	require.Zero(t, code)
	require.Contains(t, out, "done-co")
	require.NotContains(t, out, "first-co")
	_, _, code = cli(t, addr, "tenants", "update", "--token", token)
	require.Zero(t, code)
	out, _, _ = cli(t, addr, "accounts", "get", "done-co", "--token", token)
	require.Contains(t, out, "owner: ann@example.com")

	out, _, code = cli(t, addr, "milestones", "funnel", "--json", "--token", token)
	require.Zero(t, code)
	var funnel struct {
		Accounts string `json:"accounts"`
		Steps    []struct {
			MilestoneID string `json:"milestoneId"`
			Reached     string `json:"reached"`
		} `json:"steps"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &funnel))
	require.Equal(t, "4", funnel.Accounts)
	reached := []string{}
	for _, s := range funnel.Steps {
		reached = append(reached, s.MilestoneID+"="+s.Reached)
	}
	require.Equal(t, "connected=2 first_report=1 team=1 habit=1", strings.Join(reached, " "))

	out, _, code = cli(t, addr, "signals", "list", "--account", "idle10-co", "--token", token)
	require.Zero(t, code)
	require.Contains(t, out, "onboarding_stalled")
	require.Contains(t, out, "high")
	out, _, code = cli(t, addr, "signals", "list", "--kind", "milestone_reached", "--json", "--token", token)
	require.Zero(t, code)
	require.Equal(t, 5, strings.Count(out, `"kind": "milestone_reached"`), out)

	out, _, code = cli(t, addr, "milestones", "stick-point", "--token", token)
	require.Zero(t, code)
	require.Contains(t, out, "journey onboarding: 4 accounts, 0 past the stick point")
	out, _, code = cli(t, addr, "journeys", "list", "--token", token)
	require.Zero(t, code)
	require.Regexp(t, `onboarding\s+1\s+4\s`, out)
	out, _, code = cli(t, addr, "journeys", "get", "onboarding", "--source", "--token", token)
	require.Zero(t, code)
	require.Equal(t, tmpl, out)

	// Deleting the journey recomputes its accounts: none follows a journey.
	_, errOut, code = cli(t, addr, "journeys", "delete", "onboarding", "--token", token)
	require.Zero(t, code, errOut)
	require.Eventually(t, func() bool {
		out, _, _ := cli(t, addr, "accounts", "get", "done-co", "--token", token)
		return strings.Contains(out, "(no journey applies)")
	}, 30*time.Second, 200*time.Millisecond)
	_, errOut, code = cli(t, addr, "milestones", "progress", "done-co", "--token", token)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no journey applies")
}

// TestJourneysPutTakesSeveralJourneys puts a file of two journeys apart by
// "---", as `stickpoint backtest --journeys` reads it too.
func TestJourneysPutTakesSeveralJourneys(t *testing.T) {
	dev := startDev(t, t.TempDir())
	addr, token := dev.lines["grpc"], dev.lines["api token"]
	dir := t.TempDir()
	two := "id: self-serve\napplies_to: {trait: plan, in: [pro]}\nmilestones:\n  - {id: connected, event: Source Connected, target: 3d}\n" +
		"---\nid: enterprise\nmilestones:\n  - {id: sso, event: SSO Configured, target: 14d}\n  - {id: report, event: Report Built, target: 21d}\n"
	file := filepath.Join(dir, "journeys.yaml")
	require.NoError(t, os.WriteFile(file, []byte(two), 0o600))
	out, errOut, code := cli(t, addr, "journeys", "put", file, "--token", token)
	require.Zero(t, code, errOut)
	require.Contains(t, out, "journey self-serve version 1 stored: 1 milestones")
	require.Contains(t, out, "journey enterprise version 1 stored: 2 milestones")

	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte(two+"---\nid: third\nmilestones:\n  - {id: m, event: E, target: soon}\n"), 0o600))
	_, errOut, code = cli(t, addr, "journeys", "put", bad, "--token", token)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "journey 3 of 3 (from line 11)")
	require.Contains(t, errOut, `milestones[0].target: "soon" is not a duration`)
}
