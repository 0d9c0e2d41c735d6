package faults

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	"github.com/stickpoint/stickpoint/services/ingest/app"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

const tenant = "faulty"

// cluster is a distributed-mode ingest: a nats-server process, a
// clickhouse-server process, and ingest processes.
type cluster struct {
	t        *testing.T
	nats     *testutil.Process
	natsURL  string
	ch       chstore.Config
	chServer *testutil.ClickHouseProcess // set when the test owns its server (withOwnClickHouse)
	store    chstore.Store
	bus      *natsjs.Bus
	reg      *tenancy.Registry
	writeKey string
	bin      string
	sets     []string // --set key=value for every ingest process

	// pace, if set, is how long each sending worker waits between requests.
	pace time.Duration
	// refused counts the non-200 answers send got (each then retried).
	refused atomic.Int64
}

type clusterOption func(*clusterSetup)

type clusterSetup struct {
	ownClickHouse bool
	nats          func(*natsjs.Config)
	sets          []string
}

// withOwnClickHouse gives the test a clickhouse-server of its own, which
// it may kill (the others share one per test binary).
func withOwnClickHouse() clusterOption { return func(s *clusterSetup) { s.ownClickHouse = true } }

// withSet passes --set key=value to every ingest process.
func withSet(kv ...string) clusterOption {
	return func(s *clusterSetup) { s.sets = append(s.sets, kv...) }
}

// withStreamBytes bounds the EVENTS stream, for the test and every process.
func withStreamBytes(n int64) clusterOption {
	return func(s *clusterSetup) {
		s.nats = func(c *natsjs.Config) { c.EventsMaxBytes = n }
		s.sets = append(s.sets, fmt.Sprintf("nats.events_max_bytes=%d", n))
	}
}

func newCluster(t *testing.T, opts ...clusterOption) *cluster {
	t.Helper()
	var setup clusterSetup
	for _, o := range opts {
		o(&setup)
	}
	natsProc, natsURL := testutil.NATSServerProcess(t)
	ch := testutil.StoreConfig(t, chstore.EngineServer)
	var chServer *testutil.ClickHouseProcess
	if setup.ownClickHouse {
		chServer = testutil.NewClickHouseProcess(t)
		ch.Addr = []string{chServer.Addr}
	}
	store, err := chstore.Open(t.Context(), ch)
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	_, err = chstore.Migrate(t.Context(), store, app.Component, app.Migrations) // what `stickpoint migrate` does
	require.NoError(t, err)

	ncfg := natsjs.DefaultConfig()
	ncfg.URL, ncfg.StoreDir = natsURL, ""
	if setup.nats != nil {
		setup.nats(&ncfg)
	}
	bus, err := natsjs.Connect(t.Context(), ncfg, "fault-test", testutil.Logger(t))
	require.NoError(t, err)
	t.Cleanup(bus.Close)
	require.NoError(t, bus.EnsureStreams(t.Context()))
	reg, err := tenancy.Open(t.Context(), bus, testutil.Logger(t))
	require.NoError(t, err)
	t.Cleanup(reg.Close)
	res, err := reg.CreateTenant(t.Context(), tenant, "")
	require.NoError(t, err)
	return &cluster{t: t, nats: natsProc, natsURL: natsURL, ch: ch, chServer: chServer, store: store, bus: bus, reg: reg,
		writeKey: res.WriteKey.Key, sets: setup.sets,
		// With the failpoints tag: R5 crashes the writer at a chosen point.
		bin: testutil.GoBinary(t, "github.com/stickpoint/stickpoint/services/ingest/cmd/ingest", "-tags", "failpoints")}
}

// ingest describes an ingest process; writer says whether it runs the writer.
func (c *cluster) ingest(name string, writer bool, env ...string) (*testutil.Process, string) {
	ports, err := testutil.FreePorts(2)
	require.NoError(c.t, err)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	args := []string{
		"--set", "http_addr=" + httpAddr,
		"--set", fmt.Sprintf("grpc.addr=127.0.0.1:%d", ports[1]),
		"--set", "nats.url=" + c.natsURL,
		"--set", "clickhouse.engine=server",
		"--set", "clickhouse.addr=" + c.ch.Addr[0],
		"--set", "clickhouse.database=" + c.ch.Database,
		"--set", fmt.Sprintf("ingest.writer.enabled=%t", writer),
		"--set", "ingest.writer.max_wait=50ms",
		"--set", "ingest.writer.max_deliver=3",
		"--set", "ingest.writer.ack_wait=6s", // a killed writer's batches and partitions come back quickly; a batch gets 3 s
		"--set", "ingest.http.rate_per_second=0",
		"--set", "telemetry.log_level=warn",
	}
	for _, kv := range c.sets {
		args = append(args, "--set", kv)
	}
	return testutil.NewProcess(c.t, name, c.bin, args, env, "ready"), "http://" + httpAddr
}

