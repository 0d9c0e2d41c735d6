package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/stickpoint/stickpoint/pkg/specfile"
	milestonesv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/milestones/v1"
	signalsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/signals/v1"
	milestones "github.com/stickpoint/stickpoint/services/milestones/app"
)

func journeysCommand(env environ) *cobra.Command {
	return group("journeys", "Put, read and delete journeys (the milestones accounts should reach)", []sub{
		{"put FILE", "Store a journey file (YAML or JSON; - for standard input) as its next version, and recompute the accounts", 1},
		{"get ID", "Show a journey (--source: the file as put)", 1},
		{"list", "List journeys in the order accounts try them", 0},
		{"delete ID", "Delete a journey, and recompute its accounts", 1},
		{"template", "Print a commented example journey file", 0},
	}, func(fs *pflag.FlagSet) func(context.Context, string, []string) error {
		cf := addClientFlags(fs, env)
		wait := fs.Duration("wait", 10*time.Minute, "how long put waits for the recompute of the tenant's accounts (0: don't wait)")
		source := fs.Bool("source", false, "print the journey file as it was put (get)")
		return func(ctx context.Context, sub string, pos []string) error {
			if sub == "template" {
				_, err := io.WriteString(env.stdout, milestones.JourneyTemplate)
				return err
			}
			if sub == "put" && *wait > *cf.timeout {
				*cf.timeout = *wait
			}
			s, done, err := dial(ctx, cf, env)
			if err != nil {
				return err
			}
			defer done()
			client := milestonesv1.NewMilestonesServiceClient(s.conn)
			switch sub {
			case "put":
				src, err := readSource(env, pos[0])
				if err != nil {
					return err
				}
				// A file may hold several journeys, apart by "---" lines.
				docs := specfile.Documents(src)
				changed := ""
				for i, doc := range docs {
					resp, err := client.PutJourney(s.ctx, &milestonesv1.PutJourneyRequest{Source: string(doc.Source)})
					if err != nil {
						if len(docs) > 1 {
							fmt.Fprintf(env.stderr, "journey %d of %d (from line %d):\n", i+1, len(docs), doc.Line)
						}
						return s.explain(err)
					}
					j := resp.GetJourney()
					if *cf.asJSON {
						if err := s.printJSON(resp); err != nil {
							return err
						}
						continue
					}
					if resp.GetUnchanged() {
						fmt.Fprintf(env.stdout, "journey %s unchanged (version %d)\n", j.GetId(), j.GetVersion())
						continue
					}
					changed = journeyBackfill(j)
					fmt.Fprintf(env.stdout, "journey %s version %d stored: %d milestones\n", j.GetId(), j.GetVersion(), len(j.GetMilestones()))
				}
				if *wait == 0 || changed == "" || *cf.asJSON {
					return nil
				}
				return s.waitBackfill(client, changed, env)
			case "get":
				resp, err := client.GetJourney(s.ctx, &milestonesv1.GetJourneyRequest{Id: pos[0]})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				if *source {
					_, err := io.WriteString(env.stdout, resp.GetJourney().GetSource())
					return err
				}
				return printJourney(env.stdout, resp.GetJourney())
			case "delete":
				if _, err := client.DeleteJourney(s.ctx, &milestonesv1.DeleteJourneyRequest{Id: pos[0]}); err != nil {
					return s.explain(err)
				}
				fmt.Fprintf(env.stdout, "journey %s deleted; its accounts are recomputed\n", pos[0])
				return nil
			}
			resp, err := client.ListJourneys(s.ctx, &milestonesv1.ListJourneysRequest{})
			if err != nil {
				return s.explain(err)
			}
			if *cf.asJSON {
				return s.printJSON(resp)
			}
			if len(resp.GetJourneys()) == 0 {
				fmt.Fprintln(env.stdout, "no journeys: see `stickpoint journeys template`, then `stickpoint journeys put FILE`")
				return nil
			}
			tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tVERSION\tMILESTONES\tUPDATED\tNAME")
			for _, j := range resp.GetJourneys() {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", j.GetId(), j.GetVersion(), len(j.GetMilestones()), when(j.GetUpdatedAt()), j.GetName())
			}
			return tw.Flush()
		}
	})
}

func printJourney(w io.Writer, j *milestonesv1.Journey) error {
	fmt.Fprintf(w, "journey: %s (%s), version %d, updated %s\n", j.GetId(), j.GetName(), j.GetVersion(), when(j.GetUpdatedAt()))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tMILESTONE\tEVENT\tTHRESHOLD\tTARGET\tNAME")
	for i, m := range j.GetMilestones() {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", i+1, m.GetId(), m.GetEvent(), m.GetThreshold(), span(m.GetTarget()), m.GetName())
	}
	return tw.Flush()
}

// journeyBackfill is the reason the server gives the backfill of a
// journey version put.
func journeyBackfill(j *milestonesv1.Journey) string {
	return fmt.Sprintf("journey %s version %d", j.GetId(), j.GetVersion())
}

