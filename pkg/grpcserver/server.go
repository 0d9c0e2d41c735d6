// Package grpcserver is the gRPC server every Stickpoint service runs: health
// checking, reflection, OpenTelemetry, panic recovery, and bearer-token
// authentication that takes the tenant from the token, never the request.
package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// Config configures the listener and limits.
type Config struct {
	// Addr is host:port to listen on.
	Addr string `json:"addr"`
	// MaxRecvBytes bounds one request message; larger ones get
	// ResourceExhausted.
	MaxRecvBytes int `json:"max_recv_bytes"`
	// ShutdownTimeout bounds the graceful stop; calls still running after
	// it are cancelled.
	ShutdownTimeout time.Duration `json:"shutdown_timeout"`
}

// DefaultConfig listens on 127.0.0.1:9090.
func DefaultConfig() Config {
	return Config{Addr: "127.0.0.1:9090", MaxRecvBytes: 4 << 20, ShutdownTimeout: 10 * time.Second}
}

// Validate reports the first invalid field by name.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("grpc.addr: %w", err)
	}
	if c.MaxRecvBytes < 1024 {
		return fmt.Errorf("grpc.max_recv_bytes: %d is below 1024", c.MaxRecvBytes)
	}
	if c.ShutdownTimeout <= 0 {
		return errors.New("grpc.shutdown_timeout: must be positive")
	}
	return nil
}

// Server is a gRPC server with Stickpoint's interceptors.
type Server struct {
	cfg    Config
	grpc   *grpc.Server
	health *health.Server
	lis    net.Listener
	log    *slog.Logger
}

// New listens on cfg.Addr and builds the server. Register services, then Serve.
func New(cfg Config, auth Authenticator, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("grpc.addr: listen on %s: %w", cfg.Addr, err)
	}
	a := newAuthorizer(auth)
	s := &Server{cfg: cfg, lis: lis, log: log, health: health.NewServer()}
	s.grpc = grpc.NewServer(
		grpc.StatsHandler(otelgrpc.NewServerHandler()),
		grpc.MaxRecvMsgSize(cfg.MaxRecvBytes),
		grpc.ChainUnaryInterceptor(s.recoverUnary, s.logUnary, a.unary),
		grpc.ChainStreamInterceptor(s.recoverStream, a.stream),
	)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	return s, nil
}

// Register adds a service implementation.
func (s *Server) Register(desc *grpc.ServiceDesc, impl any) {
	s.grpc.RegisterService(desc, impl)
	s.health.SetServingStatus(desc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
}

// Addr is the address the server listens on (useful with port 0).
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Serve serves until ctx is cancelled, then reports NOT_SERVING and stops
// gracefully, forcing the stop after the shutdown timeout. Processes
// that order their shutdown use Listen, NotServing and Stop instead.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.Listen() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.NotServing()
	s.Stop(context.WithoutCancel(ctx))
	return <-errc
}

// Listen serves every registered service, reported SERVING, until Stop.
// It returns nil after Stop.
func (s *Server) Listen() error {
	for name := range s.grpc.GetServiceInfo() {
		s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	if err := s.grpc.Serve(s.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("grpc serve: %w", err)
	}
	return nil
}

// NotServing reports every service NOT_SERVING, so load balancers move
// away before the server stops.
func (s *Server) NotServing() { s.health.Shutdown() }

// Stop stops gracefully: no new calls, running ones finish. After the
// shutdown timeout it cancels the calls still running.
func (s *Server) Stop(ctx context.Context) {
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(s.cfg.ShutdownTimeout):
		s.log.WarnContext(ctx, "grpc graceful stop timed out; cancelling calls", "timeout", s.cfg.ShutdownTimeout)
		s.grpc.Stop()
		<-stopped
	}
}

func (s *Server) recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.ErrorContext(ctx, "panic in grpc handler", "method", info.FullMethod, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "internal error")
		}
	}()
	return h(ctx, req)
}

func (s *Server) recoverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.ErrorContext(ss.Context(), "panic in grpc stream handler", "method", info.FullMethod, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "internal error")
		}
	}()
	return h(srv, ss)
}

func (s *Server) logUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	code := status.Code(err)
	level := slog.LevelDebug
	if code == codes.Internal || code == codes.Unknown || code == codes.DataLoss {
		level = slog.LevelError
	}
	attrs := []any{"method", info.FullMethod, "code", code.String(), "duration_ms", time.Since(start).Milliseconds()}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		attrs = append(attrs, "trace_id", sc.TraceID().String())
	}
	if err != nil && level == slog.LevelError {
		attrs = append(attrs, "error", err)
	}
	s.log.Log(ctx, level, "grpc call", attrs...)
	return resp, err
}
