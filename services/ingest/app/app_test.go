package app_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/grpcserver"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/service"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	eventsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/events/v1"
	ingestv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/ingest/v1"
	"github.com/stickpoint/stickpoint/services/ingest/app"
	"github.com/stickpoint/stickpoint/services/ingest/loadgen"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

type fixture struct {
	url        string
	grpcAddr   string
	tokenA     string // read, write, admin on tenant-a
	db         chstore.Store
	bus        *natsjs.Bus
	reg        *tenancy.Registry
	keyA, keyB string
	// writerService is the service startWriter runs, if any.
	writerService *app.Service
}

func newFixture(t testing.TB, engine string, mutate func(*app.Config), natsOptions ...func(*natsjs.Config)) *fixture {
	t.Helper()
	db := testutil.Store(t, engine)
	_, err := chstore.Migrate(t.Context(), db, app.Component, app.Migrations)
	require.NoError(t, err)
	bus := testutil.NATS(t, natsOptions...)
	log := testutil.Logger(t)
	reg, err := tenancy.Open(t.Context(), bus, log)
	require.NoError(t, err)
	t.Cleanup(reg.Close)
	a, err := reg.CreateTenant(t.Context(), "tenant-a", "")
	require.NoError(t, err)
	b, err := reg.CreateTenant(t.Context(), "tenant-b", "")
	require.NoError(t, err)

	cfg := app.DefaultConfig()
	cfg.Writer.MaxWait = 20 * time.Millisecond
	cfg.StatsFlushInterval = 50 * time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	svc, err := app.New(cfg, bus, db, reg, log)
	require.NoError(t, err)
	grpcCfg := grpcserver.DefaultConfig()
	grpcCfg.Addr = "127.0.0.1:0"
	srv, err := grpcserver.New(grpcCfg, reg, log)
	require.NoError(t, err)
	mux := http.NewServeMux()
	svc.Register(mux, srv)
	hs := httptest.NewUnstartedServer(mux)
	hs.Config = service.HTTPServer(mux) // the production timeouts and limits
	hs.Start()
	t.Cleanup(hs.Close)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = svc.Run(ctx) }()
	go func() { defer wg.Done(); _ = srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return &fixture{url: hs.URL, grpcAddr: srv.Addr(), tokenA: a.Secret, db: db, bus: bus, reg: reg, keyA: a.WriteKey.Key, keyB: b.WriteKey.Key}
}

