package cli

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	eventsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/events/v1"
	"github.com/stickpoint/stickpoint/services/ingest/loadgen"
)

// runLoad posts synthetic /v1/batch load and reports throughput, latency
// and, with a token, how fast the events reach ClickHouse.
func loadCommand(env environ) *cobra.Command {
	return leaf("load", "Load-test ingest with synthetic /v1/batch requests", 0, func(fs *pflag.FlagSet) runner {
		cf := addClientFlags(fs, env)
		url := fs.String("url", envOr(env, "STICKPOINT_URL", "http://127.0.0.1:8080"), "ingest HTTP address (env STICKPOINT_URL)")
		key := fs.String("write-key", env.getenv("STICKPOINT_WRITE_KEY"), "write key (env STICKPOINT_WRITE_KEY)")
		concurrency := fs.Int("concurrency", 8, "requests in flight")
		batch := fs.Int("batch", 500, "events per request")
		duration := fs.Duration("duration", 10*time.Second, "how long to send")
		rate := fs.Float64("rate", 0, "cap on events/s (0: as fast as acknowledged)")
		return func(ctx context.Context, _ []string) error {
			if *key == "" {
				return fmt.Errorf("no write key: pass --write-key or set STICKPOINT_WRITE_KEY: %w", errUsage)
			}
			runID := "load-" + strconv.FormatInt(time.Now().UnixNano(), 36)
			opts := loadgen.Options{URL: *url, WriteKey: *key, Concurrency: *concurrency, Batch: *batch, Duration: *duration, Rate: *rate,
				RunID: runID, Progress: func(n uint64) { fmt.Fprintf(env.stderr, "\r%d events accepted ", n) }}
			if *cf.token == "" {
				*cf.token = env.getenv("STICKPOINT_TOKEN")
			}
			if *cf.token != "" {
				// Count this run's events as they land, through the events API.
				*cf.timeout = *duration + 3*time.Minute // the whole run, and the wait for ClickHouse
				s, done, err := dial(ctx, cf, env)
				if err != nil {
					return err
				}
				defer done()
				client := eventsv1.NewEventsServiceClient(s.conn)
				var base uint64
				if resp, err := client.Count(s.ctx, &eventsv1.CountRequest{Event: "Report Built"}); err == nil {
					base = resp.GetCount()
				} else {
					return s.explain(err)
				}
				opts.Stored = func(context.Context) (uint64, error) {
					resp, err := client.Count(s.ctx, &eventsv1.CountRequest{Event: "Report Built"})
					if err != nil {
						return 0, s.explain(err)
					}
					return resp.GetCount() - base, nil
				}
			}
			res, err := loadgen.Run(ctx, opts)
			fmt.Fprintln(env.stderr)
			fmt.Fprintln(env.stdout, res)
			return err
		}
	})
}
