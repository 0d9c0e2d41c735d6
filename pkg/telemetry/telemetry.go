// Package telemetry sets up a process's OpenTelemetry traces and metrics
// and its slog logger: metrics on a Prometheus handler (and OTLP when an
// endpoint is configured), traces to OTLP when configured, W3C trace
// context propagation, and log lines that carry the trace id.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// Config configures logs, metrics and traces.
type Config struct {
	// LogFormat is "json" (production) or "text".
	LogFormat string `json:"log_format"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `json:"log_level"`
	// OTLPEndpoint (host:port, gRPC) receives traces and metrics when set.
	OTLPEndpoint string `json:"otlp_endpoint"`
	// OTLPInsecure sends OTLP without TLS (a local collector).
	OTLPInsecure bool `json:"otlp_insecure"`
	// TraceSampleRatio is the share of new traces recorded, 0 to 1.
	TraceSampleRatio float64 `json:"trace_sample_ratio"`
}

// DefaultConfig logs JSON at info and exports nothing but Prometheus.
func DefaultConfig() Config {
	return Config{LogFormat: "json", LogLevel: "info", TraceSampleRatio: 1}
}

// Validate reports the first invalid field by name.
func (c Config) Validate() error {
	if c.LogFormat != "json" && c.LogFormat != "text" {
		return fmt.Errorf("telemetry.log_format: %q is not json or text", c.LogFormat)
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("telemetry.log_level: %q is not debug, info, warn or error", c.LogLevel)
	}
	if c.TraceSampleRatio < 0 || c.TraceSampleRatio > 1 {
		return fmt.Errorf("telemetry.trace_sample_ratio: %v is not between 0 and 1", c.TraceSampleRatio)
	}
	return nil
}

// Telemetry is a process's logger and OpenTelemetry providers.
type Telemetry struct {
	Logger   *slog.Logger
	registry *prometheus.Registry
	mp       *sdkmetric.MeterProvider
	tp       *sdktrace.TracerProvider
}

// Setup builds the logger writing to w and installs the global providers.
func Setup(ctx context.Context, cfg Config, service, version string, w io.Writer) (*Telemetry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if cfg.LogFormat == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	t := &Telemetry{Logger: slog.New(traceHandler{h}).With("service", service)}

	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName(service), semconv.ServiceVersion(version)))
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}

	t.registry = prometheus.NewRegistry()
	t.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	promExporter, err := otelprom.New(otelprom.WithRegisterer(t.registry))
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mopts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(promExporter)}
	topts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.TraceSampleRatio))),
	}
	if cfg.OTLPEndpoint != "" {
		mo := []otlpmetricgrpc.Option{otlpmetricgrpc.WithEndpoint(cfg.OTLPEndpoint)}
		to := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.OTLPEndpoint)}
		if cfg.OTLPInsecure {
			mo = append(mo, otlpmetricgrpc.WithInsecure())
			to = append(to, otlptracegrpc.WithInsecure())
		}
		me, err := otlpmetricgrpc.New(ctx, mo...)
		if err != nil {
			return nil, fmt.Errorf("otlp metric exporter: %w", err)
		}
		te, err := otlptracegrpc.New(ctx, to...)
		if err != nil {
			return nil, fmt.Errorf("otlp trace exporter: %w", err)
		}
		mopts = append(mopts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(me, sdkmetric.WithInterval(15*time.Second))))
		topts = append(topts, sdktrace.WithBatcher(te))
	}
	t.mp = sdkmetric.NewMeterProvider(mopts...)
	t.tp = sdktrace.NewTracerProvider(topts...)
	otel.SetMeterProvider(t.mp)
	otel.SetTracerProvider(t.tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		t.Logger.WarnContext(context.Background(), "opentelemetry", "error", err)
	}))
	return t, nil
}

// MetricsHandler serves the Prometheus text format.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}

// Shutdown flushes and stops the providers. Safe to call more than once.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	if t.tp != nil {
		errs = append(errs, t.tp.Shutdown(ctx))
	}
	if t.mp != nil {
		errs = append(errs, t.mp.Shutdown(ctx))
	}
	t.tp, t.mp = nil, nil
	return errors.Join(errs...)
}

// traceHandler adds trace_id and span_id to every record logged within a span.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(attrs)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}

// ParseLevel is for flags: "debug", "info", "warn", "error".
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(strings.ToLower(s)))
	return l, err
}
