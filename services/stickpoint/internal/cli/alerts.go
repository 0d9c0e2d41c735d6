package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/stickpoint/stickpoint/pkg/signals"
	alertsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/alerts/v1"
)

func alertsCommand(env environ) *cobra.Command {
	return group("alerts", "Alerts raised from signals: list, inspect, acknowledge, resolve, watch live", []sub{
		{"list", "Alerts, most recently updated first, filtered by state, kind, severity, owner or account", 0},
		{"get ID", "One alert: its evidence, lifecycle and delivery log", 1},
		{"ack ID", "Acknowledge an alert: you are on it, and it won't escalate", 1},
		{"resolve ID", "Resolve an alert; it reopens only on new evidence after the rule's cooldown", 1},
		{"watch", "Print alert changes as they happen, until interrupted; reconnects and resumes after a disconnect", 0},
	}, func(fs *pflag.FlagSet) func(context.Context, string, []string) error {
		cf := addClientFlags(fs, env)
		state := fs.String("state", "", "only this state: open, acknowledged, resolved (list)")
		kind := fs.String("kind", "", "only this signal kind, like cancel_intent (list)")
		severity := fs.String("severity", "", "only this severity: info, low, medium, high, critical (list)")
		owner := fs.String("owner", "", "only alerts of accounts this CSM owns (list)")
		account := fs.String("account", "", "only this account's alerts (list)")
		limit := fs.Int("limit", 100, "at most this many alerts (list)")
		by := fs.String("by", env.getenv("STICKPOINT_USER"), "who acknowledges or resolves (env STICKPOINT_USER; default the token) (ack, resolve)")
		note := fs.String("note", "", "a note for the lifecycle (ack, resolve)")
		cursor := fs.String("cursor", "", "resume after this cursor, as printed by an earlier watch (watch)")
		replay := fs.Duration("replay", 0, "first print the changes of this long ago, like 1h (watch)")
		return func(ctx context.Context, sub string, pos []string) error {
			states := map[string]alertsv1.State{"": 0, "open": alertsv1.State_STATE_OPEN, "acknowledged": alertsv1.State_STATE_ACKNOWLEDGED, "resolved": alertsv1.State_STATE_RESOLVED}
			st, ok := states[*state]
			if !ok {
				return usageError("--state %q is not open, acknowledged or resolved", *state)
			}
			sev := alertsv1.Severity_SEVERITY_UNSPECIFIED
			if *severity != "" {
				v, ok := alertsv1.Severity_value["SEVERITY_"+strings.ToUpper(*severity)]
				if !ok {
					return usageError("--severity %q is not info, low, medium, high or critical", *severity)
				}
				sev = alertsv1.Severity(v)
			}
			s, done, err := dial(ctx, cf, env)
			if err != nil {
				return err
			}
			defer done()
			client := alertsv1.NewAlertsServiceClient(s.conn)
			switch sub {
			case "get":
				resp, err := client.Get(s.ctx, &alertsv1.GetRequest{Id: pos[0]})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				printAlert(env.stdout, resp.GetAlert())
				return nil
			case "ack", "resolve":
				var a *alertsv1.Alert
				if sub == "ack" {
					resp, err := client.Acknowledge(s.ctx, &alertsv1.AcknowledgeRequest{Id: pos[0], By: *by, Note: *note})
					if err != nil {
						return s.explain(err)
					}
					a = resp.GetAlert()
				} else {
					resp, err := client.Resolve(s.ctx, &alertsv1.ResolveRequest{Id: pos[0], By: *by, Note: *note})
					if err != nil {
						return s.explain(err)
					}
					a = resp.GetAlert()
				}
				fmt.Fprintf(env.stdout, "alert %s is %s\n", a.GetId(), stateName(a.GetState()))
				return nil
			case "watch":
				return watchAlerts(s, client, env.stdout, env.stderr, *cursor, *replay, *cf.asJSON)
			}
			out := &alertsv1.ListResponse{}
			out.Alerts, out.NextPageToken, err = collectPages(*limit, func(size int32, token string) ([]*alertsv1.Alert, string, error) {
				resp, err := client.List(s.ctx, &alertsv1.ListRequest{State: st, Kind: *kind, Severity: sev, Owner: *owner, AccountId: *account,
					PageSize: size, PageToken: token})
				return resp.GetAlerts(), resp.GetNextPageToken(), err
			})
			if err != nil {
				return s.explain(err)
			}
			if *cf.asJSON {
				return s.printJSON(out)
			}
			printAlerts(env.stdout, out.GetAlerts())
			return nil
		}
	})
}

func stateName(s alertsv1.State) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STATE_"))
}

func severityName(s alertsv1.Severity) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "SEVERITY_"))
}

func printAlerts(w io.Writer, alerts []*alertsv1.Alert) {
	if len(alerts) == 0 {
		fmt.Fprintln(w, "no alerts")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tSEVERITY\tKIND\tACCOUNT\tOWNER\tCOUNT\tUPDATED\tSUMMARY")
	for _, a := range alerts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", a.GetId(), stateName(a.GetState()), severityName(a.GetSeverity()), a.GetKind(),
			accountName(a), dash(a.GetOwner()), a.GetCount(), when(a.GetUpdatedAt()), truncateText(a.GetSummary(), 80))
	}
	_ = tw.Flush()
}