func (f *fixture) post(t *testing.T, path, key, body string, headers ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, f.url+path, strings.NewReader(body))
	require.NoError(t, err)
	if key != "" {
		req.SetBasicAuth(key, "")
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// stored returns (distinct messageIds, rows visible with FINAL) for tenant.
func (f *fixture) stored(t *testing.T, tenant string) (uint64, uint64) {
	t.Helper()
	r, err := f.db.Query(t.Context(), "SELECT uniqExact(message_id), count() FROM events FINAL WHERE tenant_id = ?", tenant)
	require.NoError(t, err)
	require.True(t, r.Next())
	var distinct, rows uint64
	require.NoError(t, r.Scan(&distinct, &rows))
	return distinct, rows
}

// rawRows counts tenant's rows in events as they are: no FINAL, no dedup.
func (f *fixture) rawRows(t testing.TB, tenant string) uint64 {
	t.Helper()
	r, err := f.db.Query(t.Context(), "SELECT count() FROM events WHERE tenant_id = ?", tenant)
	require.NoError(t, err)
	require.True(t, r.Next())
	var n uint64
	require.NoError(t, r.Scan(&n))
	return n
}

func (f *fixture) waitStored(t *testing.T, tenant string, want uint64) {
	t.Helper()
	require.Eventually(t, func() bool { d, _ := f.stored(t, tenant); return d >= want }, 20*time.Second, 20*time.Millisecond)
	d, _ := f.stored(t, tenant)
	require.Equal(t, want, d)
}

func batchBody(ids ...string) string {
	var calls []string
	for _, id := range ids {
		calls = append(calls, fmt.Sprintf(`{"type":"track","event":"Report Built","userId":"u1","messageId":%q,"timestamp":"2026-11-22T11:00:00Z","context":{"groupId":"acct-1"}}`, id))
	}
	return `{"batch":[` + strings.Join(calls, ",") + `],"sentAt":"2026-11-22T11:00:01Z"}`
}

func TestIngestExactlyOnceAndIsolated(t *testing.T) {
	for _, engine := range testutil.Engines {
		t.Run(engine, func(t *testing.T) {
			f := newFixture(t, engine, nil)
			resp, body := f.post(t, "/v1/batch", f.keyA, batchBody("m1", "m2", "m3"))
			require.Equal(t, 200, resp.StatusCode, body)
			require.JSONEq(t, `{"success":true}`, body)
			// The same request again (a client retry), and a different batch repeating m2.
			resp, _ = f.post(t, "/v1/batch", f.keyA, batchBody("m1", "m2", "m3"))
			require.Equal(t, 200, resp.StatusCode)
			resp, _ = f.post(t, "/v1/batch", f.keyA, batchBody("m2", "m4"))
			require.Equal(t, 200, resp.StatusCode)
			// Tenant B reuses A's messageIds: they are B's own events.
			resp, _ = f.post(t, "/v1/batch", f.keyB, batchBody("m1", "m2"))
			require.Equal(t, 200, resp.StatusCode)
			// A body naming another tenant changes nothing: the key decides.
			resp, _ = f.post(t, "/v1/track", f.keyA, `{"event":"e","userId":"u","messageId":"x1","tenant":"tenant-b","tenant_id":"tenant-b"}`)
			require.Equal(t, 200, resp.StatusCode)

			f.waitStored(t, "tenant-a", 5)
			f.waitStored(t, "tenant-b", 2)
			// The writer never inserted the re-sent m2: the raw row count,
			// without FINAL or a merge, is the distinct count.
			require.Equal(t, uint64(5), f.rawRows(t, "tenant-a"), "no duplicate row, merged or not")
			require.Equal(t, uint64(2), f.rawRows(t, "tenant-b"))

			var ts time.Time
			var account string
			r, err := f.db.Query(t.Context(), "SELECT timestamp, account_id FROM events WHERE tenant_id = ? AND message_id = 'm1' LIMIT 1", "tenant-a")
			require.NoError(t, err)
			require.True(t, r.Next())
			require.NoError(t, r.Scan(&ts, &account))
			require.Equal(t, "acct-1", account)
			require.WithinDuration(t, time.Now(), ts, 10*time.Second, "skew-corrected to the receive time minus 1 s")
		})
	}
}

func TestStatusCodes(t *testing.T) {
	for _, engine := range testutil.Engines {
		t.Run(engine, func(t *testing.T) { testStatusCodes(t, engine) })
	}
}

func testStatusCodes(t *testing.T, engine string) {
	// A bucket of 10 events that does not refill within the test.
	f := newFixture(t, engine, func(c *app.Config) { c.HTTP.RatePerSecond, c.HTTP.RateBurst = 0.001, 10 })
	ok := `{"event":"e","userId":"u"}`

	resp, body := f.post(t, "/v1/track", "", ok)
	require.Equal(t, 401, resp.StatusCode, body)
	require.Contains(t, body, "no write key")
	resp, body = f.post(t, "/v1/track", "wk_nope", ok)
	require.Equal(t, 401, resp.StatusCode, body)
	resp, body = f.post(t, "/v1/track", "", `{"event":"e","userId":"u","writeKey":"`+f.keyA+`"}`)
	require.Equal(t, 200, resp.StatusCode, "writeKey in the body, as browser SDKs send it: %s", body)

	resp, body = f.post(t, "/v1/track", f.keyA, `{"event":`)
	require.Equal(t, 400, resp.StatusCode)
	require.Contains(t, body, "malformed JSON")
	resp, body = f.post(t, "/v1/track", f.keyA, `{"event":"e"}`)
	require.Equal(t, 400, resp.StatusCode)
	require.Contains(t, body, `"field":"userId"`)

	big := `{"event":"e","userId":"u","properties":{"s":"` + strings.Repeat("x", 600<<10) + `"}}`
	resp, body = f.post(t, "/v1/track", f.keyA, big)
	require.Equal(t, 413, resp.StatusCode, body)
	require.Contains(t, body, "limit of 512000 bytes")

	// A gzip bomb: 50 MB of zeros in a small body, stopped at the limit.
	var bomb bytes.Buffer
	zw := gzip.NewWriter(&bomb)
	_, _ = zw.Write([]byte(`{"event":"e","userId":"u","properties":{"s":"`))
	_, _ = zw.Write(bytes.Repeat([]byte("0"), 50<<20))
	_ = zw.Close()
	require.Less(t, bomb.Len(), 200<<10)
	resp, body = f.post(t, "/v1/track", f.keyA, bomb.String(), "Content-Encoding", "gzip")
	require.Equal(t, 413, resp.StatusCode, body)

	var gz bytes.Buffer
	zw = gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(`{"event":"gzipped","userId":"u","messageId":"gz1"}`))
	_ = zw.Close()
	resp, body = f.post(t, "/v1/track", f.keyA, gz.String(), "Content-Encoding", "gzip")
	require.Equal(t, 200, resp.StatusCode, body)
	resp, body = f.post(t, "/v1/track", f.keyA, "not gzip", "Content-Encoding", "gzip")
	require.Equal(t, 400, resp.StatusCode, body)

	// Rate limit: the bucket holds 10 events; 2 were spent above.
	resp, body = f.post(t, "/v1/batch", f.keyA, batchBody("r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"))
	require.Equal(t, 429, resp.StatusCode, body)
	require.NotEmpty(t, resp.Header.Get("Retry-After"))
	resp, _ = f.post(t, "/v1/track", f.keyB, ok)
	require.Equal(t, 200, resp.StatusCode, "another tenant is not limited by the first's flood")

	// A revoked key stops at once.
	_, err := f.reg.RevokeWriteKey(t.Context(), "tenant-b", f.keyB)
	require.NoError(t, err)
	resp, _ = f.post(t, "/v1/track", f.keyB, ok)
	require.Equal(t, 401, resp.StatusCode)

	// CORS preflight from a browser.
	req, _ := http.NewRequest(http.MethodOptions, f.url+"/v1/batch", nil)
	req.Header.Set("Origin", "https://app.example")
	pre, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	pre.Body.Close()
	require.Equal(t, 204, pre.StatusCode)
	require.Equal(t, "https://app.example", pre.Header.Get("Access-Control-Allow-Origin"))
	require.Empty(t, pre.Header.Get("Access-Control-Allow-Credentials"))

	get, err := http.Get(f.url + "/v1/track")
	require.NoError(t, err)
	get.Body.Close()
	require.Equal(t, 405, get.StatusCode)

	// Nothing from the rejected requests was stored; the accepted ones were.
	f.waitStored(t, "tenant-a", 2)

	// And the tenant can see what was refused, and why.
	conn, err := grpc.NewClient(f.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+f.tokenA)
	var stats *eventsv1.StatsResponse
	require.Eventually(t, func() bool {
		stats, err = eventsv1.NewEventsServiceClient(conn).Stats(ctx, &eventsv1.StatsRequest{})
		return err == nil && len(stats.GetRejections()) >= 3
	}, 10*time.Second, 50*time.Millisecond)
	got := map[string]uint64{}
	for _, r := range stats.GetRejections() {
		got[r.GetApi()+"/"+r.GetReason()] = r.GetRequests()
	}
	require.Equal(t, uint64(2), stats.GetAcceptedEvents())
	require.Equal(t, map[string]uint64{"http/invalid_request": 3, "http/request_too_large": 2, "http/rate_limited": 1}, got,
		"401s and the keyless 405 count under no tenant, not tenant-a's")
}

