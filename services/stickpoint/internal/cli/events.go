package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/events/v1"
)

func eventsCommand(env environ) *cobra.Command {
	return group("events", "Query the tenant's events", []sub{
		{"count", "Count distinct events (a re-sent messageId counts once)", 0},
		{"recent", "The latest events, newest first", 0},
		{"stats", "What ingest accepted and refused", 0},
		{"warnings", "Calls refused one by one inside stored batches", 0},
	}, func(fs *pflag.FlagSet) func(context.Context, string, []string) error {
		cf := addClientFlags(fs, env)
		account := fs.String("account", "", "only this account")
		event := fs.String("event", "", "only this event name (count)")
		typ := fs.String("type", "", "only this type: track, page, screen, identify, group, alias (count)")
		since := fs.Duration("since", 0, "only events in this last span, e.g. 24h (count, stats, warnings)")
		limit := fs.Int("limit", 20, "how many events (recent)")
		return func(ctx context.Context, sub string, _ []string) error {
			return runEvents(ctx, sub, env, cf, *account, *event, *typ, *since, *limit)
		}
	})
}

func runEvents(ctx context.Context, sub string, env environ, cf clientFlags, account, event, typ string, since time.Duration, limit int) error {
	s, done, err := dial(ctx, cf, env)
	if err != nil {
		return err
	}
	defer done()
	client := eventsv1.NewEventsServiceClient(s.conn)
	if sub == "stats" {
		req := &eventsv1.StatsRequest{}
		if since > 0 {
			req.StartTime = timestamppb.New(time.Now().Add(-since))
		}
		resp, err := client.Stats(s.ctx, req)
		if err != nil {
			return s.explain(err)
		}
		if *cf.asJSON {
			return s.printJSON(resp)
		}
		fmt.Fprintf(env.stdout, "accepted events: %d\n", resp.GetAcceptedEvents())
		fmt.Fprintf(env.stdout, "unattributed events: %d (no groupId, and no group call for their user)\n", resp.GetUnattributedEvents())
		fmt.Fprintf(env.stdout, "rejected calls in stored batches: %d (stickpoint events warnings)\n", resp.GetRejectedCalls())
		if len(resp.GetRejections()) == 0 {
			fmt.Fprintln(env.stdout, "rejected requests: none")
			return nil
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "REJECTED REQUESTS\tAPI\tREASON")
		for _, r := range resp.GetRejections() {
			fmt.Fprintf(tw, "%d\t%s\t%s\n", r.GetRequests(), r.GetApi(), r.GetReason())
		}
		return tw.Flush()
	}
	if sub == "warnings" {
		req := &eventsv1.WarningsRequest{}
		if since > 0 {
			req.StartTime = timestamppb.New(time.Now().Add(-since))
		}
		resp, err := client.Warnings(s.ctx, req)
		if err != nil {
			return s.explain(err)
		}
		if *cf.asJSON {
			return s.printJSON(resp)
		}
		if len(resp.GetWarnings()) == 0 {
			fmt.Fprintln(env.stdout, "no calls were rejected")
			return nil
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CALLS\tAPI\tREASON\tFIELD\tLAST SEEN\tLATEST EXAMPLE")
		for _, w := range resp.GetWarnings() {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", w.GetCalls(), w.GetApi(), w.GetCode(), dash(w.GetField()),
				w.GetLastSeen().AsTime().UTC().Format("2006-01-02 15:04:05Z"), oneLine(w.GetExampleMessage(), 100))
		}
		return tw.Flush()
	}
	if sub == "count" {
		req := &eventsv1.CountRequest{AccountId: account, Event: event, Type: typ}
		if since > 0 {
			req.StartTime = timestamppb.New(time.Now().Add(-since))
		}
		resp, err := client.Count(s.ctx, req)
		if err != nil {
			return s.explain(err)
		}
		if *cf.asJSON {
			return s.printJSON(resp)
		}
		fmt.Fprintln(env.stdout, resp.GetCount())
		return nil
	}
	resp, err := client.Recent(s.ctx, &eventsv1.RecentRequest{AccountId: account, Limit: int32(limit)})
	if err != nil {
		return s.explain(err)
	}
	if *cf.asJSON {
		return s.printJSON(resp)
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tTYPE\tNAME\tUSER\tACCOUNT\tMESSAGE ID")
	for _, e := range resp.GetEvents() {
		user := e.GetUserId()
		if user == "" {
			user = "anon:" + e.GetAnonymousId()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.GetTimestamp().AsTime().UTC().Format("2006-01-02 15:04:05.000Z"),
			e.GetType(), dash(e.GetName()), user, dash(e.GetAccountId()), e.GetMessageId())
	}
	return tw.Flush()
}

func dash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}

// oneLine shortens s to n runes on one line, for a table cell.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
