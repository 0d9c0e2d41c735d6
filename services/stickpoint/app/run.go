package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/grpcserver"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/telemetry"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	adminv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/admin/v1"
	authv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/auth/v1"
	ingest "github.com/stickpoint/stickpoint/services/ingest/app"
)

// Version is set at build time with -ldflags "-X ...app.Version=...".
var Version = "dev"

// Component is a part of Stickpoint that owns ClickHouse tables.
type Component struct {
	Name       string
	Migrations fs.FS
}

// Components lists every component's migrations, applied in this order by
// `stickpoint migrate` and at embedded start. Each service adds its own.
func Components() []Component {
	return []Component{{Name: ingest.Component, Migrations: ingest.Migrations}}
}

// Migrate applies every component's pending migrations.
func Migrate(ctx context.Context, store chstore.Store, log *slog.Logger) (int, error) {
	total := 0
	for _, c := range Components() {
		applied, err := chstore.Migrate(ctx, store, c.Name, c.Migrations)
		for _, m := range applied {
			log.InfoContext(ctx, "migration applied", "component", c.Name, "version", m.Version, "name", m.Name)
		}
		total += len(applied)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func validateTenant(id string) error { return tenancy.ValidateTenantID(id) }

// Run runs the embedded mode until ctx is cancelled. Lines meant for people
// (write key, token, ready) go to out; logs go to logw.
func Run(ctx context.Context, cfg Config, out, logw io.Writer) error {
	started := time.Now()
	cfg.Resolve()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer unlock()

	tel, err := telemetry.Setup(ctx, cfg.Telemetry, "stickpoint", Version, logw)
	if err != nil {
		return err
	}
	log := tel.Logger
	// Shutdown runs in reverse order of start, each step bounded.
	var closers []func(context.Context) error
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
			if err := closers[i](sctx); err != nil {
				log.WarnContext(ctx, "shutdown step", "error", err)
			}
			cancel()
		}
	}()
	closers = append(closers, tel.Shutdown)

	store, err := chstore.Open(ctx, cfg.ClickHouse)
	if err != nil {
		return err
	}
	closers = append(closers, func(context.Context) error { return store.Close() })
	log.InfoContext(ctx, "clickhouse open", "engine", store.Engine(), "version", store.Version().String())
	if _, err := Migrate(ctx, store, log); err != nil {
		return err
	}

	bus, err := natsjs.Connect(ctx, cfg.NATS, "stickpoint-dev", log)
	if err != nil {
		return err
	}
	closers = append(closers, bus.Drain)
	if err := bus.EnsureStreams(ctx); err != nil {
		return err
	}

	reg, err := tenancy.Open(ctx, bus, log)
	if err != nil {
		return err
	}
	closers = append(closers, func(context.Context) error { reg.Close(); return nil })

	writeKey := ""
	if cfg.DemoTenant != "" {
		key, secret, err := reg.EnsureTenant(ctx, cfg.DemoTenant, "Demo",
			authv1.Scope_SCOPE_READ, authv1.Scope_SCOPE_WRITE, authv1.Scope_SCOPE_ADMIN, authv1.Scope_SCOPE_OPERATOR)
		if err != nil {
			return fmt.Errorf("demo tenant: %w", err)
		}
		fmt.Fprintf(out, "tenant: %s\n", cfg.DemoTenant)
		fmt.Fprintf(out, "write key: %s\n", key.Key)
		writeKey = key.Key
		if secret != "" {
			fmt.Fprintf(out, "api token: %s\n", secret)
			fmt.Fprintln(out, "  (shown once: it is stored hashed. Save it, e.g. export STICKPOINT_TOKEN=<token>)")
		}
	}

	grpcSrv, err := grpcserver.New(cfg.GRPC, reg, log)
	if err != nil {
		return err
	}
	grpcSrv.Register(&adminv1.AdminService_ServiceDesc, tenancy.NewAdminService(reg))
	ing, err := ingest.New(cfg.Ingest, bus, store, reg, log)
	if err != nil {
		return err
	}

	httpLis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http_addr: listen on %s: %w", cfg.HTTPAddr, err)
	}
	mux := http.NewServeMux()
	ing.Register(mux, grpcSrv)
	mux.Handle("GET /metrics", tel.MetricsHandler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if bus.NC.IsConnected() {
			_, _ = io.WriteString(w, "ready\n")
			return
		}
		http.Error(w, "nats not connected", http.StatusServiceUnavailable)
	})
	httpSrv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return grpcSrv.Serve(gctx) })
	g.Go(func() error { return ing.Run(gctx) })
	g.Go(func() error {
		if err := httpSrv.Serve(httpLis); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), cfg.GRPC.ShutdownTimeout)
		defer cancel()
		return httpSrv.Shutdown(sctx)
	})

	fmt.Fprintf(out, "grpc: %s\n", grpcSrv.Addr())
	fmt.Fprintf(out, "http: http://%s\n", httpLis.Addr())
	fmt.Fprintf(out, "data: %s\n", cfg.DataDir)
	if writeKey != "" {
		fmt.Fprintf(out, "try: curl -u %s: http://%s/v1/track -H 'Content-Type: application/json' -d '{\"userId\":\"u1\",\"event\":\"Report Built\",\"context\":{\"groupId\":\"acme-co\"}}'\n",
			writeKey, httpLis.Addr())
	}
	fmt.Fprintf(out, "started in %s\n", time.Since(started).Round(time.Millisecond))
	fmt.Fprintln(out, "ready")
	log.InfoContext(ctx, "ready", "grpc_addr", grpcSrv.Addr(), "http_addr", httpLis.Addr().String(), "startup_ms", time.Since(started).Milliseconds())

	err = g.Wait()
	fmt.Fprintln(out, "shutting down")
	return err
}

// lockDataDir takes an exclusive lock on the data folder, so a second
// process can't open the same NATS and ClickHouse files.
func lockDataDir(dir string) (func(), error) {
	path := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid, _ := io.ReadAll(f)
		_ = f.Close()
		return nil, fmt.Errorf("data_dir: %s is in use by another stickpoint process (pid %s); stop it or pass --data-dir", dir, strings.TrimSpace(string(pid)))
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); _ = f.Close() }, nil
}