func TestUnavailableWhenJetStreamCannotTakeTheWrite(t *testing.T) {
	// No writer: the stream only fills.
	f := newFixture(t, chstore.EngineEmbedded, func(c *app.Config) { c.HTTP.PublishTimeout, c.Writer.Enabled = 500*time.Millisecond, false })
	// Shrink the stream to one message and refuse new ones.
	s, err := f.bus.JS.Stream(t.Context(), natsjs.EventsStream)
	require.NoError(t, err)
	cfg := s.CachedInfo().Config
	cfg.MaxMsgs, cfg.Discard = 1, jetstream.DiscardNew
	_, err = f.bus.JS.UpdateStream(t.Context(), cfg)
	require.NoError(t, err)
	resp, body := f.post(t, "/v1/track", f.keyA, `{"event":"e","userId":"u","messageId":"fill"}`)
	require.Equal(t, 200, resp.StatusCode, body)
	resp, body = f.post(t, "/v1/track", f.keyA, `{"event":"e","userId":"u","messageId":"over"}`)
	require.Equal(t, 503, resp.StatusCode, body)
	require.NotEmpty(t, resp.Header.Get("Retry-After"))
	require.Contains(t, body, "retry with the same messageIds")
}

// A client that never finishes its headers is cut off, and the server goes
// on serving others.
func TestSlowClientIsCutOff(t *testing.T) {
	f := newFixture(t, chstore.EngineEmbedded, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.url, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("POST /v1/track HTTP/1.1\r\nHost: stickpoint\r\nContent-Type: app"))
	require.NoError(t, err)
	start := time.Now()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(20*time.Second)))
	_, err = io.ReadAll(conn) // returns when the server closes the connection
	require.NoError(t, err)
	require.Less(t, time.Since(start), 10*time.Second, "closed after the 5 s header timeout")

	resp, body := f.post(t, "/v1/track", f.keyA, `{"event":"e","userId":"u"}`)
	require.Equal(t, 200, resp.StatusCode, body)
}