// send posts requests batches of perRequest events with messageIds
// "<prefix>-<request>-<n>", workers at a time, retrying each request with
// the same body until it gets a 200, as SDKs do. It returns the acked ids.
func (c *cluster) send(url, prefix string, requests, perRequest, workers int) []string {
	var mu sync.Mutex
	var acked []string
	jobs := make(chan int)
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				ids := make([]string, perRequest)
				calls := make([]string, perRequest)
				for n := range perRequest {
					ids[n] = fmt.Sprintf("%s-%d-%d", prefix, i, n)
					calls[n] = fmt.Sprintf(`{"type":"track","event":"Load","userId":"u%d","messageId":%q,"properties":{"n":%d}}`, n%50, ids[n], n)
				}
				body := `{"batch":[` + strings.Join(calls, ",") + `]}`
				if c.pace > 0 {
					time.Sleep(c.pace)
				}
				ok := false
				for attempt := 0; attempt < 300 && !ok; attempt++ { // bounded: about a minute
					req, _ := http.NewRequest(http.MethodPost, url+"/v1/batch", strings.NewReader(body))
					req.SetBasicAuth(c.writeKey, "")
					resp, err := client.Do(req)
					if err == nil {
						ok = resp.StatusCode == http.StatusOK
						_ = resp.Body.Close()
					}
					if !ok {
						c.refused.Add(1)
						time.Sleep(200 * time.Millisecond)
					}
				}
				if !ok {
					c.t.Errorf("request %d never acknowledged", i)
					continue
				}
				mu.Lock()
				acked = append(acked, ids...)
				mu.Unlock()
			}
		}()
	}
	for i := range requests {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return acked
}

// verify is RELIABILITY.md's pass criteria: lost 0 (every acked messageId
// is stored), duplicates visible to queries 0, unexpected rows 0.
func (c *cluster) verify(acked []string) {
	t := c.t
	t.Helper()
	ctx := t.Context()
	want := map[string]bool{}
	for _, id := range acked {
		want[id] = true
	}
	distinct := func() uint64 {
		r, err := c.store.Query(ctx, "SELECT uniqExact(message_id) FROM events WHERE tenant_id = ?", tenant)
		require.NoError(t, err)
		require.True(t, r.Next())
		var n uint64
		require.NoError(t, r.Scan(&n))
		return n
	}
	require.Eventually(t, func() bool { return distinct() >= uint64(len(want)) }, 90*time.Second, 100*time.Millisecond,
		"stored %d of %d acknowledged events", distinct(), len(want))

	r, err := c.store.Query(ctx, "SELECT DISTINCT message_id FROM events WHERE tenant_id = ?", tenant)
	require.NoError(t, err)
	stored := map[string]bool{}
	for r.Next() {
		var id string
		require.NoError(t, r.Scan(&id))
		stored[id] = true
	}
	lost, unexpected := 0, 0
	for id := range want {
		if !stored[id] {
			lost++
		}
	}
	for id := range stored {
		if !want[id] {
			unexpected++
		}
	}
	require.NoError(t, c.store.Exec(ctx, "OPTIMIZE TABLE events FINAL"))
	r, err = c.store.Query(ctx, "SELECT count() FROM events FINAL WHERE tenant_id = ?", tenant)
	require.NoError(t, err)
	require.True(t, r.Next())
	var rows uint64
	require.NoError(t, r.Scan(&rows))
	t.Logf("acked %d, stored %d distinct, lost %d, unexpected %d, rows after merge %d", len(want), len(stored), lost, unexpected, rows)
	require.Zero(t, lost, "lost")
	require.Zero(t, unexpected, "unexpected rows")
	require.Equal(t, uint64(len(want)), rows, "duplicates visible")
}

// killRepeatedly SIGKILLs p times times, each after up has passed, and
// starts it again after down. The channel closes when it is done.
func killRepeatedly(p *testutil.Process, times int, up, down time.Duration) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range times {
			time.Sleep(up)
			p.Kill()
			time.Sleep(down)
			p.Start()
		}
	}()
	return done
}

