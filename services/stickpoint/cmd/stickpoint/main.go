// Command stickpoint is Stickpoint's CLI and its embedded all-in-one mode
// (`stickpoint dev`).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/stickpoint/stickpoint/services/stickpoint/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
