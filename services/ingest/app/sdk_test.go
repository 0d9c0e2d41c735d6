package app_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/sdk"
	"github.com/stickpoint/stickpoint/pkg/testutil"
)

// TestGoSDK sends from many goroutines through the Go SDK (gzip, batching)
// and finds every event stored once, the group's account on the tracks.
func TestGoSDK(t *testing.T) {
	for _, engine := range testutil.Engines {
		t.Run(engine, func(t *testing.T) {
			f := newFixture(t, engine, nil)
			client, err := sdk.New(sdk.Config{Endpoint: f.url, WriteKey: f.keyA, BatchSize: 100, FlushInterval: 50 * time.Millisecond,
				OnError: func(err error, n int) { t.Errorf("sdk dropped %d events: %v", n, err) }})
			require.NoError(t, err)
			require.NoError(t, client.Group(sdk.Group{UserID: "sdk-user", GroupID: "sdk-acct", MessageID: "sdk-g"}))
			client.Flush()
			var wg sync.WaitGroup
			for g := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 250 {
						require.NoError(t, client.Track(sdk.Track{UserID: "sdk-user", Event: "Report Built",
							MessageID: fmt.Sprintf("sdk-%d-%d", g, i), Properties: map[string]any{"i": i}}))
					}
				}()
			}
			wg.Wait()
			require.NoError(t, client.Close())
			f.waitStored(t, "tenant-a", 1001)

			r, err := f.db.Query(t.Context(), "SELECT uniqExact(message_id) FROM events WHERE tenant_id = 'tenant-a' AND account_id = 'sdk-acct'")
			require.NoError(t, err)
			require.True(t, r.Next())
			var n uint64
			require.NoError(t, r.Scan(&n))
			require.Equal(t, uint64(1001), n, "tracks carry the account of the user's group call")
		})
	}
}

// A call the server refuses on its own is reported to OnReject, with its
// reason; the rest of its batch is stored and nothing goes to OnError.
func TestGoSDKReportsRefusedCalls(t *testing.T) {
	f := newFixture(t, chstore.EngineEmbedded, nil)
	var mu sync.Mutex
	var refused []sdk.Rejection
	client, err := sdk.New(sdk.Config{Endpoint: f.url, WriteKey: f.keyA, BatchSize: 10, FlushInterval: time.Hour,
		OnError:  func(err error, n int) { t.Errorf("sdk dropped %d events: %v", n, err) },
		OnReject: func(r sdk.Rejection) { mu.Lock(); refused = append(refused, r); mu.Unlock() }})
	require.NoError(t, err)
	require.NoError(t, client.Track(sdk.Track{UserID: "u", Event: "ok", MessageID: "ok-1"}))
	require.NoError(t, client.Raw([]byte(`{"type":"track","event":"old","userId":"u","messageId":"old-1","timestamp":"2001-01-01T00:00:00Z"}`)))
	require.NoError(t, client.Track(sdk.Track{UserID: "u", Event: "ok", MessageID: "ok-2"}))
	require.NoError(t, client.Close())
	require.Len(t, refused, 1)
	require.Contains(t, string(refused[0].Call), `"old-1"`)
	require.Equal(t, "batch[1].timestamp", refused[0].Field)
	require.Contains(t, refused[0].Message, "history limit")
	f.waitStored(t, "tenant-a", 2)

	// A batch of nothing but refused calls: each to OnReject, none to OnError.
	refused = nil
	client, err = sdk.New(sdk.Config{Endpoint: f.url, WriteKey: f.keyA, FlushInterval: time.Hour,
		OnError:  func(err error, n int) { t.Errorf("sdk dropped %d events: %v", n, err) },
		OnReject: func(r sdk.Rejection) { mu.Lock(); refused = append(refused, r); mu.Unlock() }})
	require.NoError(t, err)
	require.NoError(t, client.Raw([]byte(`{"type":"track","event":"old","userId":"u","messageId":"old-2","timestamp":"2001-01-01T00:00:00Z"}`)))
	require.NoError(t, client.Close())
	require.Len(t, refused, 1)
}
