// Command milestones runs Stickpoint's milestone-tracking service on its
// own (distributed mode): journeys, each account's progress, stalled
// onboarding and the stick point, and the accounts and signals APIs.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/stickpoint/stickpoint/services/milestones/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := app.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "milestones:", err)
		os.Exit(1)
	}
}