// waitBackfill polls the tenant's backfill for reason until it ends,
// showing its progress on stderr.
func (s *session) waitBackfill(client milestonesv1.MilestonesServiceClient, reason string, env environ) error {
	shown := ""
	for {
		bf, err := client.GetBackfill(s.ctx, &milestonesv1.GetBackfillRequest{})
		switch {
		case status.Code(err) == codes.NotFound:
		case err != nil:
			return s.explain(err)
		case bf.GetReason() == reason:
			line := fmt.Sprintf("recomputing accounts: %d/%d", bf.GetAccountsDone(), bf.GetAccountsTotal())
			if line != shown {
				fmt.Fprintf(env.stderr, "\r%s", line)
				shown = line
			}
			if bf.GetDone() {
				fmt.Fprintln(env.stderr)
				if bf.GetError() != "" {
					return fmt.Errorf("recompute failed (the scheduled sweep retries it): %s", bf.GetError())
				}
				fmt.Fprintf(env.stdout, "recomputed %d accounts in %s\n", bf.GetAccountsDone(),
					bf.GetFinishedAt().AsTime().Sub(bf.GetStartedAt().AsTime()).Round(time.Millisecond))
				return nil
			}
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-s.ctx.Done():
			fmt.Fprintln(env.stderr)
			return fmt.Errorf("stopped waiting for the recompute (it goes on in the server): %w", s.ctx.Err())
		}
	}
}

func milestonesCommand(env environ) *cobra.Command {
	return group("milestones", "Accounts' progress through their journeys", []sub{
		{"progress ACCOUNT", "One account's progress: each milestone's state, target and reached time", 1},
		{"list", "Accounts by onboarding status (--status stalled)", 0},
		{"funnel", "Per milestone: the accounts that reached it, median and p90 time from start", 0},
		{"stick-point", "Accounts past the stick point, by milestones reached", 0},
	}, func(fs *pflag.FlagSet) func(context.Context, string, []string) error {
		cf := addClientFlags(fs, env)
		statusFlag := fs.String("status", "", "only accounts with this status: completed, stalled, late, at_risk, on_track (list)")
		journeyID := fs.String("journey", "", "the journey (default: the tenant's first) (list, funnel, stick-point)")
		limit := fs.Int("limit", 100, "at most this many accounts (list)")
		return func(ctx context.Context, sub string, pos []string) error {
			s, done, err := dial(ctx, cf, env)
			if err != nil {
				return err
			}
			defer done()
			client := milestonesv1.NewMilestonesServiceClient(s.conn)
			switch sub {
			case "progress":
				resp, err := client.GetProgress(s.ctx, &milestonesv1.GetProgressRequest{AccountId: pos[0]})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				return printProgress(env.stdout, resp.GetOnboarding())
			case "list":
				out := &milestonesv1.ListAccountsResponse{}
				out.Accounts, out.NextPageToken, err = collectPages(*limit, func(size int32, token string) ([]*milestonesv1.Onboarding, string, error) {
					resp, err := client.ListAccounts(s.ctx, &milestonesv1.ListAccountsRequest{Status: *statusFlag, JourneyId: *journeyID,
						PageSize: size, PageToken: token})
					return resp.GetAccounts(), resp.GetNextPageToken(), err
				})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(out)
				}
				if len(out.GetAccounts()) == 0 {
					fmt.Fprintln(env.stdout, "no accounts")
					return nil
				}
				tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ACCOUNT\tJOURNEY\tSTATUS\tSINCE\tCAUSE\tMILESTONES\tSTART")
				for _, o := range out.GetAccounts() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", o.GetAccountId(), o.GetJourneyId(), o.GetStatus(), when(o.GetStatusSince()),
						dash(o.GetCause()), reachedOf(o), when(o.GetStart()))
				}
				if out.GetNextPageToken() != "" {
					fmt.Fprintf(tw, "(first %d; pass --limit for more)\n", len(out.GetAccounts()))
				}
				return tw.Flush()
			case "funnel":
				resp, err := client.Funnel(s.ctx, &milestonesv1.FunnelRequest{JourneyId: *journeyID})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				fmt.Fprintf(env.stdout, "journey %s: %d accounts\n", resp.GetJourneyId(), resp.GetAccounts())
				tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "#\tMILESTONE\tREACHED\tSHARE\tMEDIAN TIME\tP90 TIME\tNAME")
				for i, st := range resp.GetSteps() {
					share := "-"
					if resp.GetAccounts() > 0 {
						share = fmt.Sprintf("%.0f%%", 100*float64(st.GetReached())/float64(resp.GetAccounts()))
					}
					fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\n", i+1, st.GetMilestoneId(), st.GetReached(), share,
						span(st.GetMedianTime()), span(st.GetP90Time()), st.GetName())
				}
				return tw.Flush()
			}
			resp, err := client.StickPoint(s.ctx, &milestonesv1.StickPointRequest{JourneyId: *journeyID})
			if err != nil {
				return s.explain(err)
			}
			if *cf.asJSON {
				return s.printJSON(resp)
			}
			fmt.Fprintf(env.stdout, "journey %s: %d accounts, %d past the stick point, %d of them completed\n",
				resp.GetJourneyId(), resp.GetAccounts(), resp.GetPastStickPoint(), resp.GetPastCompleted())
			tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MILESTONES REACHED\tACCOUNTS PAST THE STICK POINT")
			for i, n := range resp.GetByMilestonesReached() {
				fmt.Fprintf(tw, "%d\t%d\n", i, n)
			}
			return tw.Flush()
		}
	})
}