func accountName(a *alertsv1.Alert) string {
	if a.GetAccountName() != "" && a.GetAccountName() != a.GetAccountId() {
		return a.GetAccountName() + " (" + a.GetAccountId() + ")"
	}
	return a.GetAccountId()
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func printAlert(w io.Writer, a *alertsv1.Alert) {
	fmt.Fprintf(w, "alert %s: %s %s, %s\n", a.GetId(), severityName(a.GetSeverity()), a.GetKind(), stateName(a.GetState()))
	fmt.Fprintf(w, "  account:  %s\n  owner:    %s\n", accountName(a), dash(a.GetOwner()))
	fmt.Fprintf(w, "  summary:  %s\n", a.GetSummary())
	fmt.Fprintf(w, "  opened:   %s (episode %d, seen %d time(s)); updated %s\n", when(a.GetOpenedAt()), a.GetEpisode(), a.GetCount(), when(a.GetUpdatedAt()))
	if a.GetEscalated() {
		fmt.Fprintln(w, "  escalated: yes")
	}
	if a.GetLink() != "" {
		fmt.Fprintf(w, "  link:     %s\n", a.GetLink())
	}
	fmt.Fprintln(w, "evidence:")
	for _, line := range signals.Evidence(a.GetEvidence()) {
		fmt.Fprintf(w, "  - %s\n", line)
	}
	fmt.Fprintln(w, "lifecycle:")
	for _, s := range a.GetSteps() {
		line := fmt.Sprintf("  %s  %-13s by %s", when(s.GetAt()), s.GetAction(), s.GetBy())
		if s.GetNote() != "" {
			line += ": " + s.GetNote()
		}
		fmt.Fprintln(w, line)
	}
	if len(a.GetDeliveries()) == 0 {
		fmt.Fprintln(w, "deliveries: none (the rule names no channels, or none was due)")
		return
	}
	fmt.Fprintln(w, "deliveries:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  AT\tCHANNEL\tTRIGGER\tATTEMPT\tSTATUS\tCODE\tMS\tDELIVERY ID\tERROR")
	for _, d := range a.GetDeliveries() {
		fmt.Fprintf(tw, "  %s\t%s (%s)\t%s\t%d\t%s\t%d\t%d\t%s\t%s\n", when(d.GetAt()), d.GetChannelId(), dash(d.GetChannelType()), d.GetTrigger(),
			d.GetAttempt(), d.GetStatus(), d.GetCode(), d.GetLatencyMs(), d.GetDeliveryId(), truncateText(d.GetError(), 60))
	}
	_ = tw.Flush()
}

// watchAlerts prints changes until interrupted. When the stream breaks it
// reconnects with backoff and resumes after the last cursor printed, so
// nothing is missed.
func watchAlerts(s *session, client alertsv1.AlertsServiceClient, out, errOut io.Writer, cursor string, replay time.Duration, asJSON bool) error {
	ctx := s.streamCtx
	wait := 500 * time.Millisecond
	for {
		stream, err := client.Watch(ctx, &alertsv1.WatchRequest{Cursor: cursor, ReplaySeconds: int64(replay.Seconds())})
		if err == nil {
			for {
				var resp *alertsv1.WatchResponse
				resp, err = stream.Recv()
				if err != nil {
					break
				}
				wait = 500 * time.Millisecond
				cursor, replay = resp.GetCursor(), 0
				printChange(out, resp, asJSON)
			}
		}
		if ctx.Err() != nil {
			return nil // interrupted
		}
		switch status.Code(err) {
		case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument:
			return s.explain(err)
		}
		if errors.Is(err, io.EOF) {
			err = errors.New("the server closed the stream")
		}
		fmt.Fprintf(errOut, "watch: %v; reconnecting in %s from cursor %q\n", status.Convert(err).Message(), wait, cursor)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(wait*2, 15*time.Second)
	}
}

func printChange(w io.Writer, r *alertsv1.WatchResponse, asJSON bool) {
	if asJSON {
		b, _ := protojson.MarshalOptions{}.Marshal(r)
		fmt.Fprintln(w, string(b))
		return
	}
	a := r.GetAlert()
	fmt.Fprintf(w, "%s  %-13s %-8s %-22s %s  owner %s  [%s]\n", when(a.GetUpdatedAt()), r.GetChange(), severityName(a.GetSeverity()), a.GetKind(),
		accountName(a), dash(a.GetOwner()), a.GetId())
	if r.GetChange() == "opened" || r.GetChange() == "reopened" || r.GetChange() == "escalated" {
		for _, line := range signals.Evidence(a.GetEvidence()) {
			fmt.Fprintf(w, "    - %s\n", line)
		}
	}
	fmt.Fprintf(w, "    cursor %s\n", r.GetCursor())
}

func alertingCommand(env environ) *cobra.Command {
	return group("alerting", "The alerting configuration: channels, rules, escalation", []sub{
		{"get", "Print the configuration in force, secrets redacted (the commented default until one is put)", 0},
		{"put FILE", "Check a configuration file (YAML or JSON; - for standard input) and make it the configuration; <redacted> keeps a secret in force", 1},
	}, func(fs *pflag.FlagSet) func(context.Context, string, []string) error {
		cf := addClientFlags(fs, env)
		return func(ctx context.Context, sub string, pos []string) error {
			s, done, err := dial(ctx, cf, env)
			if err != nil {
				return err
			}
			defer done()
			client := alertsv1.NewAlertsServiceClient(s.conn)
			if sub == "get" {
				resp, err := client.GetConfig(s.ctx, &alertsv1.GetConfigRequest{})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				_, err = io.WriteString(env.stdout, resp.GetSource())
				return err
			}
			src, err := readSource(env, pos[0])
			if err != nil {
				return err
			}
			resp, err := client.PutConfig(s.ctx, &alertsv1.PutConfigRequest{Source: string(src)})
			if err != nil {
				return s.explain(err)
			}
			if resp.GetUnchanged() {
				fmt.Fprintf(env.stdout, "alerting configuration unchanged (version %d)\n", resp.GetVersion())
				return nil
			}
			fmt.Fprintf(env.stdout, "alerting configuration version %d stored\n", resp.GetVersion())
			return nil
		}
	})
}
