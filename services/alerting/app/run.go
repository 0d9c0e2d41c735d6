package app

import (
	"context"
	"io"

	"github.com/stickpoint/stickpoint/pkg/service"
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
	return ServiceConfig{Config: service.DistributedConfig(":8083", ":9093"), Alerting: DefaultConfig()}
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
