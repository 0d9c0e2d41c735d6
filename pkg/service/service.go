// Package service is the process skeleton every Stickpoint binary shares:
// telemetry, the ClickHouse store, the bus, the tenancy registry, the gRPC
// and HTTP servers, and an ordered shutdown. A binary starts a Base, adds
// its own parts, and calls Serve.
package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/grpcserver"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/telemetry"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	adminv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/admin/v1"
)

// Config is what every process needs.
type Config struct {
	// HTTPAddr serves /healthz, /readyz, /metrics and the service's routes.
	HTTPAddr   string            `json:"http_addr"`
	GRPC       grpcserver.Config `json:"grpc"`
	NATS       natsjs.Config     `json:"nats"`
	ClickHouse chstore.Config    `json:"clickhouse"`
	Telemetry  telemetry.Config  `json:"telemetry"`
	Shutdown   ShutdownConfig    `json:"shutdown"`
}

// DistributedConfig is a service binary's default configuration in
// distributed mode: its HTTP and gRPC addresses, NATS on
// nats://127.0.0.1:4222 and a ClickHouse server on 127.0.0.1:9000.
func DistributedConfig(httpAddr, grpcAddr string) Config {
	cfg := Config{
		HTTPAddr:   httpAddr,
		GRPC:       grpcserver.DefaultConfig(),
		NATS:       natsjs.DefaultConfig(),
		ClickHouse: chstore.DefaultConfig(),
		Telemetry:  telemetry.DefaultConfig(),
		Shutdown:   DefaultShutdownConfig(),
	}
	cfg.GRPC.Addr = grpcAddr
	cfg.NATS.URL = "nats://127.0.0.1:4222"
	cfg.NATS.StoreDir = ""
	cfg.ClickHouse.Engine = chstore.EngineServer
	return cfg
}

// ShutdownConfig bounds each step of the shutdown (see Serve). gRPC's
// graceful stop is bounded by grpc.shutdown_timeout.
type ShutdownConfig struct {
	// Drain bounds the consumers finishing what they fetched.
	Drain time.Duration `json:"drain"`
	// HTTP bounds the HTTP server's graceful stop.
	HTTP time.Duration `json:"http"`
	// Flush bounds the services' final flushes.
	Flush time.Duration `json:"flush"`
	// Close bounds each of: NATS draining, ClickHouse closing, telemetry
	// flushing.
	Close time.Duration `json:"close"`
}

// DefaultShutdownConfig gives consumers 15 s, HTTP 10 s, and the flushes
// and closes 5 s each.
func DefaultShutdownConfig() ShutdownConfig {
	return ShutdownConfig{Drain: 15 * time.Second, HTTP: 10 * time.Second, Flush: 5 * time.Second, Close: 5 * time.Second}
}

// Validate reports the first invalid field by name.
func (c ShutdownConfig) Validate() error {
	for name, d := range map[string]time.Duration{"drain": c.Drain, "http": c.HTTP, "flush": c.Flush, "close": c.Close} {
		if d <= 0 {
			return fmt.Errorf("shutdown.%s: must be positive", name)
		}
	}
	return nil
}

