// Package faults runs the services as separate processes (distributed
// mode) and restarts them under load: RELIABILITY.md's R10.
package faults

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	alerting "github.com/stickpoint/stickpoint/services/alerting/app"
	"github.com/stickpoint/stickpoint/services/alerting/receiver"
	"github.com/stickpoint/stickpoint/services/stickpoint/app"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

const tenant = "rolling"

// TestRollingRestartUnderLoad is R10: ingest, milestone tracking, health
// scoring and alerting each run as their own process against a real
// nats-server and clickhouse-server; while events flow and customers ask
// to cancel, each service is restarted in turn. Every acknowledged
// request to cancel reaches the webhook as exactly one alert, and every
// acknowledged event is stored once.
func TestRollingRestartUnderLoad(t *testing.T) {
	natsProc, natsURL := testutil.NATSServerProcess(t)
	_ = natsProc
	ch := testutil.StoreConfig(t, chstore.EngineServer)
	store, err := chstore.Open(t.Context(), ch)
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	_, err = app.Migrate(t.Context(), store, testutil.Logger(t)) // what `stickpoint migrate` does
	require.NoError(t, err)
	ncfg := natsjs.DefaultConfig()
	ncfg.URL, ncfg.StoreDir = natsURL, ""
	bus, err := natsjs.Connect(t.Context(), ncfg, "rolling-test", testutil.Logger(t))
	require.NoError(t, err)
	t.Cleanup(bus.Close)
	require.NoError(t, bus.EnsureStreams(t.Context()))
	reg, err := tenancy.Open(t.Context(), bus, testutil.Logger(t))
	require.NoError(t, err)
	t.Cleanup(reg.Close)
	res, err := reg.CreateTenant(t.Context(), tenant, "")
	require.NoError(t, err)
	writeKey := res.WriteKey.Key

	// The webhook, and the tenant's alerting configuration, as `stickpoint
	// alerting put` stores it.
	var mu sync.Mutex
	alerted := map[string]map[string]bool{} // account -> delivery ids
	hook := &receiver.Webhook{Secret: "whsec_rolling_1", OnReceive: func(r receiver.Received) {
		var p struct {
			Alert struct {
				Account struct{ ID string } `json:"account"`
			} `json:"alert"`
		}
		if json.Unmarshal(r.Body, &p) == nil {
			mu.Lock()
			if alerted[p.Alert.Account.ID] == nil {
				alerted[p.Alert.Account.ID] = map[string]bool{}
			}
			alerted[p.Alert.Account.ID][r.DeliveryID] = true
			mu.Unlock()
		}
	}}
	srv, hookAddr, err := receiver.Listen("127.0.0.1:0", hook)
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	configs, err := alerting.OpenConfigs(t.Context(), bus)
	require.NoError(t, err)
	_, _, err = configs.Put(t.Context(), tenant, []byte(fmt.Sprintf(`channels:
  - {id: hook, type: webhook, url: "http://%s/hook", secret: whsec_rolling_1, timeout: 2s}
rules:
  - {kind: cancellation_requested, severity: critical, channels: [hook]}
`, hookAddr)))
	require.NoError(t, err)

	// The four services.
	service := func(name string, sets ...string) *testutil.Process {
		ports, err := testutil.FreePorts(2)
		require.NoError(t, err)
		args := []string{
			"--set", fmt.Sprintf("http_addr=127.0.0.1:%d", ports[0]),
			"--set", fmt.Sprintf("grpc.addr=127.0.0.1:%d", ports[1]),
			"--set", "nats.url=" + natsURL,
			"--set", "clickhouse.engine=server",
			"--set", "clickhouse.addr=" + ch.Addr[0],
			"--set", "clickhouse.database=" + ch.Database,
			"--set", "telemetry.log_level=warn",
		}
		for _, kv := range sets {
			args = append(args, "--set", kv)
		}
		bin := testutil.GoBinary(t, "github.com/stickpoint/stickpoint/services/"+name+"/cmd/"+name)
		p := testutil.NewProcess(t, name, bin, args, nil, "ready")
		p.Start()
		return p
	}
	ingestPorts, err := testutil.FreePorts(1)
	require.NoError(t, err)
	ingestURL := fmt.Sprintf("http://127.0.0.1:%d", ingestPorts[0])
	ingest := service("ingest", fmt.Sprintf("http_addr=127.0.0.1:%d", ingestPorts[0]), "ingest.writer.max_wait=50ms", "ingest.writer.ack_wait=6s",
		"ingest.http.rate_per_second=0")
	procs := []*testutil.Process{ingest, service("milestones"), service("health"),
		service("alerting", "alerting.delivery.backoff=200ms", "alerting.delivery.max_backoff=2s", "alerting.sweep_interval=1s")}

	// post sends a body until it is acknowledged, as SDKs do (bounded).
	client := &http.Client{Timeout: 5 * time.Second}
	post := func(path, body string) bool {
		for range 300 {
			req, _ := http.NewRequest(http.MethodPost, ingestURL+path, strings.NewReader(body))
			req.SetBasicAuth(writeKey, "")
			resp, err := client.Do(req)
			if err == nil {
				ok := resp.StatusCode == http.StatusOK
				_ = resp.Body.Close()
				if ok {
					return true
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		return false
	}

	// Load: batches of usage across 100 accounts, and a request to cancel
	// from a new account every 150 ms, until the restarts are done.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ackedMu sync.Mutex
	var ackedEvents, ackedProbes []string
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var calls, ids []string
			for n := range 100 {
				id := fmt.Sprintf("load-%d-%d", i, n)
				ids = append(ids, id)
				calls = append(calls, fmt.Sprintf(`{"type":"track","event":"Report Built","userId":"u%d","messageId":%q,"context":{"groupId":"acct-%d"}}`, n, id, n))
			}
			if post("/v1/batch", `{"batch":[`+strings.Join(calls, ",")+`]}`) {
				ackedMu.Lock()
				ackedEvents = append(ackedEvents, ids...)
				ackedMu.Unlock()
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(150 * time.Millisecond):
			}
			account := fmt.Sprintf("leaving-%d", i)
			if post("/v1/track", fmt.Sprintf(`{"userId":"u1","event":"Cancellation Requested","messageId":"cancel-%d","context":{"groupId":%q}}`, i, account)) {
				ackedMu.Lock()
				ackedProbes = append(ackedProbes, account)
				ackedMu.Unlock()
			}
		}
	})

	time.Sleep(3 * time.Second)
	for _, p := range procs { // a rolling restart: each in turn, gracefully
		p.Signal(syscall.SIGTERM)
		if !p.WaitExit(30 * time.Second) {
			p.Kill()
		}
		time.Sleep(time.Second) // down a while, under load
		p.Start()
		time.Sleep(2 * time.Second)
	}
	close(stop)
	wg.Wait()

	ackedMu.Lock()
	probes := append([]string(nil), ackedProbes...)
	events := len(ackedEvents)
	ackedMu.Unlock()
	require.Greater(t, len(probes), 50, "too few requests to cancel were acknowledged")
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range probes {
			if len(alerted[a]) == 0 {
				return false
			}
		}
		return true
	}, 90*time.Second, 200*time.Millisecond, "not every acknowledged request to cancel was alerted")
	time.Sleep(3 * time.Second) // anything late would be a duplicate
	mu.Lock()
	defer mu.Unlock()
	for _, a := range probes {
		require.Len(t, alerted[a], 1, "account %s: alerts %v", a, alerted[a])
	}
	require.Len(t, alerted, len(probes), "alerts for accounts that never asked")
	_, rejected := hook.Counts()
	require.Zero(t, rejected)

	// Every acknowledged event is stored, once.
	var stored uint64
	require.Eventually(t, func() bool {
		r, err := store.Query(t.Context(), "SELECT uniqExact(message_id) FROM events WHERE tenant_id = ? AND name = 'Report Built'", tenant)
		if err != nil || !r.Next() {
			return false
		}
		return r.Scan(&stored) == nil && stored == uint64(events)
	}, 60*time.Second, 200*time.Millisecond, "stored %d of %d acknowledged events", stored, events)
	t.Logf("%d events and %d requests to cancel acknowledged across the restarts; each request alerted once", events, len(probes))
}
