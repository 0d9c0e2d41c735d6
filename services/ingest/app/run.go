package app

import (
	"context"
	"io"

	"github.com/stickpoint/stickpoint/pkg/service"
)

// Version is set at build time with -ldflags "-X ...app.Version=...".
var Version = "dev"

// ServiceConfig is the ingest binary's configuration (distributed mode).
type ServiceConfig struct {
	service.Config
	Ingest Config `json:"ingest"`
}

// DefaultServiceConfig expects NATS on 127.0.0.1:4222 and a ClickHouse
// server on 127.0.0.1:9000, and serves the HTTP API on all interfaces.
func DefaultServiceConfig() ServiceConfig {
	return ServiceConfig{Config: service.DistributedConfig(":8080", ":9090"), Ingest: DefaultConfig()}
}

// Run runs the ingest binary: ingest [--config FILE] [--set key=value]...
// Migrations are not run here: `stickpoint migrate` runs them once, so
// replicas don't race.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return service.RunBinary(ctx, service.Binary[ServiceConfig]{
		Name: "stickpoint-ingest", Version: Version, Defaults: DefaultServiceConfig(),
		Base:     func(c *ServiceConfig) service.Config { return c.Config },
		Validate: func(c *ServiceConfig) error { return c.Ingest.Validate() },
		Build: func(ctx context.Context, c *ServiceConfig, base *service.Base) (service.Service, error) {
			svc, err := New(c.Ingest, base.Bus, base.Store, base.Registry, base.Log)
			if err != nil {
				return nil, err
			}
			svc.Register(base.Mux, base.GRPC)
			return svc, nil
		},
	}, args, stdout, stderr)
}
