package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/testutil"
	"github.com/stickpoint/stickpoint/services/alerting/receiver"
)

// TestAlertWalkthrough is the whole path on each engine: events into the
// HTTP API, a "Cancellation Requested" among them, and the signed alert
// out at a webhook with its evidence, seen live by `stickpoint alerts
// watch`, then acknowledged.
func TestAlertWalkthrough(t *testing.T) {
	for _, engine := range testutil.Engines {
		t.Run(engine, func(t *testing.T) {
			var extra []string
			if engine == "server" {
				cfg := testutil.StoreConfig(t, engine)
				extra = []string{"--set", "clickhouse.engine=server", "--set", "clickhouse.addr=" + cfg.Addr[0], "--set", "clickhouse.database=" + cfg.Database}
			}
			dev := startDev(t, t.TempDir(), extra...)
			alertWalkthrough(t, dev)
		})
	}
}

func alertWalkthrough(t *testing.T, dev *devProcess) {
	addr, token, writeKey := dev.lines["grpc"], dev.lines["api token"], dev.lines["write key"]
	dir := t.TempDir()

	hook := &receiver.Webhook{Secret: "whsec_e2e_12345"}
	srv, hookAddr, err := receiver.Listen("127.0.0.1:0", hook)
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })

	// The default configuration first, then ours; a bad one is refused.
	out, errOut, code := cli(t, addr, "alerting", "get", "--token", token)
	require.Zero(t, code, errOut)
	require.Contains(t, out, "# Stickpoint alerting configuration")
	cfgFile := filepath.Join(dir, "alerting.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte("channels:\n  - {id: h, type: webhook, url: ftp://x, secret: whsec_e2e_12345}\n"), 0o600))
	_, errOut, code = cli(t, addr, "alerting", "put", cfgFile, "--token", token)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `line 2: channels[0].url: "ftp://x" is not an http(s) URL`)
	require.NoError(t, os.WriteFile(cfgFile, []byte(fmt.Sprintf(`owner_trait: csm_email
channels:
  - id: team-hook
    type: webhook
    url: http://%s/hooks/stickpoint
    secret: whsec_e2e_12345
rules:
  - kind: cancellation_requested
    severity: critical
    channels: [team-hook]
`, hookAddr)), 0o600))
	out, errOut, code = cli(t, addr, "alerting", "put", cfgFile, "--token", token)
	require.Zero(t, code, errOut)
	require.Contains(t, out, "alerting configuration version 1 stored")
	out, _, _ = cli(t, addr, "alerting", "get", "--token", token)
	require.NotContains(t, out, "whsec_e2e_12345")
	require.Contains(t, out, `secret: "<redacted>"`)

	// A watcher, as a CSM would run it.
	watch := exec.Command(binary, "alerts", "watch", "--addr", addr, "--token", token)
	stdout, err := watch.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, watch.Start())
	t.Cleanup(func() { _ = watch.Process.Kill(); _ = watch.Wait() })
	watched := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			watched <- sc.Text()
		}
	}()
	time.Sleep(time.Second) // subscribed

	// The account, as the product's SDK describes it, then its request to
	// cancel.
	send := func(lines ...string) {
		events := filepath.Join(dir, "events.jsonl")
		require.NoError(t, os.WriteFile(events, []byte(strings.Join(lines, "\n")+"\n"), 0o600))
		out, errOut, code := cli(t, addr, "send", events, "--url", dev.lines["http"], "--write-key", writeKey, "--quiet")
		require.Zero(t, code, out+errOut)
	}
	send(`{"type":"group","userId":"u1","groupId":"leaving-co","traits":{"name":"Leaving Co","csm_email":"ana@example.com","plan":"pro"}}`,
		`{"type":"track","userId":"u1","event":"Report Built","context":{"groupId":"leaving-co"}}`)
	waitCount(t, addr, token, 2)
	send(`{"type":"track","userId":"u1","event":"Cancellation Requested","properties":{"reason":"too expensive"},"context":{"groupId":"leaving-co"}}`)

	require.Eventually(t, func() bool { return len(hook.Got()) == 1 }, 30*time.Second, 50*time.Millisecond, "the webhook got no alert")
	var p struct {
		DeliveryID string `json:"delivery_id"`
		Alert      struct {
			ID       string   `json:"id"`
			Kind     string   `json:"kind"`
			Severity string   `json:"severity"`
			Evidence []string `json:"evidence"`
			Account  struct {
				ID, Name, Owner string
			} `json:"account"`
		} `json:"alert"`
	}
	require.NoError(t, json.Unmarshal(hook.Got()[0].Body, &p))
	require.Equal(t, hook.Got()[0].DeliveryID, p.DeliveryID)
	require.Equal(t, "cancellation_requested", p.Alert.Kind)
	require.Equal(t, "critical", p.Alert.Severity)
	require.Equal(t, "leaving-co", p.Alert.Account.ID)
	require.Equal(t, "Leaving Co", p.Alert.Account.Name)
	require.Equal(t, "ana@example.com", p.Alert.Account.Owner)
	require.Contains(t, strings.Join(p.Alert.Evidence, "\n"), "cancellation requested")
	require.Contains(t, strings.Join(p.Alert.Evidence, "\n"), "by u1")

	// The watcher printed it, with its evidence.
	deadline := time.After(10 * time.Second)
	var seen []string
	for found := false; !found; {
		select {
		case line := <-watched:
			seen = append(seen, line)
			found = strings.Contains(line, "opened") && strings.Contains(line, "cancellation_requested") && strings.Contains(line, "Leaving Co")
		case <-deadline:
			t.Fatalf("alerts watch printed no opened alert:\n%s", strings.Join(seen, "\n"))
		}
	}

	out, _, code = cli(t, addr, "alerts", "list", "--state", "open", "--token", token)
	require.Zero(t, code)
	require.Contains(t, out, p.Alert.ID)
	require.Contains(t, out, "ana@example.com")
	out, _, code = cli(t, addr, "alerts", "get", p.Alert.ID, "--token", token)
	require.Zero(t, code)
	require.Contains(t, out, "cancellation requested")
	require.Regexp(t, `team-hook \(webhook\)\s+opened\s+1\s+delivered\s+204`, out)
	out, errOut, code = cli(t, addr, "alerts", "ack", p.Alert.ID, "--by", "ana@example.com", "--note", "calling them", "--token", token)
	require.Zero(t, code, errOut)
	require.Contains(t, out, "is acknowledged")
	if dups, rejected := hook.Counts(); dups != 0 || rejected != 0 {
		t.Fatalf("webhook: %d duplicates, %d bad signatures", dups, rejected)
	}
}
