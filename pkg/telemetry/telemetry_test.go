package telemetry_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"

	"github.com/stickpoint/stickpoint/pkg/telemetry"
)

func TestLogsCarryTraceIDAndMetricsAreServed(t *testing.T) {
	var buf bytes.Buffer
	tel, err := telemetry.Setup(t.Context(), telemetry.DefaultConfig(), "test", "v0", &buf)
	require.NoError(t, err)
	defer func() { require.NoError(t, tel.Shutdown(t.Context())) }()

	ctx, span := otel.Tracer("github.com/stickpoint/stickpoint/pkg/telemetry_test").Start(t.Context(), "work")
	tel.Logger.InfoContext(ctx, "inside a span", "tenant_id", "acme")
	span.End()
	var line map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &line))
	require.Equal(t, span.SpanContext().TraceID().String(), line["trace_id"])
	require.Equal(t, "test", line["service"])

	counter, err := otel.Meter("github.com/stickpoint/stickpoint/pkg/telemetry_test").Int64Counter("stickpoint.test.things")
	require.NoError(t, err)
	counter.Add(t.Context(), 3)
	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	require.Contains(t, string(body), "stickpoint_test_things_total")
	require.True(t, strings.Contains(string(body), "go_goroutines"))
}

func TestConfigValidate(t *testing.T) {
	cfg := telemetry.DefaultConfig()
	require.NoError(t, cfg.Validate())
	cfg.LogFormat = "xml"
	require.ErrorContains(t, cfg.Validate(), "telemetry.log_format")
	cfg = telemetry.DefaultConfig()
	cfg.LogLevel = "loud"
	require.ErrorContains(t, cfg.Validate(), "telemetry.log_level")
	cfg = telemetry.DefaultConfig()
	cfg.TraceSampleRatio = 2
	require.ErrorContains(t, cfg.Validate(), "telemetry.trace_sample_ratio")
}
