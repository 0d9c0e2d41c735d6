package app_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/services/stickpoint/app"
)

func TestConfig(t *testing.T) {
	cfg := app.DefaultConfig()
	cfg.DataDir = "/data"
	cfg.Resolve()
	require.Equal(t, filepath.Join("/data", "nats"), cfg.NATS.StoreDir)
	require.Equal(t, filepath.Join("/data", "clickhouse"), cfg.ClickHouse.DataDir)
	require.NoError(t, cfg.Validate())

	bad := cfg
	bad.HTTPAddr = "8080"
	require.ErrorContains(t, bad.Validate(), "http_addr")
	bad = cfg
	bad.DemoTenant = "Not Valid"
	require.ErrorContains(t, bad.Validate(), "demo_tenant")
	bad = cfg
	bad.NATS.Replicas = 9
	require.ErrorContains(t, bad.Validate(), "nats.replicas")
	bad = cfg
	bad.Ingest.Writer.MaxBatchBytes = 4096
	require.ErrorContains(t, bad.Validate(), "ingest.writer.max_batch_bytes")
	bad = cfg
	bad.Ingest.HTTP.MaxInflightBytes = 1000
	require.ErrorContains(t, bad.Validate(), "ingest.http.max_inflight_bytes")

	ext := app.DefaultConfig()
	ext.NATS.URL = "nats://127.0.0.1:4222"
	ext.Resolve()
	require.Empty(t, ext.NATS.StoreDir, "no store folder for an external NATS")
}
