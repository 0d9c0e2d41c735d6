package service_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/grpcserver"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/service"
	"github.com/stickpoint/stickpoint/pkg/telemetry"
	"github.com/stickpoint/stickpoint/pkg/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

func start(t *testing.T) *service.Base {
	t.Helper()
	b, err := service.Start(t.Context(), testConfig(t), "test", "dev", io.Discard)
	require.NoError(t, err)
	return b
}

func testConfig(t *testing.T) service.Config {
	cfg := service.Config{
		HTTPAddr:   "127.0.0.1:0",
		GRPC:       grpcserver.DefaultConfig(),
		NATS:       natsjs.DefaultConfig(),
		ClickHouse: testutil.StoreConfig(t, chstore.EngineEmbedded),
		Telemetry:  telemetry.DefaultConfig(),
		Shutdown:   service.DefaultShutdownConfig(),
	}
	cfg.GRPC.Addr = "127.0.0.1:0"
	cfg.NATS.StoreDir = t.TempDir()
	cfg.Telemetry.LogLevel = "warn"
	return cfg
}

// A step of Start that fails returns its error, after closing what the
// steps before it opened: the same folders open again at once. (Start
// used to nil its result before its cleanup ran, and panicked instead.)
func TestStartFailsCleanly(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	cfg := testConfig(t)
	cfg.HTTPAddr = taken.Addr().String()
	b, err := service.Start(t.Context(), cfg, "test", "dev", io.Discard)
	require.ErrorContains(t, err, "http_addr")
	require.Nil(t, b)

	cfg.HTTPAddr = "127.0.0.1:0"
	b, err = service.Start(t.Context(), cfg, "test", "dev", io.Discard)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.NoError(t, b.Serve(ctx, &probe{t: t, base: b}))
}

// probe is a service that records, at each step of the shutdown, what the
// outside world could still see.
type probe struct {
	t      *testing.T
	base   *service.Base
	mu     sync.Mutex
	steps  []string
	fail   error // Run returns it at once when set
	notYet error // Ready's answer
}

func (p *probe) record(step string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.steps = append(p.steps, step)
}

func (p *probe) get(path string) string {
	resp, err := http.Get("http://" + p.base.HTTPAddr() + path)
	if err != nil {
		return "no answer"
	}
	defer resp.Body.Close()
	return fmt.Sprint(resp.StatusCode)
}

func (p *probe) health() string {
	conn, err := grpc.NewClient(p.base.GRPC.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return "no answer"
	}
	return resp.GetStatus().String()
}

func (p *probe) Run(ctx context.Context) error {
	if p.fail != nil {
		return p.fail
	}
	<-ctx.Done()
	p.record(fmt.Sprintf("drain: readyz %s, healthz %s, grpc health %s", p.get("/readyz"), p.get("/healthz"), p.health()))
	return nil
}

func (p *probe) Flush(context.Context) error {
	p.record(fmt.Sprintf("flush: healthz %s, grpc health %s", p.get("/healthz"), p.health()))
	return nil
}

func (p *probe) Ready(context.Context) error { return p.notYet }

// CONVENTIONS.md's order: health NOT_SERVING, consumers drain (while the
// servers still answer), servers stop, final flush, then the closes.
func TestShutdownRunsInOrder(t *testing.T) {
	b := start(t)
	p := &probe{t: t, base: b}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- b.Serve(ctx, p) }()
	require.Eventually(t, func() bool { return p.get("/readyz") == "200" }, 10*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	require.Equal(t, []string{
		"drain: readyz 503, healthz 200, grpc health NOT_SERVING",
		"flush: healthz no answer, grpc health no answer",
	}, p.steps)
}

// A service that fails stops the process with its error; one that is not
// ready fails /readyz with its reason.
func TestServiceFailureAndReadiness(t *testing.T) {
	b := start(t)
	p := &probe{t: t, base: b, notYet: errors.New("writer: consumer lost")}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Serve(ctx, p) }()
	require.Eventually(t, func() bool { return p.get("/healthz") == "200" }, 10*time.Second, 10*time.Millisecond)
	resp, err := http.Get("http://" + b.HTTPAddr() + "/readyz")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Contains(t, string(body), "writer: consumer lost")
	cancel()
	require.NoError(t, <-done)

	b = start(t)
	p = &probe{t: t, base: b, fail: errors.New("consumer gone for good")}
	require.ErrorContains(t, b.Serve(t.Context(), p), "consumer gone for good")
}
