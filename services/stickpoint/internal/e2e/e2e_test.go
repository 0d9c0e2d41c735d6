// Package e2e runs the stickpoint binary as a new user would: start the
// embedded mode, use the printed token with the CLI, stop it with SIGINT,
// start it again.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/testutil"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "stickpoint-e2e-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "stickpoint")
	build := exec.Command("go", "build", "-o", binary, "github.com/stickpoint/stickpoint/services/stickpoint/cmd/stickpoint")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build stickpoint:", err)
		os.Exit(1)
	}
	code := testutil.Main(m)
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// devProcess is a running `stickpoint dev`.
type devProcess struct {
	cmd    *exec.Cmd
	lines  map[string]string // "write key" -> value, from "name: value" lines
	stderr *bytes.Buffer
	done   chan error
}

// startDev starts `stickpoint dev` on dataDir, with extra arguments.
func startDev(t *testing.T, dataDir string, extra ...string) *devProcess {
	t.Helper()
	ports, err := testutil.FreePorts(2)
	require.NoError(t, err)
	cmd := exec.Command(binary, append([]string{"dev", "--data-dir", dataDir,
		"--grpc-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--http-addr", fmt.Sprintf("127.0.0.1:%d", ports[1])}, extra...)...)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	p := &devProcess{cmd: cmd, lines: map[string]string{}, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	require.NoError(t, cmd.Start())
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if line == "ready" {
				close(ready)
				continue
			}
			if k, v, ok := strings.Cut(line, ": "); ok {
				p.lines[k] = v
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() { p.stop(t) })
	select {
	case <-ready:
	case err := <-p.done:
		t.Fatalf("stickpoint dev exited before ready: %v\n%s", err, p.stderr)
	case <-time.After(60 * time.Second):
		t.Fatalf("stickpoint dev not ready within 60s\n%s", p.stderr)
	}
	return p
}

// stop sends SIGINT, as Ctrl-C does, and waits for a clean exit.
func (p *devProcess) stop(t *testing.T) {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-p.done:
		require.NoError(t, err, "clean exit on SIGINT\n%s", p.stderr)
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Fatalf("stickpoint dev did not stop within 30s of SIGINT\n%s", p.stderr)
	}
}

func cli(t *testing.T, addr string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), "STICKPOINT_ADDR="+addr, "STICKPOINT_TOKEN=")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return out.String(), errb.String(), code
}

