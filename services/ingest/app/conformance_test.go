package app_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/testutil"
)

// sdkClients is where `make test-deps` installs the real SDKs.
var sdkClients = filepath.Join("..", "testdata", "sdk-clients")

func driveSDK(t *testing.T, sdk, host, writeKey, prefix string) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is required for the SDK conformance tests: %v", err)
	}
	for _, pkg := range []string{"@segment/analytics-node", "@rudderstack/rudder-sdk-node"} {
		if _, err := os.Stat(filepath.Join(sdkClients, "node_modules", pkg)); err != nil {
			t.Fatalf("%s is not installed: run `make test-deps`", pkg)
		}
	}
	cmd := exec.CommandContext(t.Context(), "node", "drive.mjs", sdk, host, writeKey, prefix)
	cmd.Dir = sdkClients
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	var res struct{ Errors []string }
	require.NoError(t, json.Unmarshal(out[len(out)-len(lastLine(out)):], &res), "%s", out)
	require.Empty(t, res.Errors, "the SDK reported delivery errors")
}

func lastLine(b []byte) []byte {
	s := string(b)
	for len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			return []byte(s[i+1:] + "\n")
		}
	}
	return []byte(s + "\n")
}

// TestRealSDKs points unchanged Segment and RudderStack Node SDKs (the
// latter gzips its batches) at the HTTP API, twice with the same
// messageIds, and checks every call is stored once, under the key's tenant,
// with its account and a skew-corrected timestamp.
func TestRealSDKs(t *testing.T) {
	for _, engine := range testutil.Engines {
		for _, sdk := range []string{"segment", "rudderstack"} {
			t.Run(engine+"/"+sdk, func(t *testing.T) {
				f := newFixture(t, engine, nil)
				driveSDK(t, sdk, f.url, f.keyA, sdk)
				driveSDK(t, sdk, f.url, f.keyA, sdk) // a re-send with the same messageIds
				f.waitStored(t, "tenant-a", 5)
				require.NoError(t, f.db.Exec(t.Context(), "OPTIMIZE TABLE events FINAL"))
				distinct, rows := f.stored(t, "tenant-a")
				require.Equal(t, uint64(5), distinct)
				require.Equal(t, uint64(5), rows, "no duplicate visible")
				other, _ := f.stored(t, "tenant-b")
				require.Zero(t, other)

				r, err := f.db.Query(t.Context(), `SELECT message_id, type, name, user_id, anonymous_id, account_id, timestamp, properties
					FROM events FINAL WHERE tenant_id = 'tenant-a' ORDER BY message_id`)
				require.NoError(t, err)
				type row struct {
					id, typ, name, user, anon, account, props string
					ts                                        time.Time
				}
				got := map[string]row{}
				for r.Next() {
					var x row
					require.NoError(t, r.Scan(&x.id, &x.typ, &x.name, &x.user, &x.anon, &x.account, &x.ts, &x.props))
					got[x.id] = x
				}
				require.Equal(t, "identify", got[sdk+"-1"].typ)
				require.Equal(t, "acct-conf", got[sdk+"-2"].account)
				track := got[sdk+"-3"]
				require.Equal(t, "Report Built", track.name)
				require.Equal(t, "acct-conf", track.account, "resolved from the user's group call")
				require.Contains(t, track.props, "9007199254740991")
				past := got[sdk+"-4"]
				require.Equal(t, "anon-1", past.anon)
				require.WithinDuration(t, time.Now().Add(-time.Hour), past.ts, 2*time.Minute, "the event's own time, corrected for skew")
				require.Equal(t, "Pricing", got[sdk+"-5"].name)
			})
		}
	}
}
