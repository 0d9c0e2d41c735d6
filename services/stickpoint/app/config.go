// Package app wires Stickpoint's embedded mode: one process with an
// embedded NATS server, the embedded ClickHouse engine, the admin API and
// each service's wiring. It imports service wiring packages; it never
// copies service code.
package app

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/grpcserver"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/service"
	"github.com/stickpoint/stickpoint/pkg/telemetry"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	alerting "github.com/stickpoint/stickpoint/services/alerting/app"
	health "github.com/stickpoint/stickpoint/services/health/app"
	ingest "github.com/stickpoint/stickpoint/services/ingest/app"
	milestones "github.com/stickpoint/stickpoint/services/milestones/app"
)

// Config is the embedded mode's configuration. Keys and their environment
// variables (STICKPOINT_<KEY>) are listed by `stickpoint dev --help-config`.
type Config struct {
	service.Config
	// DataDir holds everything that must survive a restart. NATS and
	// ClickHouse folders default to subfolders of it.
	DataDir string `json:"data_dir"`
	// DemoTenant is created on first start, with a write key and a token.
	DemoTenant string            `json:"demo_tenant"`
	Ingest     ingest.Config     `json:"ingest"`
	Milestones milestones.Config `json:"milestones"`
	Health     health.Config     `json:"health"`
	Alerting   alerting.Config   `json:"alerting"`
}

// DefaultConfig keeps data in ./.stickpoint and listens on loopback only.
func DefaultConfig() Config {
	cfg := Config{
		Config: service.Config{
			HTTPAddr:   "127.0.0.1:8080",
			GRPC:       grpcserver.DefaultConfig(),
			NATS:       natsjs.DefaultConfig(),
			ClickHouse: chstore.DefaultConfig(),
			Telemetry:  telemetry.DefaultConfig(),
			Shutdown:   service.DefaultShutdownConfig(),
		},
		DataDir:    ".stickpoint",
		DemoTenant: "demo",
		Ingest:     ingest.DefaultConfig(),
		Milestones: milestones.DefaultConfig(),
		Health:     health.DefaultConfig(),
		Alerting:   alerting.DefaultConfig(),
	}
	cfg.NATS.StoreDir = ""      // derived from data_dir
	cfg.ClickHouse.DataDir = "" // derived from data_dir
	cfg.Telemetry.LogFormat = "text"
	return cfg
}

// Resolve fills the folders derived from DataDir.
func (c *Config) Resolve() {
	if c.NATS.URL == "" && c.NATS.StoreDir == "" {
		c.NATS.StoreDir = filepath.Join(c.DataDir, "nats")
	}
	if c.ClickHouse.Engine == chstore.EngineEmbedded && c.ClickHouse.DataDir == "" {
		c.ClickHouse.DataDir = filepath.Join(c.DataDir, "clickhouse")
	}
}

// Validate reports the first invalid field by name.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("data_dir: required")
	}
	if c.DemoTenant != "" {
		if err := tenancy.ValidateTenantID(c.DemoTenant); err != nil {
			return fmt.Errorf("demo_tenant: %w", err)
		}
	}
	if err := c.Config.Validate(); err != nil {
		return err
	}
	if err := c.Ingest.Validate(); err != nil {
		return err
	}
	if err := c.Milestones.Validate(); err != nil {
		return err
	}
	if err := c.Health.Validate(); err != nil {
		return err
	}
	return c.Alerting.Validate()
}
