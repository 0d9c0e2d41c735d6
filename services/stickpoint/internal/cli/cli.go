// Package cli implements the stickpoint command on spf13/cobra: its help
// and shell completion (`stickpoint completion bash|zsh|fish|powershell`)
// are generated from the commands below.
//
// Exit codes: 0 success (and --help), 1 the command failed, 2 it was
// called wrongly (an unknown command or flag, a missing argument).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// errUsage marks an error caused by how the command was called (exit 2).
var errUsage = errors.New("usage")

// Run runs the command line args and returns the process exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	env := environ{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	root := rootCommand(env)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage) || strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "unknown flag"):
		fmt.Fprintln(stderr, "stickpoint:", strings.TrimSuffix(err.Error(), ": usage"))
		fmt.Fprintln(stderr, `Run "stickpoint --help" for the commands, or add --help to a command for its flags.`)
		return 2
	default:
		fmt.Fprintln(stderr, "stickpoint:", err)
		return 1
	}
}

func rootCommand(env environ) *cobra.Command {
	root := &cobra.Command{
		Use:   "stickpoint",
		Short: "Customer-success telemetry: ingest, milestones, accounts, signals and alerts",
		Long: `stickpoint: customer-success telemetry.

"stickpoint dev" runs everything in one process. The other commands are
clients: they find the server with --addr or STICKPOINT_ADDR (default
127.0.0.1:9090) and authenticate with --token or STICKPOINT_TOKEN. Every
read command takes --json.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = cmd.Help()
			return fmt.Errorf("no command given: %w", errUsage)
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return fmt.Errorf("%w: %w", err, errUsage) })
	root.AddCommand(
		devCommand(env), migrateCommand(env), tenantsCommand(env), keysCommand(env), tokensCommand(env),
		sendCommand(env), loadCommand(env), eventsCommand(env),
		journeysCommand(env), milestonesCommand(env), accountsCommand(env), healthCommand(env), churnCommand(env), signalsCommand(env),
		alertsCommand(env), alertingCommand(env), demoCommand(env), backtestCommand(env),
		versionCommand(env),
	)
	return root
}

type environ struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// runner runs a command with its positional arguments.
type runner func(ctx context.Context, pos []string) error

// leaf is a command with no subcommands. flags registers its flags and
// returns what runs it; args is how many positional arguments it takes
// (-1: any, checked by the runner).
func leaf(use, short string, args int, flags func(fs *pflag.FlagSet) runner) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short}
	run := flags(cmd.Flags())
	if args >= 0 {
		cmd.Args = func(c *cobra.Command, pos []string) error {
			if len(pos) != args {
				return fmt.Errorf("stickpoint %s takes %d argument(s), got %d: %w", c.CommandPath()[len("stickpoint "):], args, len(pos), errUsage)
			}
			return nil
		}
	}
	cmd.RunE = func(c *cobra.Command, pos []string) error { return run(c.Context(), pos) }
	return cmd
}

// sub describes a subcommand of a group.
type sub struct {
	use, short string
	args       int
}

// group is a command whose subcommands share one set of flags (each its
// own copy) and one runner, told which subcommand runs.
func group(name, short string, subs []sub, flags func(fs *pflag.FlagSet) func(ctx context.Context, sub string, pos []string) error) *cobra.Command {
	cmd := &cobra.Command{Use: name, Short: short, Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			names := make([]string, len(subs))
			for i, s := range subs {
				names[i] = strings.Fields(s.use)[0]
			}
			return fmt.Errorf("stickpoint %s needs a subcommand: %s: %w", name, strings.Join(names, ", "), errUsage)
		}}
	for _, s := range subs {
		subName := strings.Fields(s.use)[0]
		cmd.AddCommand(leaf(s.use, s.short, s.args, func(fs *pflag.FlagSet) runner {
			run := flags(fs)
			return func(ctx context.Context, pos []string) error { return run(ctx, subName, pos) }
		}))
	}
	return cmd
}