// R1: kill -9 the writer repeatedly during a large load. Two writer
// replicas share the durable consumer; one of them keeps dying.
func TestR1WriterKilledRepeatedly(t *testing.T) {
	c := newCluster(t)
	api, url := c.ingest("api", false)
	api.Start()
	steady, _ := c.ingest("writer-steady", true)
	steady.Start()
	writer, _ := c.ingest("writer", true)
	writer.Start()

	done := killRepeatedly(writer, 5, 600*time.Millisecond, 200*time.Millisecond)
	acked := c.send(url, "r1", 300, 100, 4)
	<-done
	c.verify(acked)
}

// R2: kill -9 ingest's API during load; clients retry with the same messageIds.
func TestR2APIKilledDuringLoad(t *testing.T) {
	c := newCluster(t)
	api, url := c.ingest("api", false)
	api.Start()
	writer, _ := c.ingest("writer", true)
	writer.Start()

	done := killRepeatedly(api, 4, 500*time.Millisecond, 300*time.Millisecond)
	acked := c.send(url, "r2", 300, 50, 4)
	<-done
	c.verify(acked)
}

// R5: the writer's insert succeeds but it dies before the ack.
func TestR5InsertSucceededAckLost(t *testing.T) {
	c := newCluster(t)
	api, url := c.ingest("api", false)
	api.Start()
	crashing, _ := c.ingest("writer-crashing", true, "STICKPOINT_FAILPOINT=writer-exit-after-insert:2")
	crashing.Start()
	acked := c.send(url, "r5", 60, 100, 2)
	require.True(t, crashing.WaitExit(60*time.Second), "the failpoint ends the writer after its second insert")

	writer, _ := c.ingest("writer", true)
	writer.Start() // the unacked batch is redelivered and inserted again
	c.verify(acked)
}

// R6: a poison message that always fails goes to dead letter after N
// deliveries; the rest flows.
func TestR6PoisonGoesToDeadLetter(t *testing.T) {
	c := newCluster(t)
	api, url := c.ingest("api", false)
	api.Start()
	writer, _ := c.ingest("writer", true)
	writer.Start()

	_, err := c.bus.JS.Publish(t.Context(), natsjs.EventSubject(tenant, "track"), []byte("this is not an event"), jetstream.WithMsgID("poison-1"))
	require.NoError(t, err)
	acked := c.send(url, "r6", 50, 100, 2)
	c.verify(acked)

	dl, err := c.bus.JS.Stream(t.Context(), natsjs.DeadLetterStream)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := dl.Info(context.Background())
		return err == nil && info.State.Msgs == 1
	}, 60*time.Second, 100*time.Millisecond)
	msg, err := dl.GetLastMsgForSubject(t.Context(), natsjs.DeadLetterSubject(natsjs.EventsStream, app.WriterDurable(natsjs.EventPartition(tenant, natsjs.DefaultConfig().EventPartitions))))
	require.NoError(t, err)
	require.Equal(t, "this is not an event", string(msg.Data))
	require.Equal(t, "3", msg.Header.Get(natsjs.HeaderDeliveries))
}

// distinct counts the tenant's distinct stored messageIds.
func (c *cluster) distinct() uint64 {
	r, err := c.store.Query(c.t.Context(), "SELECT uniqExact(message_id) FROM events WHERE tenant_id = ?", tenant)
	require.NoError(c.t, err)
	require.True(c.t, r.Next())
	var n uint64
	require.NoError(c.t, r.Scan(&n))
	return n
}

// waitStored waits until n distinct events of the tenant are stored.
func (c *cluster) waitStored(n int) {
	c.t.Helper()
	require.Eventually(c.t, func() bool { return c.distinct() >= uint64(n) }, 60*time.Second, 100*time.Millisecond,
		"stored %d of %d events", c.distinct(), n)
}

func (c *cluster) requireNothingDeadLettered() {
	c.t.Helper()
	dl, err := c.bus.JS.Stream(c.t.Context(), natsjs.DeadLetterStream)
	require.NoError(c.t, err)
	info, err := dl.Info(c.t.Context())
	require.NoError(c.t, err)
	require.Zero(c.t, info.State.Msgs, "nothing is dead-lettered")
}

// retries is what an ingest process's writer retried, by reason, from its
// /metrics.
func (c *cluster) retries(url string) string {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "stickpoint_consumer_messages_total") && strings.Contains(line, `outcome="retried"`) {
			out = append(out, line)
		}
	}
	if len(out) == 0 {
		return "no retries"
	}
	return strings.Join(out, "; ")
}
