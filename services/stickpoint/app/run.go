package app

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/service"
	"github.com/stickpoint/stickpoint/pkg/signals"
	authv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/auth/v1"
	alerting "github.com/stickpoint/stickpoint/services/alerting/app"
	health "github.com/stickpoint/stickpoint/services/health/app"
	ingest "github.com/stickpoint/stickpoint/services/ingest/app"
	milestones "github.com/stickpoint/stickpoint/services/milestones/app"
)

// Version is set at build time with -ldflags "-X ...app.Version=...".
var Version = "dev"

// Component is a part of Stickpoint that owns ClickHouse tables.
type Component struct {
	Name       string
	Migrations fs.FS
}

// Components lists every component's migrations, applied in this order by
// `stickpoint migrate` and at embedded start. Each service adds its own.
func Components() []Component {
	return []Component{
		{Name: ingest.Component, Migrations: ingest.Migrations},
		{Name: signals.Component, Migrations: signals.Migrations},
		{Name: milestones.Component, Migrations: milestones.Migrations},
		{Name: health.Component, Migrations: health.Migrations},
	}
}

// Migrate applies every component's pending migrations.
func Migrate(ctx context.Context, store chstore.Store, log *slog.Logger) (int, error) {
	total := 0
	for _, c := range Components() {
		applied, err := chstore.Migrate(ctx, store, c.Name, c.Migrations)
		for _, m := range applied {
			log.InfoContext(ctx, "migration applied", "component", c.Name, "version", m.Version, "name", m.Name)
		}
		total += len(applied)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// Run runs the embedded mode until ctx is cancelled. Lines meant for people
// (write key, token, ready) go to out; logs go to logw.
func Run(ctx context.Context, cfg Config, out, logw io.Writer) error {
	started := time.Now()
	cfg.Resolve()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer unlock()

	base, err := service.Start(ctx, cfg.Config, "stickpoint", Version, logw)
	if err != nil {
		return err
	}
	// Embedded mode migrates at start; distributed mode runs `stickpoint migrate`.
	if _, err := Migrate(ctx, base.Store, base.Log); err != nil {
		base.Close(ctx)
		return err
	}
	writeKey := ""
	if cfg.DemoTenant != "" {
		key, secret, err := base.Registry.EnsureTenant(ctx, cfg.DemoTenant, "Demo",
			authv1.Scope_SCOPE_READ, authv1.Scope_SCOPE_WRITE, authv1.Scope_SCOPE_ADMIN, authv1.Scope_SCOPE_OPERATOR)
		if err != nil {
			base.Close(ctx)
			return fmt.Errorf("demo tenant: %w", err)
		}
		writeKey = key.Key
		fmt.Fprintf(out, "tenant: %s\n", cfg.DemoTenant)
		fmt.Fprintf(out, "write key: %s\n", key.Key)
		if secret != "" {
			fmt.Fprintf(out, "api token: %s\n", secret)
			fmt.Fprintf(out, "  (shown once: it is stored hashed. Save it, e.g. export STICKPOINT_TOKEN=<token>;\n   `make demo` reads it from %s)\n", filepath.Join(cfg.DataDir, TokenFile))
		}
		// The demo tenant's credentials, for `stickpoint demo` on this
		// machine: the data folder holds everything of this tenant anyway.
		if err := saveCredentials(cfg.DataDir, key.Key, secret); err != nil {
			base.Close(ctx)
			return err
		}
	}
	ing, err := ingest.New(cfg.Ingest, base.Bus, base.Store, base.Registry, base.Log)
	if err != nil {
		base.Close(ctx)
		return err
	}
	ing.Register(base.Mux, base.GRPC)
	ms, err := milestones.New(ctx, cfg.Milestones, base.Bus, base.Store, base.Registry, base.Log)
	if err != nil {
		base.Close(ctx)
		return err
	}
	ms.Register(base.GRPC)
	hs, err := health.New(ctx, cfg.Health, base.Bus, base.Store, base.Registry, base.Log)
	if err != nil {
		base.Close(ctx)
		return err
	}
	hs.Register(base.GRPC)
	as, err := alerting.New(ctx, cfg.Alerting, base.Bus, base.Log)
	if err != nil {
		base.Close(ctx)
		return err
	}
	as.Register(base.GRPC)

	fmt.Fprintf(out, "grpc: %s\n", base.GRPC.Addr())
	fmt.Fprintf(out, "http: http://%s\n", base.HTTPAddr())
	fmt.Fprintf(out, "data: %s\n", cfg.DataDir)
	if writeKey != "" {
		fmt.Fprintf(out, "try: curl -u %s: http://%s/v1/track -H 'Content-Type: application/json' -d '{\"userId\":\"u1\",\"event\":\"Report Built\",\"context\":{\"groupId\":\"acme-co\"}}'\n",
			writeKey, base.HTTPAddr())
	}
	fmt.Fprintf(out, "started in %s\n", time.Since(started).Round(time.Millisecond))
	fmt.Fprintln(out, "ready")
	base.Log.InfoContext(ctx, "ready", "grpc_addr", base.GRPC.Addr(), "http_addr", base.HTTPAddr(), "startup_ms", time.Since(started).Milliseconds())
	err = base.Serve(ctx, ing, ms, hs, as)
	fmt.Fprintln(out, "stopped")
	return err
}

// Files in the data folder holding the demo tenant's credentials.
const (
	TokenFile    = "api-token"
	WriteKeyFile = "write-key"
)

// saveCredentials writes the write key on every start, and the API token
// when it was just created (owner-only: it is a secret).
func saveCredentials(dir, writeKey, token string) error {
	if err := os.WriteFile(filepath.Join(dir, WriteKeyFile), []byte(writeKey+"\n"), 0o644); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	if token == "" {
		return nil
	}
	if err := os.WriteFile(filepath.Join(dir, TokenFile), []byte(token+"\n"), 0o600); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	return nil
}

// lockDataDir takes an exclusive lock on the data folder, so a second
// process can't open the same NATS and ClickHouse files.
func lockDataDir(dir string) (func(), error) {
	path := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid, _ := io.ReadAll(f)
		_ = f.Close()
		return nil, fmt.Errorf("data_dir: %s is in use by another stickpoint process (pid %s); stop it or pass --data-dir", dir, strings.TrimSpace(string(pid)))
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); _ = f.Close() }, nil
}