func TestNewUserJourney(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	dev := startDev(t, dataDir)
	writeKey, token, addr := dev.lines["write key"], dev.lines["api token"], dev.lines["grpc"]
	require.True(t, strings.HasPrefix(writeKey, "wk_"), "write key line: %v", dev.lines)
	require.True(t, strings.HasPrefix(token, "spt."), "api token line: %v", dev.lines)

	out, errOut, code := cli(t, addr, "keys", "list", "--token", token)
	require.Zero(t, code, errOut)
	require.Contains(t, out, writeKey)

	out, errOut, code = cli(t, addr, "keys", "list", "--token", token, "--json")
	require.Zero(t, code, errOut)
	var sources struct {
		Sources []struct {
			WriteKeys []struct{ Key string } `json:"writeKeys"`
		} `json:"sources"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &sources))
	require.Equal(t, writeKey, sources.Sources[0].WriteKeys[0].Key)

	// A read-only token can't list keys, and the error says why.
	out, errOut, code = cli(t, addr, "tokens", "create", "--name", "dashboards", "--scopes", "read", "--token", token)
	require.Zero(t, code, errOut)
	readToken := strings.TrimPrefix(strings.Split(out, "\n")[1], "api token: ")
	_, errOut, code = cli(t, addr, "keys", "list", "--token", readToken)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "permission denied")
	require.Contains(t, errOut, "admin scope")

	_, errOut, code = cli(t, addr, "keys", "list")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "STICKPOINT_TOKEN")

	// The printed curl line sends an event; sending it again changes nothing.
	try := dev.lines["try"]
	require.Contains(t, try, "curl -u "+writeKey+":")
	for range 2 {
		out, err := exec.Command("sh", "-c", try+" -s").CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Contains(t, string(out), `"success":true`)
	}
	waitCount(t, addr, token, 1)

	// stickpoint send: a file of Segment calls, sent twice, stored once.
	var lines []string
	for i := range 1000 {
		lines = append(lines, fmt.Sprintf(`{"type":"track","event":"Imported","userId":"u%d","messageId":"imp-%d","timestamp":"2026-11-01T10:00:00Z"}`, i%20, i))
	}
	file := filepath.Join(t.TempDir(), "calls.jsonl")
	require.NoError(t, os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600))
	for range 2 {
		out, errOut, code = cli(t, addr, "send", file, "--write-key", writeKey, "--url", dev.lines["http"])
		require.Zero(t, code, errOut)
		require.Contains(t, out, "sent 1000 events")
	}
	// A marker sent after the re-send is stored after it (one writer, in stream order).
	_, _, code = cli(t, addr, "send", writeMarker(t), "--write-key", writeKey, "--url", dev.lines["http"])
	require.Zero(t, code)
	waitCount(t, addr, token, 1002)
	out, _, _ = cli(t, addr, "events", "count", "--event", "Imported", "--token", token)
	require.Equal(t, "1000", strings.TrimSpace(out))

	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	require.NoError(t, os.WriteFile(bad, []byte("{not json\n"+lines[0]+"\n"), 0o600))
	out, errOut, code = cli(t, addr, "send", bad, "--write-key", writeKey, "--url", dev.lines["http"])
	require.Equal(t, 1, code)
	require.Contains(t, out, "skipped 1 invalid lines")
	require.Contains(t, errOut, "line 1:")

	// A history file with one event older than the history limit: the
	// other 1,999 are stored, and the bad one is reported by line.
	var history []string
	for i := range 2000 {
		ts := "2026-10-01T10:00:00Z"
		if i == 1234 {
			ts = "2001-01-01T00:00:00Z"
		}
		history = append(history, fmt.Sprintf(`{"type":"track","event":"History","userId":"h%d","messageId":"hist-%d","timestamp":%q}`, i%20, i, ts))
	}
	histFile := filepath.Join(t.TempDir(), "history.jsonl")
	require.NoError(t, os.WriteFile(histFile, []byte(strings.Join(history, "\n")+"\n"), 0o600))
	out, errOut, code = cli(t, addr, "send", histFile, "--write-key", writeKey, "--url", dev.lines["http"])
	require.Equal(t, 1, code, "a rejected event fails the command")
	require.Contains(t, out, "sent 1999 events, 1 rejected")
	require.Contains(t, errOut, "line 1235: timestamp: 2001-01-01T00:00:00Z is older than the history limit")
	waitCount(t, addr, token, 1002+1999)
	require.Eventually(t, func() bool {
		out, _, code = cli(t, addr, "events", "warnings", "--token", token)
		return code == 0 && strings.Contains(out, "timestamp")
	}, 30*time.Second, 100*time.Millisecond, "the rejected call shows in the warnings")
	require.Contains(t, out, "older than the history limit", "with its example")
	out, errOut, code = cli(t, addr, "events", "warnings", "--token", token, "--json")
	require.Zero(t, code, errOut)
	var warnings struct {
		Warnings []struct{ Field, Calls, ExampleCall string }
	}
	require.NoError(t, json.Unmarshal([]byte(out), &warnings))
	require.Equal(t, "timestamp", warnings.Warnings[0].Field)
	require.Equal(t, "1", warnings.Warnings[0].Calls)
	require.Contains(t, warnings.Warnings[0].ExampleCall, "hist-1234")

	// stickpoint load: a short run, counted through to ClickHouse.
	out, errOut, code = cli(t, addr, "load", "--url", dev.lines["http"], "--write-key", writeKey, "--token", token,
		"--duration", "1s", "--concurrency", "2", "--batch", "50")
	require.Zero(t, code, errOut)
	require.Contains(t, out, "end to end")

	metrics := httpGet(t, "http://"+strings.TrimPrefix(dev.lines["http"], "http://")+"/metrics")
	require.Contains(t, metrics, "stickpoint_ingest_events_accepted_total")
	require.Contains(t, metrics, "rpc_server_call_duration", "gRPC calls are measured")

	// Ctrl-C, start again: same key, no new token, the old token works.
	dev.stop(t)
	dev2 := startDev(t, dataDir)
	require.Equal(t, writeKey, dev2.lines["write key"])
	_, printed := dev2.lines["api token"]
	require.False(t, printed, "the token is printed only when created")
	out, errOut, code = cli(t, dev2.lines["grpc"], "keys", "list", "--token", token)
	require.Zero(t, code, errOut)
	require.Contains(t, out, writeKey)
}

func TestSecondProcessOnSameDataDirIsRefused(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	startDev(t, dataDir)
	cmd := exec.Command(binary, "dev", "--data-dir", dataDir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	out, err := cmd.CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "in use by another stickpoint process")
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	_, errOut, code := cli(t, "", "dev", "--data-dir", t.TempDir(), "--set", "grpc.shutdown_timeout=soon")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "grpc.shutdown_timeout")
	_, errOut, code = cli(t, "", "dev", "--data-dir", t.TempDir(), "--set", "clickhouse.engine=sqlite")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "clickhouse.engine")
	_, errOut, code = cli(t, "", "bogus")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `unknown command "bogus"`)
	out, _, code := cli(t, "", "dev", "--help-config")
	require.Zero(t, code)
	require.Contains(t, out, "STICKPOINT_NATS_URL")
}

func TestMigrateOnBothEngines(t *testing.T) {
	for _, engine := range testutil.Engines {
		t.Run(engine, func(t *testing.T) {
			cfg := testutil.StoreConfig(t, engine)
			args := []string{"migrate", "--set", "clickhouse.engine=" + engine, "--set", "clickhouse.database=" + cfg.Database}
			if engine == "server" {
				args = append(args, "--set", "clickhouse.addr="+cfg.Addr[0])
			} else {
				args = append(args, "--set", "clickhouse.data_dir="+t.TempDir())
			}
			out, errOut, code := cli(t, "", args...)
			require.Zero(t, code, errOut)
			require.Contains(t, out, "schema up to date")
			require.Contains(t, out, engine+" engine")
		})
	}
}

// waitCount polls `stickpoint events count` until it shows want.
func waitCount(t *testing.T, addr, token string, want int) {
	t.Helper()
	var last string
	require.Eventually(t, func() bool {
		out, _, code := cli(t, addr, "events", "count", "--token", token)
		last = strings.TrimSpace(out)
		return code == 0 && last == fmt.Sprint(want)
	}, 30*time.Second, 100*time.Millisecond, "events count stayed at %s, want %d", &last, want)
}

func writeMarker(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "marker.jsonl")
	require.NoError(t, os.WriteFile(p, []byte(`{"type":"track","event":"Marker","userId":"m","messageId":"marker-1"}`+"\n"), 0o600))
	return p
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return string(b)
}