// Nothing a client sends ends up in a response header except the CORS
// origin, which must match the allow-list and which net/http refuses to
// carry with control characters. Hostile values in every other position
// (key, body fields, error paths, query) leave the header set unchanged.
func TestResponseHeadersCarryNoInput(t *testing.T) {
	f := newFixture(t, chstore.EngineEmbedded, func(c *app.Config) { c.HTTP.RatePerSecond, c.HTTP.RateBurst = 0.001, 3 })
	const evil = `\r\nSet-Cookie: injected=1\r\nX-Injected: 1`
	allowed := map[string]bool{"Content-Type": true, "Content-Length": true, "Date": true, "Retry-After": true, "Allow": true, "Vary": true,
		"Access-Control-Allow-Origin": true, "Access-Control-Allow-Methods": true, "Access-Control-Allow-Headers": true, "Access-Control-Max-Age": true}
	check := func(resp *http.Response, what string) {
		t.Helper()
		for name, values := range resp.Header {
			require.True(t, allowed[name], "%s: unexpected response header %q", what, name)
			for _, v := range values {
				require.NotContains(t, strings.ToLower(v), "inject", "%s: header %s", what, name)
			}
		}
		if o := resp.Header.Get("Access-Control-Allow-Origin"); o != "" {
			require.Equal(t, "https://app.example", o, what)
		}
	}
	cases := []struct {
		name, path, key, body string
		status                int
	}{
		{"accepted", "/v1/track", f.keyA, `{"event":"` + evil + `","userId":"` + evil + `","messageId":"` + evil + `","properties":{"` + evil + `":"` + evil + `"}}`, 200},
		{"bad field", "/v1/track", f.keyA, `{"event":"e","userId":"u","timestamp":"` + evil + `"}`, 400},
		{"unknown key", "/v1/track", "wk_" + strings.ReplaceAll(evil, `\r\n`, ""), `{"event":"e","userId":"u"}`, 401},
		{"body key", "/v1/track", "", `{"event":"e","userId":"u","writeKey":"` + evil + `"}`, 401},
		{"malformed", "/v1/batch", f.keyA, `{"batch":[` + evil, 400},
		{"query", "/v1/track?redirect=%0d%0aSet-Cookie:%20injected=1", f.keyA, `{"event":"e","userId":"u"}`, 200},
		{"rate limited", "/v1/batch", f.keyA, batchBody("x1", "x2", "x3", "x4"), 429},
	}
	for _, c := range cases {
		resp, body := f.post(t, c.path, c.key, c.body, "Origin", "https://app.example")
		require.Equal(t, c.status, resp.StatusCode, "%s: %s", c.name, body)
		check(resp, c.name)
	}

	// Control characters in the Origin itself never reach the wire: the
	// server refuses such a request line by line before the handler runs.
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.url, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("OPTIONS /v1/batch HTTP/1.1\r\nHost: stickpoint\r\nOrigin: https://a.example\rSet-Cookie: injected=1\r\n\r\n"))
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	raw, _ := io.ReadAll(conn)
	require.True(t, strings.HasPrefix(string(raw), "HTTP/1.1 400 "), "a bare CR in a header is refused: %q", raw)
	require.NotContains(t, strings.ToLower(string(raw)), "set-cookie")
}

