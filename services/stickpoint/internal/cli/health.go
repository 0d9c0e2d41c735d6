package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/stickpoint/stickpoint/pkg/specfile"
	accountsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/accounts/v1"
	healthv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/health/v1"
)

func accountsCommand(env environ) *cobra.Command {
	return group("accounts", "The tenant's customer accounts", []sub{
		{"get ACCOUNT", "One account: health and why, cancel intent, onboarding, fit, owner, traits", 1},
		{"list", "Accounts, filtered by risk, band, fit, onboarding status, owner or traits", 0},
		{"usage ACCOUNT", "An account's usage per UTC day", 1},
	}, func(fs *pflag.FlagSet) func(context.Context, string, []string) error {
		cf := addClientFlags(fs, env)
		statusFlag := fs.String("status", "", "only this onboarding status (list)")
		owner := fs.String("owner", "", "only accounts owned by this CSM (list)")
		traits := fs.StringArray("trait", nil, "only accounts with this trait, key=value (repeatable) (list)")
		band := fs.String("band", "", "only this health band: red, yellow, green (list)")
		fit := fs.String("fit", "", "only this fit: good, stretch, bad (list)")
		atRisk := fs.Bool("at-risk", false, "only accounts at risk: health red, cancel intent, or onboarding late or stalled (list)")
		expansion := fs.Bool("expansion-ready", false, "only green accounts heading up with active users near their seats (list)")
		intent := fs.Bool("cancel-intent", false, "only accounts with cancel intent over the threshold (list)")
		sortBy := fs.String("sort", "id", "id, health (lowest first) or change (largest drop first) (list)")
		limit := fs.Int("limit", 100, "at most this many accounts (list)")
		days := fs.Int32("days", 30, "how many days, ending today (usage)")
		return func(ctx context.Context, sub string, pos []string) error {
			sorts := map[string]accountsv1.Sort{"id": accountsv1.Sort_SORT_UNSPECIFIED, "health": accountsv1.Sort_SORT_HEALTH, "change": accountsv1.Sort_SORT_CHANGE}
			order, ok := sorts[*sortBy]
			if !ok {
				return usageError("--sort %q is not id, health or change", *sortBy)
			}
			s, done, err := dial(ctx, cf, env)
			if err != nil {
				return err
			}
			defer done()
			client := accountsv1.NewAccountsServiceClient(s.conn)
			switch sub {
			case "get":
				resp, err := client.Get(s.ctx, &accountsv1.GetRequest{AccountId: pos[0]})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				printAccount(env.stdout, resp.GetAccount())
				return nil
			case "usage":
				resp, err := client.Usage(s.ctx, &accountsv1.UsageRequest{AccountId: pos[0], Days: *days})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "DAY\tEVENTS\tUSERS\tTOP EVENTS")
				for _, d := range resp.GetDays() {
					fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", d.GetDay().AsTime().Format(time.DateOnly), d.GetEvents(), d.GetActiveUsers(), topEvents(d.GetByEvent(), 3))
				}
				return tw.Flush()
			}
			out := &accountsv1.ListResponse{}
			out.Accounts, out.NextPageToken, err = collectPages(*limit, func(size int32, token string) ([]*accountsv1.Account, string, error) {
				resp, err := client.List(s.ctx, &accountsv1.ListRequest{OnboardingStatus: *statusFlag, Owner: *owner, TraitEquals: *traits,
					Band: *band, Fit: *fit, AtRisk: *atRisk, ExpansionReady: *expansion, CancelIntent: *intent, Sort: order,
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
			fmt.Fprintln(tw, "ACCOUNT\tHEALTH\tINTENT\tONBOARDING\tFIT\tOWNER\tLAST EVENT\tAT RISK BECAUSE")
			for _, a := range out.GetAccounts() {
				fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\n", a.GetId(), healthCell(a.GetHealth()), a.GetCancelIntent().GetScore(),
					dash(a.GetOnboardingStatus()), dash(a.GetFit()), dash(a.GetOwner()), when(a.GetLastEventAt()), dash(strings.Join(a.GetAtRiskBecause(), ", ")))
			}
			return tw.Flush()
		}
	})
}

func healthCell(h *accountsv1.AccountHealth) string {
	if h == nil {
		return "-"
	}
	return fmt.Sprintf("%d %s", h.GetScore(), h.GetBand())
}

func topEvents(by map[string]int64, n int) string {
	type kv struct {
		k string
		v int64
	}
	var all []kv
	for k, v := range by {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v || (all[i].v == all[j].v && all[i].k < all[j].k) })
	var parts []string
	for _, e := range all[:min(n, len(all))] {
		parts = append(parts, fmt.Sprintf("%s %d", e.k, e.v))
	}
	return strings.Join(parts, ", ")
}

// printAccount writes an account for people: why first, then the detail.
func printAccount(w io.Writer, a *accountsv1.Account) {
	h := a.GetHealth()
	fmt.Fprintf(w, "account: %s\n", a.GetId())
	fmt.Fprintf(w, "health: %s", healthCell(h))
	if h.GetChange() != 0 {
		fmt.Fprintf(w, " (%+d)", h.GetChange())
	}
	fmt.Fprintln(w)
	if a.GetAtRisk() {
		fmt.Fprintf(w, "at risk: %s\n", strings.Join(a.GetAtRiskBecause(), ", "))
	}
	if a.GetExpansionReady() {
		fmt.Fprintln(w, "expansion ready: yes")
	}
	if len(h.GetSummary()) > 1 {
		fmt.Fprintln(w, "why:")
		for _, line := range h.GetSummary()[1:] {
			fmt.Fprintf(w, "  - %s\n", line)
		}
	}
	ci := a.GetCancelIntent()
	fmt.Fprintf(w, "cancel intent: %.0f of threshold %.0f\n", ci.GetScore(), ci.GetThreshold())
	fmt.Fprintln(w, "components:")
	for _, c := range h.GetComponents() {
		if c.GetPresent() {
			fmt.Fprintf(w, "  %-11s %3d  (weight %d) %s\n", c.GetName(), c.GetScore(), c.GetWeight(), c.GetInputs())
		} else {
			fmt.Fprintf(w, "  %-11s   -  (left out) %s\n", c.GetName(), c.GetInputs())
		}
	}
	if v := a.GetSuccessVector(); v != nil {
		fmt.Fprintf(w, "success vector: %d milestones in the last 30 days (%+d against the 30 before), health %+.2f points/day\n",
			v.GetMilestonesLast_30D(), v.GetMilestonesChange(), v.GetHealthSlope())
	}
	fmt.Fprintf(w, "fit: %s\n", dash(a.GetFit()))
	fmt.Fprintf(w, "onboarding: %s\n", dash(strings.TrimSpace(a.GetOnboardingStatus()+" "+journeyNote(a.GetJourneyId()))))
	fmt.Fprintf(w, "owner: %s\n", dash(a.GetOwner()))
	fmt.Fprintf(w, "users: %d active of %d seats\n", h.GetActiveUsers(), h.GetSeats())
	if a.GetChurnedAt() != nil {
		fmt.Fprintf(w, "churned: %s\n", when(a.GetChurnedAt()))
	}
	fmt.Fprintf(w, "start: %s\n", when(a.GetStart()))
	fmt.Fprintf(w, "first event: %s\n", when(a.GetFirstEventAt()))
	fmt.Fprintf(w, "last event: %s\n", when(a.GetLastEventAt()))
	fields := a.GetTraits().GetFields()
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintln(w, "traits:")
	for _, k := range keys {
		b, _ := fields[k].MarshalJSON()
		fmt.Fprintf(w, "  %s: %s\n", k, b)
	}
}

func healthCommand(env environ) *cobra.Command {
	return group("health", "Account health, its history, CSM sentiment, and the scoring model", []sub{
		{"get ACCOUNT", "An account's health: score, band, components with their inputs, cancel intent", 1},
		{"history ACCOUNT", "An account's score changes, newest first", 1},
		{"model get|put [FILE]", "get: print the scoring model in force (the commented default until one is put); put FILE: check a model file (YAML or JSON; - for standard input), make it the model, and rescore every account", -1},
		{"sentiment ACCOUNT", "Set a CSM's sentiment about an account (--score, --note, --expires)", 1},
	}, func(fs *pflag.FlagSet) func(context.Context, string, []string) error {
		cf := addClientFlags(fs, env)
		scoreFlag := fs.Int32("score", -1, "sentiment score, 0-100 (sentiment)")
		note := fs.String("note", "", "what the sentiment is based on (sentiment)")
		expires := fs.String("expires", "30d", "how long the sentiment counts, like 30d (sentiment)")
		limit := fs.Int32("limit", 100, "at most this many entries (history)")
		return func(ctx context.Context, sub string, pos []string) error {
			if sub == "model" && (len(pos) == 0 || pos[0] != "get" && pos[0] != "put") {
				return usageError("health model takes get or put, not %q", pos[0])
			}
			if sub == "model" && (pos[0] == "put") != (len(pos) == 2) || len(pos) > 2 {
				return usageError("health model get takes no FILE; health model put takes one")
			}
			s, done, err := dial(ctx, cf, env)
			if err != nil {
				return err
			}
			defer done()
			client := healthv1.NewHealthServiceClient(s.conn)
			switch sub {
			case "get":
				resp, err := accountsv1.NewAccountsServiceClient(s.conn).Get(s.ctx, &accountsv1.GetRequest{AccountId: pos[0]})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				printAccount(env.stdout, resp.GetAccount())
				return nil
			case "history":
				resp, err := client.History(s.ctx, &healthv1.HistoryRequest{AccountId: pos[0], Limit: *limit})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "AT\tSCORE\tBAND\tINTENT\tCOMPONENTS")
				for _, e := range resp.GetEntries() {
					var parts []string
					for _, c := range e.GetComponents() {
						if c.GetPresent() {
							parts = append(parts, fmt.Sprintf("%s %d", c.GetName(), c.GetScore()))
						}
					}
					fmt.Fprintf(tw, "%s\t%d\t%s\t%.0f\t%s\n", when(e.GetAt()), e.GetScore(), e.GetBand(), e.GetCancelIntent(), strings.Join(parts, ", "))
				}
				return tw.Flush()
			case "sentiment":
				if *scoreFlag < 0 || *scoreFlag > 100 {
					return usageError("--score takes 0 to 100")
				}
				d, err := specfile.ParseDuration(*expires)
				if err != nil {
					return usageError("--expires: %v", err)
				}
				resp, err := client.PutSentiment(s.ctx, &healthv1.PutSentimentRequest{AccountId: pos[0], Score: *scoreFlag, Note: *note, ExpiresInSeconds: int64(d / time.Second)})
				if err != nil {
					return s.explain(err)
				}
				fmt.Fprintf(env.stdout, "sentiment %d set on %s until %s; the account is rescored\n", *scoreFlag, pos[0], when(resp.GetExpiresAt()))
				return nil
			}
			if pos[0] == "get" {
				resp, err := client.GetModel(s.ctx, &healthv1.GetModelRequest{})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				_, err = io.WriteString(env.stdout, resp.GetSource())
				return err
			}
			src, err := readSource(env, pos[1])
			if err != nil {
				return err
			}
			resp, err := client.PutModel(s.ctx, &healthv1.PutModelRequest{Source: string(src)})
			if err != nil {
				return s.explain(err)
			}
			if resp.GetUnchanged() {
				fmt.Fprintf(env.stdout, "health model unchanged (version %d)\n", resp.GetVersion())
				return nil
			}
			fmt.Fprintf(env.stdout, "health model version %d stored; every account is being rescored\n", resp.GetVersion())
			return nil
		}
	})
}

