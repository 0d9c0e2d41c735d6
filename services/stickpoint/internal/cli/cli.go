// Package cli implements the stickpoint command.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

const usage = `stickpoint: customer-success telemetry

Usage:
  stickpoint dev [--data-dir DIR] [--http-addr ADDR] [--grpc-addr ADDR]   run everything in one process
  stickpoint migrate [--config FILE] [--set key=value]...                apply ClickHouse migrations
  stickpoint tenants create ID [--name NAME] | list | get                  (create, list: operator token)
  stickpoint keys create --name NAME | list | rotate SOURCE_ID [--grace 24h] | revoke KEY
  stickpoint tokens create --name NAME --scopes read,write,admin | list | revoke ID
  stickpoint send FILE [--write-key KEY] [--url http://127.0.0.1:8080]   send JSON lines of Segment calls
  stickpoint load --write-key KEY [--concurrency 8] [--batch 500] [--duration 10s] [--rate N]   load-test ingest
  stickpoint events count [--account A] [--event E] [--type T] [--since 24h] | recent [--account A] [--limit N] | stats [--since 24h] | warnings [--since 24h]
  stickpoint journeys put FILE [--wait 10m] | get ID [--source] | list | delete ID | template
  stickpoint milestones progress ACCOUNT | list [--status S] [--journey J] [--limit N] | funnel [--journey J] | stick-point [--journey J]
  stickpoint accounts get ACCOUNT | list [--status S] [--owner O] [--trait key=value]... [--limit N]
  stickpoint signals list [--account A] [--kind K] [--limit N]
  stickpoint version

Client commands find the server with --addr or STICKPOINT_ADDR (default 127.0.0.1:9090)
and authenticate with --token or STICKPOINT_TOKEN. Read commands take --json.
Run "stickpoint COMMAND -h" for a command's flags.
`

// errUsage marks an error caused by how the command was called (exit 2).
var errUsage = errors.New("usage")

// Run runs the command line args and returns the process exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	err := run(ctx, args, stdin, stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "stickpoint:", strings.TrimSuffix(err.Error(), ": usage"))
		return 2
	default:
		fmt.Fprintln(stderr, "stickpoint:", err)
		return 1
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("no command given: %w", errUsage)
	}
	cmd, rest := args[0], args[1:]
	env := environ{stdout: stdout, stderr: stderr, getenv: os.Getenv}
	switch cmd {
	case "dev":
		return runDev(ctx, rest, env)
	case "migrate":
		return runMigrate(ctx, rest, env)
	case "tenants":
		return runTenants(ctx, rest, env)
	case "keys":
		return runKeys(ctx, rest, env)
	case "tokens":
		return runTokens(ctx, rest, env)
	case "load":
		return runLoad(ctx, rest, env)
	case "send":
		return runSend(ctx, rest, env)
	case "events":
		return runEvents(ctx, args[1:], env)
	case "journeys":
		return runJourneys(ctx, rest, stdin, env)
	case "milestones":
		return runMilestones(ctx, rest, env)
	case "accounts":
		return runAccounts(ctx, rest, env)
	case "signals":
		return runSignals(ctx, rest, env)
	case "version":
		return runVersion(env)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q: %w", cmd, errUsage)
}

type environ struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

// parse parses flags that may come before, between or after positional
// arguments, and returns the positional ones.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %w", err, errUsage)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func newFlags(name string, env environ) *flag.FlagSet {
	fs := flag.NewFlagSet("stickpoint "+name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	return fs
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
