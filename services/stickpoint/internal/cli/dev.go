package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/config"
	"github.com/stickpoint/stickpoint/services/stickpoint/app"
)

const envPrefix = "STICKPOINT"

// loadConfig applies the config file, STICKPOINT_* variables and --set
// overrides over the defaults, then the dedicated flags that were given.
func loadConfig(cfg *app.Config, file string, sets []string, flags map[string]string) error {
	for k, v := range flags {
		sets = append(sets, k+"="+v)
	}
	return config.Load(cfg, config.Sources{File: file, EnvPrefix: envPrefix, Env: os.Environ(), Set: sets})
}

func devCommand(env environ) *cobra.Command {
	return leaf("dev", "Run everything in one process (embedded mode): NATS, ClickHouse and every service", 0, func(fs *pflag.FlagSet) runner {
		dataDir := fs.String("data-dir", "", "folder for all data (default ./.stickpoint)")
		httpAddr := fs.String("http-addr", "", "HTTP listen address (default 127.0.0.1:8080)")
		grpcAddr := fs.String("grpc-addr", "", "gRPC listen address (default 127.0.0.1:9090)")
		file := fs.String("config", env.getenv("STICKPOINT_CONFIG"), "JSON config file")
		sets := fs.StringArray("set", nil, "override a config key, key=value (repeatable)")
		helpConfig := fs.Bool("help-config", false, "list every config key, its environment variable and value, and exit")
		return func(ctx context.Context, _ []string) error {
			cfg := app.DefaultConfig()
			flags := map[string]string{}
			fs.Visit(func(f *pflag.Flag) {
				switch f.Name {
				case "data-dir":
					flags["data_dir"] = *dataDir
				case "http-addr":
					flags["http_addr"] = *httpAddr
				case "grpc-addr":
					flags["grpc.addr"] = *grpcAddr
				}
			})
			if err := loadConfig(&cfg, *file, *sets, flags); err != nil {
				return err
			}
			if *helpConfig {
				tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "KEY\tENVIRONMENT\tTYPE\tVALUE")
				for _, k := range config.Keys(&cfg, envPrefix) {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Path, k.Env, k.Type, k.Value)
				}
				return tw.Flush()
			}
			return app.Run(ctx, cfg, env.stdout, env.stderr)
		}
	})
}

func migrateCommand(env environ) *cobra.Command {
	return leaf("migrate", "Apply the ClickHouse migrations of every service", 0, func(fs *pflag.FlagSet) runner {
		file := fs.String("config", env.getenv("STICKPOINT_CONFIG"), "JSON config file")
		sets := fs.StringArray("set", nil, "override a config key, key=value (repeatable)")
		return func(ctx context.Context, _ []string) error {
			cfg := app.DefaultConfig()
			if err := loadConfig(&cfg, *file, *sets, nil); err != nil {
				return err
			}
			cfg.Resolve()
			if err := cfg.ClickHouse.Validate(); err != nil {
				return err
			}
			store, err := chstore.Open(ctx, cfg.ClickHouse)
			if err != nil {
				return err
			}
			defer func() { _ = store.Close() }()
			log := slog.New(slog.NewTextHandler(env.stderr, nil))
			n, err := app.Migrate(ctx, store, log)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.stdout, "clickhouse %s (%s engine): %d migrations applied, schema up to date\n", store.Version(), store.Engine(), n)
			return nil
		}
	})
}

func versionCommand(env environ) *cobra.Command {
	return leaf("version", "Print the version", 0, func(*pflag.FlagSet) runner {
		return func(context.Context, []string) error {
			fmt.Fprintf(env.stdout, "stickpoint %s (embedded ClickHouse library %s)\n", app.Version, chstore.ChDBVersion)
			return nil
		}
	})
}