// Under a surge, requests beyond the in-flight byte budget wait unread and
// then get 503 with Retry-After, on HTTP and gRPC alike; a request that
// fits goes through, and room given back serves the next.
func TestOverloadIsRefusedBeforeTheBodyIsRead(t *testing.T) {
	f := newFixture(t, chstore.EngineEmbedded, func(c *app.Config) {
		c.HTTP.MaxRequestBytes, c.HTTP.MaxInflightBytes, c.HTTP.AdmitWait = 64<<10, 64<<10, 100*time.Millisecond
		c.HTTP.TenantInflightShare = 1 // the whole budget, for one tenant here
	})
	// A slow client holds 40 KB of the 64 KB budget: its headers promise
	// them, its body is not finished yet.
	pad := strings.Repeat("p", 20000) // two events under the 32 KB event limit
	slow := `{"batch":[{"type":"track","event":"slow","userId":"u","messageId":"slow-1","properties":{"pad":"` + pad +
		`"}},{"type":"track","event":"slow","userId":"u","messageId":"slow-2","properties":{"pad":"` + pad + `"}}]}`
	require.Greater(t, len(slow), 40000)
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.url, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "POST /v1/batch HTTP/1.1\r\nHost: stickpoint\r\nAuthorization: Basic %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		base64.StdEncoding.EncodeToString([]byte(f.keyA+":")), len(slow), slow[:100])
	require.NoError(t, err)

	// 30 KB more do not fit next to it.
	big := func(id string) string {
		return `{"event":"big","userId":"u","messageId":"` + id + `","properties":{"pad":"` + strings.Repeat("b", 30000) + `"}}`
	}
	var resp *http.Response
	var body string
	n := 0
	require.Eventually(t, func() bool { // until the slow request is admitted
		n++
		resp, body = f.post(t, "/v1/track", f.keyA, big(fmt.Sprintf("big-%d", n)))
		return resp.StatusCode == http.StatusServiceUnavailable
	}, 10*time.Second, 10*time.Millisecond)
	require.Contains(t, body, `"code":"overloaded"`)
	require.Equal(t, "1", resp.Header.Get("Retry-After"))

	// gRPC shares the budget.
	gconn, err := grpc.NewClient(f.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer gconn.Close()
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+f.tokenA)
	_, err = ingestv1.NewIngestServiceClient(gconn).Track(ctx, &ingestv1.TrackRequest{Call: &ingestv1.Call{MessageId: "grpc-big", UserId: "u"},
		Event: "big", PropertiesJson: `{"pad":"` + strings.Repeat("g", 30000) + `"}`})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "at capacity")

	// A small request fits beside the slow one.
	resp, body = f.post(t, "/v1/track", f.keyA, `{"event":"small","userId":"u","messageId":"small-1"}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)

	// The slow client finishes and is served; its room serves the next.
	_, err = io.WriteString(conn, slow[100:])
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	slowResp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	slowBody, _ := io.ReadAll(slowResp.Body)
	require.Equal(t, http.StatusOK, slowResp.StatusCode, "%s", slowBody)
	resp, body = f.post(t, "/v1/track", f.keyA, big("big-after"))
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
}

// The per-tenant rate holds under many concurrent requests: each is charged
// when it is accepted. (Charging at each request's receive time let requests
// that finished out of order earn the same interval's tokens again.)
func TestRateLimitHoldsUnderConcurrency(t *testing.T) {
	const rate, burst = 2000, 2000
	f := newFixture(t, chstore.EngineEmbedded, func(c *app.Config) { c.HTTP.RatePerSecond, c.HTTP.RateBurst = rate, burst })
	res, err := loadgen.Run(t.Context(), loadgen.Options{URL: f.url, WriteKey: f.keyA, Concurrency: 32, Batch: 50, Duration: 2 * time.Second})
	require.NoError(t, err)
	allowed := burst + rate*(res.Elapsed+res.Max).Seconds()
	t.Logf("%s; at most %.0f allowed", res, allowed)
	require.LessOrEqual(t, float64(res.Accepted), allowed)
	require.Greater(t, res.Rejected[http.StatusTooManyRequests], uint64(0), "the load was over the rate")
}

// A writer consumer lost under the service shows in its readiness (so
// /readyz fails) until the runner has declared it again.
func TestWriterLossShowsInReadiness(t *testing.T) {
	f := newFixture(t, chstore.EngineEmbedded, func(c *app.Config) { c.Writer.Enabled = false })
	stop := startWriter(t, f)
	defer stop()
	p := natsjs.EventPartition("tenant-a", f.bus.Config().EventPartitions)
	require.NoError(t, f.bus.JS.DeleteConsumer(t.Context(), natsjs.EventsStream, app.WriterDurable(p)))
	svc := f.writerService
	require.Eventually(t, func() bool { return svc.Ready(t.Context()) != nil }, 15*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return svc.Ready(t.Context()) == nil }, 15*time.Second, 10*time.Millisecond)
	resp, body := f.post(t, "/v1/track", f.keyA, `{"event":"after","userId":"u","messageId":"after-loss"}`)
	require.Equal(t, 200, resp.StatusCode, body)
	f.waitStored(t, "tenant-a", 1)
}

// One bad call in a batch costs only itself: the batch's valid calls are
// stored and acknowledged, the response lists the refused ones, and the
// tenant sees them in its ingest warnings with an example. A batch without
// any valid call is refused whole.
func TestPartialBatch(t *testing.T) {
	for _, engine := range testutil.Engines {
		t.Run(engine, func(t *testing.T) {
			f := newFixture(t, engine, nil)
			good := func(id string) string { return `{"type":"track","event":"ok","userId":"u","messageId":"` + id + `"}` }
			old := `{"type":"track","event":"old","userId":"u","messageId":"old","timestamp":"2001-01-01T00:00:00Z"}`
			noUser := `{"type":"track","event":"anon","messageId":"no-user"}`
			resp, body := f.post(t, "/v1/batch", f.keyA, `{"batch":[`+good("p1")+`,`+old+`,`+good("p2")+`,`+noUser+`,`+good("p3")+`]}`)
			require.Equal(t, 200, resp.StatusCode, body)
			var ok struct {
				Success  bool `json:"success"`
				Rejected []struct {
					Index                int
					Field, Code, Message string
				} `json:"rejected"`
			}
			require.NoError(t, json.Unmarshal([]byte(body), &ok))
			require.True(t, ok.Success)
			require.Len(t, ok.Rejected, 2)
			require.Equal(t, 1, ok.Rejected[0].Index)
			require.Equal(t, "batch[1].timestamp", ok.Rejected[0].Field)
			require.Contains(t, ok.Rejected[0].Message, "history limit")
			require.Equal(t, 3, ok.Rejected[1].Index)
			require.Equal(t, "batch[3].userId", ok.Rejected[1].Field)

			resp, body = f.post(t, "/v1/batch", f.keyA, `{"batch":[`+old+`,`+noUser+`]}`)
			require.Equal(t, 400, resp.StatusCode, body)
			require.Contains(t, body, `"rejected":[`)
			require.Contains(t, body, "none of the 2 calls is valid")

			f.waitStored(t, "tenant-a", 3)
			conn, err := grpc.NewClient(f.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			require.NoError(t, err)
			defer conn.Close()
			client := eventsv1.NewEventsServiceClient(conn)
			ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+f.tokenA)
			var warnings []*eventsv1.Warning
			require.Eventually(t, func() bool {
				resp, err := client.Warnings(ctx, &eventsv1.WarningsRequest{})
				require.NoError(t, err)
				warnings = resp.GetWarnings()
				total := uint64(0)
				for _, w := range warnings {
					total += w.GetCalls()
				}
				return total == 4
			}, 10*time.Second, 20*time.Millisecond)
			require.Len(t, warnings, 2)
			for _, w := range warnings {
				require.Equal(t, "http", w.GetApi())
				require.Equal(t, "invalid_request", w.GetCode())
				require.Equal(t, uint64(2), w.GetCalls())
				require.Contains(t, []string{"timestamp", "userId"}, w.GetField())
				require.NotEmpty(t, w.GetExampleMessage())
				require.Contains(t, w.GetExampleCall(), `"messageId"`)
				require.WithinDuration(t, time.Now(), w.GetLastSeen().AsTime(), time.Minute)
			}
			stats, err := client.Stats(ctx, &eventsv1.StatsRequest{})
			require.NoError(t, err)
			require.Equal(t, uint64(4), stats.GetRejectedCalls())
			require.Equal(t, uint64(3), stats.GetAcceptedEvents())
			require.Equal(t, uint64(3), stats.GetUnattributedEvents(), "u belongs to no account")
		})
	}
}

// Concurrent small requests of a tenant share one JetStream write (group
// commit), and each is answered only once that write is acknowledged.
func TestConcurrentSmallRequestsShareAWrite(t *testing.T) {
	f := newFixture(t, chstore.EngineEmbedded, func(c *app.Config) { c.HTTP.CoalesceWait = 20 * time.Millisecond })
	before := f.streamLastSeq(t)
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			resp, body := f.post(t, "/v1/track", f.keyA, fmt.Sprintf(`{"event":"e","userId":"u","messageId":"c-%d"}`, i))
			require.Equal(t, 200, resp.StatusCode, body)
		})
	}
	wg.Wait()
	f.waitStored(t, "tenant-a", 64)
	messages := f.streamLastSeq(t) - before
	t.Logf("64 requests, %d JetStream messages", messages)
	require.LessOrEqual(t, messages, uint64(32), "requests were coalesced")
}
