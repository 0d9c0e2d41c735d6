// Package app wires Stickpoint's embedded mode: one process with an
// embedded NATS server, the embedded ClickHouse engine, the admin API and
// each service's wiring as it lands. It imports service wiring packages;
// it never copies service code.
package app

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/grpcserver"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/telemetry"
	ingest "github.com/stickpoint/stickpoint/services/ingest/app"
)

// Config is the embedded mode's configuration. Keys and their environment
// variables (STICKPOINT_<KEY>) are listed by `stickpoint dev --help-config`.
type Config struct {
	// DataDir holds everything that must survive a restart. NATS and
	// ClickHouse folders default to subfolders of it.
	DataDir string `json:"data_dir"`
	// HTTPAddr serves /healthz, /readyz and /metrics (and, with ingest,
	// the Segment-compatible API).
	HTTPAddr string `json:"http_addr"`
	// DemoTenant is created on first start, with a write key and a token.
	DemoTenant string `json:"demo_tenant"`

	GRPC       grpcserver.Config `json:"grpc"`
	NATS       natsjs.Config     `json:"nats"`
	ClickHouse chstore.Config    `json:"clickhouse"`
	Telemetry  telemetry.Config  `json:"telemetry"`
	Ingest     ingest.Config     `json:"ingest"`
}

// DefaultConfig keeps data in ./.stickpoint and listens on loopback only.
func DefaultConfig() Config {
	cfg := Config{
		DataDir:    ".stickpoint",
		HTTPAddr:   "127.0.0.1:8080",
		DemoTenant: "demo",
		GRPC:       grpcserver.DefaultConfig(),
		NATS:       natsjs.DefaultConfig(),
		ClickHouse: chstore.DefaultConfig(),
		Telemetry:  telemetry.DefaultConfig(),
		Ingest:     ingest.DefaultConfig(),
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
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return fmt.Errorf("http_addr: %w", err)
	}
	if c.DemoTenant != "" {
		if err := validateTenant(c.DemoTenant); err != nil {
			return fmt.Errorf("demo_tenant: %w", err)
		}
	}
	for _, v := range []interface{ Validate() error }{c.GRPC, c.NATS, c.ClickHouse, c.Telemetry, c.Ingest} {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	return nil
}