func churnCommand(env environ) *cobra.Command {
	return group("churn", "Churned accounts: were they foreseen, and how early", []sub{
		{"report", "The share of churns foreseen and the median lead time, overall and by fit; the worst misses", 0},
	}, func(fs *pflag.FlagSet) func(context.Context, string, []string) error {
		cf := addClientFlags(fs, env)
		since := fs.String("since", "90d", "churns within this long, like 90d")
		return func(ctx context.Context, _ string, _ []string) error {
			d, err := specfile.ParseDuration(*since)
			if err != nil {
				return usageError("--since: %v", err)
			}
			s, done, err := dial(ctx, cf, env)
			if err != nil {
				return err
			}
			defer done()
			resp, err := healthv1.NewHealthServiceClient(s.conn).ChurnReport(s.ctx, &healthv1.ChurnReportRequest{SinceSeconds: int64(d / time.Second)})
			if err != nil {
				return s.explain(err)
			}
			if *cf.asJSON {
				return s.printJSON(resp)
			}
			w := env.stdout
			stats := func(name string, st *healthv1.ChurnStats) {
				fmt.Fprintf(w, "%-12s %d churns, %d foreseen (%.0f%%)", name, st.GetChurns(), st.GetForeseen(), 100*st.GetForeseenShare())
				if st.GetForeseen() > 0 {
					fmt.Fprintf(w, ", median lead time %s", specfile.FormatDuration((time.Duration(st.GetMedianLeadTimeSeconds()) * time.Second).Truncate(time.Minute)))
				}
				fmt.Fprintln(w)
			}
			fmt.Fprintf(w, "churns in the last %s\n", *since)
			stats("overall", resp.GetOverall())
			for _, f := range []string{"good", "stretch", "bad"} {
				stats(f+" fit", resp.GetByFit()[f])
			}
			if len(resp.GetRecords()) > 0 {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "\nACCOUNT\tCHURNED\tFIT\tREASON\tFORESEEN\tLEAD TIME\tFIRST RISK")
				for _, r := range resp.GetRecords() {
					c := r.GetChurn()
					foreseen, lead := "no", "-"
					if c.GetForeseen() {
						foreseen, lead = "yes", specfile.FormatDuration((time.Duration(c.GetLeadTimeSeconds()) * time.Second).Truncate(time.Minute))
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.GetAccountId(), when(c.GetChurnedAt()), c.GetFit(), dash(c.GetReason()), foreseen, lead, dash(c.GetFirstRiskKind()))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			if len(resp.GetWorst()) > 0 {
				fmt.Fprintln(w, "\nworst misses (good fit, not foreseen):")
				for _, r := range resp.GetWorst() {
					fmt.Fprintf(w, "  %s churned %s\n", r.GetAccountId(), when(r.GetChurn().GetChurnedAt()))
				}
			}
			return nil
		}
	})
}

// usageError is a usage mistake (exit code 2), said as format says.
func usageError(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, errUsage)...)
}
