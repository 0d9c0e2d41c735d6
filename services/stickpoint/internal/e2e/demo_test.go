package e2e

import (
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDemo is `make run` then `make demo`: the demo finds the tenant's
// credentials in the data folder, loads 200 accounts, and shows what a CSM
// sees, its webhook receiver having verified every alert's signature.
func TestDemo(t *testing.T) {
	dataDir := t.TempDir()
	dev := startDev(t, dataDir)
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "..", "..")
	out, errOut, code := cli(t, dev.lines["grpc"], "demo", "--data-dir", dataDir, "--url", dev.lines["http"], "--quiet",
		"--model", filepath.Join(root, "scripts", "health-model.yaml"))
	require.Zero(t, code, "%s\n%s", out, errOut)

	// Six accounts asked to cancel: six critical alerts, with their owners.
	critical := section(out, "Open alerts: critical")
	require.Equal(t, 6, strings.Count(critical, "cancellation_requested"), critical)
	require.Contains(t, critical, "@stickpoint.dev")
	require.Contains(t, section(out, "Open alerts: high"), "cancel_intent")
	require.Contains(t, section(out, "Open alerts: medium"), "onboarding_stalled")
	require.Contains(t, out, "cancellation requested") // an alert's evidence
	require.Regexp(t, `The webhook receiver got \d+ signed alerts: every signature verified \(0 refused\), 0 duplicate deliveries`, out)
	require.Regexp(t, regexp.MustCompile(`acct-1(19|2\d)\s+100 green`), section(out, "Accounts ready to expand"))
	require.Contains(t, section(out, "Accounts at risk"), "health red")
	require.Regexp(t, `journey onboarding: 19\d accounts`, section(out, "The onboarding funnel"))
	require.Contains(t, section(out, "Churn"), "overall      14 churns, 14 foreseen (100%)")

	// Afterwards the demo's channel is gone; its rules stay.
	cfg, _, code := cli(t, dev.lines["grpc"], "alerting", "get", "--token", dev.lines["api token"])
	require.Zero(t, code)
	require.Contains(t, cfg, "channels: []")
	require.Contains(t, cfg, "kind: cancellation_requested")
}

// section is the output under a "== title" heading, up to the next one.
func section(out, title string) string {
	_, rest, ok := strings.Cut(out, "== "+title)
	if !ok {
		return ""
	}
	body, _, _ := strings.Cut(rest, "\n== ")
	return body
}
