package app

import (
	"context"
	"io"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/grpcserver"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/service"
	"github.com/stickpoint/stickpoint/pkg/telemetry"
)

// Version is set at build time with -ldflags "-X ...app.Version=...".
var Version = "dev"

// ServiceConfig is the alerting binary's configuration (distributed mode).
type ServiceConfig struct {
	service.Config
	Alerting Config `json:"alerting"`
}

// DefaultServiceConfig expects NATS on 127.0.0.1:4222 and a ClickHouse
// server on 127.0.0.1:9000, and serves gRPC on :9093.
func DefaultServiceConfig() ServiceConfig {
	cfg := ServiceConfig{
		Config: service.Config{
			HTTPAddr:   ":8083",
			GRPC:       grpcserver.DefaultConfig(),
			NATS:       natsjs.DefaultConfig(),
			ClickHouse: chstore.DefaultConfig(),
			Telemetry:  telemetry.DefaultConfig(),
			Shutdown:   service.DefaultShutdownConfig(),
		},
		Alerting: DefaultConfig(),
	}
	cfg.GRPC.Addr = ":9093"
	cfg.NATS.URL = "nats://127.0.0.1:4222"
	cfg.NATS.StoreDir = ""
	cfg.ClickHouse.Engine = chstore.EngineServer
	return cfg
}

// Run runs the alerting binary: alerting [--config FILE] [--set key=value]...
// Migrations are not run here: `stickpoint migrate` runs them once, so
// replicas don't race.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return service.RunBinary(ctx, service.Binary[ServiceConfig]{
		Name: "stickpoint-alerting", Version: Version, Defaults: DefaultServiceConfig(),
		Base:     func(c *ServiceConfig) service.Config { return c.Config },
		Validate: func(c *ServiceConfig) error { return c.Alerting.Validate() },
		Build: func(ctx context.Context, c *ServiceConfig, base *service.Base) (service.Service, error) {
			svc, err := New(ctx, c.Alerting, base.Bus, base.Log)
			if err != nil {
				return nil, err
			}
			svc.Register(base.GRPC)
			return svc, nil
		},
	}, args, stdout, stderr)
}
