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
	"time"

	"golang.org/x/sync/errgroup"

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
}

// Validate reports the first invalid field by name.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return fmt.Errorf("http_addr: %w", err)
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

	cfg     Config
	httpLis net.Listener
	closers []func(context.Context) error
}

// Start opens everything in order; on error it closes what it opened.
// The admin API is registered on every process.
func Start(ctx context.Context, cfg Config, name, version string, logw io.Writer) (b *Base, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b = &Base{cfg: cfg}
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
		if !b.Bus.NC.IsConnected() {
			http.Error(w, "nats not connected", http.StatusServiceUnavailable)
			return
		}
		if err := b.Store.Exec(r.Context(), "SELECT 1"); err != nil {
			http.Error(w, "clickhouse: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	return b, nil
}

// HTTPAddr is the address the HTTP server listens on.
func (b *Base) HTTPAddr() string { return b.httpLis.Addr().String() }

// Serve runs the servers and the given runners (consumers) until ctx is
// cancelled or one fails, then shuts down in order: gRPC health goes
// NOT_SERVING and servers stop, consumers drain, then NATS drains, the
// store closes and telemetry flushes.
func (b *Base) Serve(ctx context.Context, runners ...func(context.Context) error) error {
	defer b.close(ctx)
	httpSrv := HTTPServer(b.Mux)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return b.GRPC.Serve(gctx) })
	g.Go(func() error {
		if err := httpSrv.Serve(b.httpLis); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), b.cfg.GRPC.ShutdownTimeout)
		defer cancel()
		return httpSrv.Shutdown(sctx)
	})
	for _, run := range runners {
		g.Go(func() error { return run(gctx) })
	}
	return g.Wait()
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
	for i := len(b.closers) - 1; i >= 0; i-- {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		if err := b.closers[i](sctx); err != nil && b.Log != nil {
			b.Log.WarnContext(ctx, "shutdown step", "error", err)
		}
		cancel()
	}
	b.closers = nil
}
