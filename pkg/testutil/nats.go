package testutil

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stickpoint/stickpoint/pkg/natsjs"
)

// NATS starts an embedded nats-server with JetStream on a temp folder,
// declares Stickpoint's streams and returns a bus on it, drained at cleanup.
// Options change the default configuration first.
func NATS(t testing.TB, options ...func(*natsjs.Config)) *natsjs.Bus {
	t.Helper()
	cfg := natsjs.DefaultConfig()
	cfg.StoreDir = t.TempDir()
	for _, o := range options {
		o(&cfg)
	}
	bus, err := natsjs.Connect(t.Context(), cfg, "test", Logger(t))
	if err != nil {
		t.Fatalf("embedded nats: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = bus.Drain(ctx)
	})
	if err := bus.EnsureStreams(t.Context()); err != nil {
		t.Fatalf("declare streams: %v", err)
	}
	return bus
}

// Logger writes through t.Log, so a test's log shows only when it fails
// or runs with -v.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}