// collectPages reads pages (of at most 1,000) until it has limit items or
// the last page; next is the token of what remains.
func collectPages[T any](limit int, page func(size int32, token string) ([]T, string, error)) (items []T, next string, _ error) {
	for len(items) < limit {
		got, token, err := page(int32(min(limit-len(items), 1000)), next)
		if err != nil {
			return nil, "", err
		}
		items, next = append(items, got...), token
		if next == "" {
			break
		}
	}
	return items, next, nil
}

func reachedOf(o *milestonesv1.Onboarding) string {
	n := 0
	for _, m := range o.GetMilestones() {
		if m.GetReached() {
			n++
		}
	}
	return fmt.Sprintf("%d/%d", n, len(o.GetMilestones()))
}

func printProgress(w io.Writer, o *milestonesv1.Onboarding) error {
	fmt.Fprintf(w, "account: %s\n", o.GetAccountId())
	fmt.Fprintf(w, "journey: %s (version %d)\n", o.GetJourneyId(), o.GetJourneyVersion())
	cause := ""
	if o.GetCause() != "" {
		cause = ", by " + o.GetCause()
	}
	fmt.Fprintf(w, "status: %s since %s%s\n", o.GetStatus(), when(o.GetStatusSince()), cause)
	fmt.Fprintf(w, "start: %s\n", when(o.GetStart()))
	fmt.Fprintf(w, "time to first value: %s\n", span(o.GetTimeToFirstValue()))
	past := "not yet"
	if o.GetPastStickPoint() {
		past = "passed"
	}
	fmt.Fprintf(w, "stick point: %s (%s)\n", when(o.GetStickPointAt()), past)
	fmt.Fprintf(w, "evaluated: %s\n", when(o.GetEvaluatedAt()))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tMILESTONE\tSTATE\tPROGRESS\tTARGET\tREACHED\tLAST PROGRESS\tNAME")
	for i, m := range o.GetMilestones() {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\n", i+1, m.GetId(), m.GetState(), m.GetProgress(), m.GetRequired(),
			when(m.GetTargetAt()), when(m.GetReachedAt()), when(m.GetLastProgressAt()), m.GetName())
	}
	return tw.Flush()
}

// span prints a duration in days, hours and minutes.
func span(d *durationpb.Duration) string {
	if d == nil {
		return "-"
	}
	v := d.AsDuration().Round(time.Minute)
	days := v / (24 * time.Hour)
	v -= days * 24 * time.Hour
	if days > 0 {
		return fmt.Sprintf("%dd%s", days, strings.TrimSuffix(strings.TrimSuffix(v.String(), "0s"), "0m"))
	}
	return strings.TrimSuffix(strings.TrimSuffix(v.String(), "0s"), "0m")
}

func journeyNote(id string) string {
	if id == "" {
		return "(no journey applies)"
	}
	return "(journey " + id + ")"
}

func signalsCommand(env environ) *cobra.Command {
	return group("signals", "What the detection services signalled", []sub{
		{"list", "Signals, newest first", 0},
	}, func(fs *pflag.FlagSet) func(context.Context, string, []string) error {
		cf := addClientFlags(fs, env)
		account := fs.String("account", "", "only this account")
		kind := fs.String("kind", "", "only this kind, e.g. milestone_reached, onboarding_stalled")
		limit := fs.Int("limit", 50, "at most this many (up to 1000)")
		return func(ctx context.Context, sub string, _ []string) error {
			s, done, err := dial(ctx, cf, env)
			if err != nil {
				return err
			}
			defer done()
			resp, err := signalsv1.NewSignalsServiceClient(s.conn).List(s.ctx, &signalsv1.ListRequest{AccountId: *account, Kind: *kind, Limit: int32(*limit)})
			if err != nil {
				return s.explain(err)
			}
			if *cf.asJSON {
				return s.printJSON(resp)
			}
			if len(resp.GetSignals()) == 0 {
				fmt.Fprintln(env.stdout, "no signals")
				return nil
			}
			tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DETECTED\tOCCURRED\tACCOUNT\tKIND\tSEVERITY\tSUMMARY")
			for _, sg := range resp.GetSignals() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", when(sg.GetDetectedAt()), when(sg.GetOccurredAt()), sg.GetAccountId(), sg.GetKind(),
					strings.ToLower(strings.TrimPrefix(sg.GetSeverity().String(), "SEVERITY_")), oneLine(sg.GetSummary(), 120))
			}
			return tw.Flush()
		}
	})
}
