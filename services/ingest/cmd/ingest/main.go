// Command ingest runs Stickpoint's ingest service on its own (distributed
// mode): the Segment-compatible HTTP API, the events gRPC API and the
// JetStream -> ClickHouse writer.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/stickpoint/stickpoint/services/ingest/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := app.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ingest:", err)
		os.Exit(1)
	}
}
