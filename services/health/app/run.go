package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/config"
	"github.com/stickpoint/stickpoint/pkg/grpcserver"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/service"
	"github.com/stickpoint/stickpoint/pkg/telemetry"
)

// Version is set at build time with -ldflags "-X ...app.Version=...".
var Version = "dev"

// ServiceConfig is the health binary's configuration (distributed mode).
type ServiceConfig struct {
	service.Config
	Health Config `json:"health"`
}

// DefaultServiceConfig expects NATS on 127.0.0.1:4222 and a ClickHouse
// server on 127.0.0.1:9000, and serves gRPC on :9092.
func DefaultServiceConfig() ServiceConfig {
	cfg := ServiceConfig{
		Config: service.Config{
			HTTPAddr:   ":8082",
			GRPC:       grpcserver.DefaultConfig(),
			NATS:       natsjs.DefaultConfig(),
			ClickHouse: chstore.DefaultConfig(),
			Telemetry:  telemetry.DefaultConfig(),
			Shutdown:   service.DefaultShutdownConfig(),
		},
		Health: DefaultConfig(),
	}
	cfg.GRPC.Addr = ":9092"
	cfg.NATS.URL = "nats://127.0.0.1:4222"
	cfg.NATS.StoreDir = ""
	cfg.ClickHouse.Engine = chstore.EngineServer
	return cfg
}

// Run runs the health binary: health [--config FILE] [--set key=value]...
// Migrations are not run here: `stickpoint migrate` runs them once.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", os.Getenv("STICKPOINT_CONFIG"), "JSON config file")
	var sets []string
	fs.Func("set", "override a config key, key=value (repeatable)", func(v string) error { sets = append(sets, v); return nil })
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	cfg := DefaultServiceConfig()
	if err := config.Load(&cfg, config.Sources{File: *file, EnvPrefix: "STICKPOINT", Env: os.Environ(), Set: sets}); err != nil {
		return err
	}
	if err := cfg.Health.Validate(); err != nil {
		return err
	}
	started := time.Now()
	base, err := service.Start(ctx, cfg.Config, "stickpoint-health", Version, stderr)
	if err != nil {
		return err
	}
	svc, err := New(ctx, cfg.Health, base.Bus, base.Store, base.Registry, base.Log)
	if err != nil {
		base.Close(ctx)
		return err
	}
	svc.Register(base.GRPC)
	fmt.Fprintf(stdout, "grpc: %s\nhttp: http://%s\nstarted in %s\nready\n", base.GRPC.Addr(), base.HTTPAddr(), time.Since(started).Round(time.Millisecond))
	return base.Serve(ctx, svc)
}