// Validate reports the first invalid field by name.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return fmt.Errorf("http_addr: %w", err)
	}
	if err := c.Shutdown.Validate(); err != nil {
		return err
	}
	for _, v := range []interface{ Validate() error }{c.GRPC, c.NATS, c.ClickHouse, c.Telemetry} {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// Base is a started process: its parts are ready to use, and its servers
// start with Serve.
type Base struct {
	Log      *slog.Logger
	Store    chstore.Store
	Bus      *natsjs.Bus
	Registry *tenancy.Registry
	GRPC     *grpcserver.Server
	Mux      *http.ServeMux

	cfg      Config
	httpLis  net.Listener
	closers  []func(context.Context) error
	stopping atomic.Bool
	ready    []func(context.Context) error
}

// Service is a service's part of a process, which Serve runs between the
// servers' start and an ordered shutdown.
type Service interface {
	// Run runs the service's consumers and loops until ctx ends, then
	// drains them. An error before ctx ends stops the process.
	Run(ctx context.Context) error
	// Flush writes what the request handlers left to write (counters),
	// after the servers stopped.
	Flush(ctx context.Context) error
	// Ready reports why the service can't do its work, or nil (/readyz).
	Ready(ctx context.Context) error
}

// Start opens everything in order; on error it closes what it opened.
// The admin API is registered on every process.
func Start(ctx context.Context, cfg Config, name, version string, logw io.Writer) (_ *Base, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// b is not the named result: a `return nil, err` must not nil it
	// before the deferred close runs.
	b := &Base{cfg: cfg}
	defer func() {
		if err != nil {
			b.close(ctx)
		}
	}()
	tel, err := telemetry.Setup(ctx, cfg.Telemetry, name, version, logw)
	if err != nil {
		return nil, err
	}
	b.Log = tel.Logger
	b.closers = append(b.closers, tel.Shutdown)

	if b.Store, err = chstore.Open(ctx, cfg.ClickHouse); err != nil {
		return nil, err
	}
	b.closers = append(b.closers, func(context.Context) error { return b.Store.Close() })
	b.Log.InfoContext(ctx, "clickhouse open", "engine", b.Store.Engine(), "version", b.Store.Version().String())

	if b.Bus, err = natsjs.Connect(ctx, cfg.NATS, name, b.Log); err != nil {
		return nil, err
	}
	b.closers = append(b.closers, b.Bus.Drain)
	if err = b.Bus.EnsureStreams(ctx); err != nil {
		return nil, err
	}
	if b.Registry, err = tenancy.Open(ctx, b.Bus, b.Log); err != nil {
		return nil, err
	}
	b.closers = append(b.closers, func(context.Context) error { b.Registry.Close(); return nil })

	if b.GRPC, err = grpcserver.New(cfg.GRPC, b.Registry, b.Log); err != nil {
		return nil, err
	}
	b.GRPC.Register(&adminv1.AdminService_ServiceDesc, tenancy.NewAdminService(b.Registry))
	if b.httpLis, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("http_addr: listen on %s: %w", cfg.HTTPAddr, err)
	}
	b.Mux = http.NewServeMux()
	b.Mux.Handle("GET /metrics", tel.MetricsHandler())
	b.Mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	b.Mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := b.Ready(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	return b, nil
}

// Ready is nil when the process can take work: not shutting down, NATS
// connected, ClickHouse answering, and every service ready.
func (b *Base) Ready(ctx context.Context) error {
	if b.stopping.Load() {
		return errors.New("shutting down")
	}
	if !b.Bus.NC.IsConnected() {
		return errors.New("nats not connected")
	}
	if err := b.Store.Exec(ctx, "SELECT 1"); err != nil {
		return fmt.Errorf("clickhouse: %w", err)
	}
	for _, check := range b.ready {
		if err := check(ctx); err != nil {
			return err
		}
	}
	return nil
}

// HTTPAddr is the address the HTTP server listens on.
func (b *Base) HTTPAddr() string { return b.httpLis.Addr().String() }

// Serve runs the servers and the services until ctx is cancelled or one of
// them fails, then shuts down in this order, each step bounded on its own:
//
//  1. health goes NOT_SERVING (gRPC health, and /readyz answers 503);
//  2. the services' consumers drain (shutdown.drain);
//  3. gRPC and HTTP stop gracefully (grpc.shutdown_timeout, shutdown.http);
//  4. the services flush what their handlers left (shutdown.flush);
//  5. NATS drains, 6. ClickHouse closes, 7. telemetry flushes
//     (shutdown.close each).
//
// Consumers stop before the servers so that what the API still accepts
// waits in JetStream for the next start, rather than reach a consumer
// that is going away. It returns the first failure, if any.
func (b *Base) Serve(ctx context.Context, services ...Service) error {
	defer b.close(ctx)
	for _, svc := range services {
		b.ready = append(b.ready, svc.Ready)
	}
	httpSrv := HTTPServer(b.Mux)
	failed := make(chan error, 2+len(services))
	serversDone := make(chan struct{}, 2)
	go func() {
		if err := b.GRPC.Listen(); err != nil {
			failed <- err
		}
		serversDone <- struct{}{}
	}()
	go func() {
		if err := httpSrv.Serve(b.httpLis); !errors.Is(err, http.ErrServerClosed) {
			failed <- fmt.Errorf("http serve: %w", err)
		}
		serversDone <- struct{}{}
	}()
	runCtx, stopRunners := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRunners()
	var runners sync.WaitGroup
	for _, svc := range services {
		runners.Go(func() {
			if err := svc.Run(runCtx); err != nil && runCtx.Err() == nil {
				failed <- err
			}
		})
	}

	var first error
	select {
	case <-ctx.Done():
	case first = <-failed:
		b.Log.ErrorContext(ctx, "stopping after a failure", "error", first)
	}
	sctx := context.WithoutCancel(ctx)
	b.stopping.Store(true)
	b.GRPC.NotServing()

	stopRunners()
	if !waitFor(&runners, b.cfg.Shutdown.Drain) {
		b.Log.WarnContext(sctx, "consumers did not drain in time; what they held is redelivered", "timeout", b.cfg.Shutdown.Drain)
	}

	var servers sync.WaitGroup
	servers.Go(func() { b.GRPC.Stop(sctx) })
	servers.Go(func() {
		hctx, cancel := context.WithTimeout(sctx, b.cfg.Shutdown.HTTP)
		defer cancel()
		if err := httpSrv.Shutdown(hctx); err != nil {
			b.Log.WarnContext(sctx, "http graceful stop timed out; closing connections", "timeout", b.cfg.Shutdown.HTTP)
			_ = httpSrv.Close()
		}
	})
	servers.Wait()
	<-serversDone
	<-serversDone

	for _, svc := range services {
		fctx, cancel := context.WithTimeout(sctx, b.cfg.Shutdown.Flush)
		if err := svc.Flush(fctx); err != nil {
			b.Log.WarnContext(sctx, "final flush", "error", err)
		}
		cancel()
	}
	return first
}

// waitFor waits for wg up to d and reports whether it finished.
func waitFor(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// Close shuts down what Start opened, for a process that fails before
// Serve. Safe to call more than once.
func (b *Base) Close(ctx context.Context) { b.close(ctx) }

// HTTPServer is the HTTP server every process runs h with. Its timeouts
// bound slow and idle clients: headers within 5 s, the whole request within
// 30 s, idle keep-alive connections closed after 2 minutes.
func HTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

// close runs the closers in reverse order, each bounded.
func (b *Base) close(ctx context.Context) {
	bound := b.cfg.Shutdown.Close
	if bound <= 0 {
		bound = DefaultShutdownConfig().Close
	}
	for i := len(b.closers) - 1; i >= 0; i-- {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bound)
		if err := b.closers[i](sctx); err != nil && b.Log != nil {
			b.Log.WarnContext(ctx, "shutdown step", "error", err)
		}
		cancel()
	}
	b.closers = nil
}
