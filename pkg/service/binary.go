package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/stickpoint/stickpoint/pkg/config"
)

// Binary describes a service's own binary (distributed mode) for
// RunBinary. C is its configuration: service.Config and the service's own
// section.
type Binary[C any] struct {
	// Name names the process in logs and traces (stickpoint-ingest).
	Name    string
	Version string
	// Defaults is the configuration before the file, environment and
	// --set are applied.
	Defaults C
	// Base is the process configuration inside C.
	Base func(*C) Config
	// Validate checks the service's own section, before anything starts.
	Validate func(*C) error
	// Build makes the service over the started process and registers its
	// APIs.
	Build func(ctx context.Context, cfg *C, base *Base) (Service, error)
}

// RunBinary runs a service binary: NAME [--config FILE] [--set key=value]...
// It loads the configuration (defaults, file or STICKPOINT_CONFIG,
// STICKPOINT_* variables, --set), starts the process, builds the service,
// prints its addresses and `ready`, and serves until ctx ends. Migrations
// are not run here: `stickpoint migrate` runs them once, so replicas don't
// race.
func RunBinary[C any](ctx context.Context, b Binary[C], args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(b.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", os.Getenv("STICKPOINT_CONFIG"), "JSON config file")
	var sets []string
	fs.Func("set", "override a config key, key=value (repeatable)", func(v string) error { sets = append(sets, v); return nil })
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	cfg := b.Defaults
	if err := config.Load(&cfg, config.Sources{File: *file, EnvPrefix: "STICKPOINT", Env: os.Environ(), Set: sets}); err != nil {
		return err
	}
	if err := b.Validate(&cfg); err != nil {
		return err
	}
	started := time.Now()
	base, err := Start(ctx, b.Base(&cfg), b.Name, b.Version, stderr)
	if err != nil {
		return err
	}
	svc, err := b.Build(ctx, &cfg, base)
	if err != nil {
		base.Close(ctx)
		return err
	}
	fmt.Fprintf(stdout, "grpc: %s\nhttp: http://%s\nstarted in %s\nready\n", base.GRPC.Addr(), base.HTTPAddr(), time.Since(started).Round(time.Millisecond))
	return base.Serve(ctx, svc)
}
