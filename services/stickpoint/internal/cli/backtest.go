package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/stickpoint/stickpoint/pkg/specfile"
	"github.com/stickpoint/stickpoint/services/stickpoint/internal/backtest"
)

func backtestCommand(env environ) *cobra.Command {
	return leaf("backtest", "Replay a history through milestone tracking, health scoring and alerting on a simulated clock, and report recall, lead time and false alarms", 0, func(fs *pflag.FlagSet) runner {
		eventsFile := fs.String("events", "", "FILE of the history: Segment calls with their timestamps, one JSON object per line, as stickpoint send reads (- for standard input)")
		journeysFile := fs.String("journeys", "", "FILE of journeys (one or several, apart by ---), as stickpoint journeys put takes")
		modelFile := fs.String("model", "", "FILE of the health model, as stickpoint health model put takes (default: the default model)")
		alertingFile := fs.String("alerting", "", "FILE of the alerting configuration, as stickpoint alerting put takes (default: the default rules); nothing is delivered")
		outcomesFile := fs.String("outcomes", "", "CSV of account,outcome,time (churned or retained); default: churn by the model's churn rule")
		step := fs.String("step", "1h", "how far the simulated clock moves at a time, like 1h or 1d")
		from := fs.String("from", "", "start of the simulated time, like 2026-01-01 (default: the first event)")
		to := fs.String("to", "", "end of the simulated time (default: the last event)")
		asJSON := fs.Bool("json", false, "print the report as JSON")
		alertsOut := fs.String("alerts-out", "", "write every alert change with its simulated time to this file, as JSON lines")
		dataDir := fs.String("data-dir", "", "keep the backtest's data in this folder, to inspect (default: a temporary folder, removed)")
		quiet := fs.Bool("quiet", false, "no progress")
		return func(ctx context.Context, _ []string) error {
			if *eventsFile == "" || *journeysFile == "" {
				return usageError("--events and --journeys are required")
			}
			opts := backtest.Options{Dir: *dataDir}
			d, err := specfile.ParseDuration(*step)
			if err != nil || d < time.Minute {
				return usageError("--step: %q is not a duration of at least 1m, like 1h or 1d", *step)
			}
			opts.Step = d
			for _, t := range []struct {
				flag, value string
				to          *time.Time
			}{{"--from", *from, &opts.From}, {"--to", *to, &opts.To}} {
				if t.value == "" {
					continue
				}
				if *t.to, err = backtest.ParseTime(t.value); err != nil {
					return usageError("%s: %v", t.flag, err)
				}
			}
			if opts.Lines, err = readLines(env, *eventsFile); err != nil {
				return err
			}
			if opts.Journeys, err = os.ReadFile(*journeysFile); err != nil {
				return fmt.Errorf("--journeys: %w", err)
			}
			for _, f := range []struct {
				flag, path string
				to         *[]byte
			}{{"--model", *modelFile, &opts.Model}, {"--alerting", *alertingFile, &opts.Alerting}} {
				if f.path == "" {
					continue
				}
				if *f.to, err = os.ReadFile(f.path); err != nil {
					return fmt.Errorf("%s: %w", f.flag, err)
				}
			}
			if *outcomesFile != "" {
				f, err := os.Open(*outcomesFile)
				if err != nil {
					return fmt.Errorf("--outcomes: %w", err)
				}
				opts.Outcomes, err = backtest.ParseOutcomes(f)
				_ = f.Close()
				if err != nil {
					return err
				}
			}
			if !*quiet {
				var last time.Time
				opts.Progress = func(p backtest.Progress) {
					if time.Since(last) < time.Second && p.At.Before(p.To) {
						return
					}
					last = time.Now()
					fmt.Fprintf(env.stderr, "\rbacktest: at %s, %d/%d events, %d signals, %d alert changes   ",
						p.At.Format("2006-01-02 15:04"), p.Events, p.Total, p.Signals, p.Alert)
					if !p.At.Before(p.To) {
						fmt.Fprintln(env.stderr)
					}
				}
			}
			res, err := backtest.Run(ctx, opts)
			if err != nil {
				return err
			}
			for _, r := range res.Refused[:min(len(res.Refused), 5)] {
				fmt.Fprintf(env.stderr, "  line %d refused: %s\n", r.Line, r.Reason)
			}
			if len(res.Refused) > 5 {
				fmt.Fprintf(env.stderr, "  ... %d lines refused in all\n", len(res.Refused))
			}
			for _, w := range res.Warnings {
				fmt.Fprintln(env.stderr, "  note: "+w)
			}
			if *alertsOut != "" {
				if err := writeAlerts(*alertsOut, res.Alerts); err != nil {
					return err
				}
			}
			if *asJSON {
				enc := json.NewEncoder(env.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(res.Report)
			}
			printReport(env.stdout, res.Report)
			if *alertsOut != "" {
				fmt.Fprintf(env.stdout, "\nEvery alert change, at its simulated time: %s (%d lines)\n", *alertsOut, len(res.Alerts))
			}
			return nil
		}
	})
}

// readLines reads a file's (or standard input's) lines.
func readLines(env environ, path string) ([][]byte, error) {
	r := env.stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("--events: %w", err)
		}
		defer func() { _ = f.Close() }()
		r = f
	}
	var out [][]byte
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		out = append(out, append([]byte(nil), sc.Bytes()...))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--events: line %d: %w", len(out)+1, err)
	}
	return out, nil
}

func writeAlerts(path string, alerts []backtest.AlertEvent) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--alerts-out: %w", err)
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for _, a := range alerts {
		if err := enc.Encode(a); err != nil {
			_ = f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		_ = f.Close()
		return fmt.Errorf("--alerts-out: %w", err)
	}
	return f.Close()
}

func pct(s backtest.Share) string {
	if s.Of == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%%", 100*s.Share)
}

func days(d time.Duration) string {
	return specfile.FormatDuration(d.Truncate(time.Hour))
}

// printReport prints a report for people; README "Backtest" explains
// each figure.
func printReport(w io.Writer, r backtest.Report) {
	fmt.Fprintf(w, "Backtest: %d events, %d accounts, %s to %s, step %s; churn from the %s (took %s)\n",
		r.Events, r.Accounts, r.From.Format(time.DateOnly), r.To.Format(time.DateOnly), r.Step, r.OutcomesFrom, r.Took)
	fmt.Fprintf(w, "%d churned, %d retained\n\n", r.Churned, r.Retained)
	fmt.Fprintf(w, "Recall       %d of %d churned accounts had a risk alert before they churned (%s)\n", r.Recall.Overall.Count, r.Recall.Overall.Of, pct(r.Recall.Overall))
	for _, k := range r.Recall.ByKind {
		fmt.Fprintf(w, "             %-24s %3d  %s\n", k.Kind, k.Count, pct(k.Share))
	}
	if r.Lead.N > 0 {
		fmt.Fprintf(w, "Lead time    first risk alert to churn, over %d churns: p25 %s, median %s, p75 %s\n", r.Lead.N, days(r.Lead.P25), days(r.Lead.Median), days(r.Lead.P75))
	} else {
		fmt.Fprintln(w, "Lead time    no churn had a risk alert before it")
	}
	fmt.Fprintf(w, "False alarms %d of %d retained accounts got a risk alert (%s); %.1f alerts per 100 accounts per month\n",
		r.FalseAlarms.Count, r.FalseAlarms.Of, pct(r.FalseAlarms.Share), r.FalseAlarms.PerHundredAccountsMonth)
	fmt.Fprintf(w, "Precision    %d of %d alerted accounts churned (%s)\n", r.Precision.Count, r.Precision.Of, pct(r.Precision))
	if len(r.AlertsByKind) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(r.AlertsByKind)) {
			parts = append(parts, fmt.Sprintf("%s %d", k, r.AlertsByKind[k]))
		}
		fmt.Fprintf(w, "Alerts       %s\n", strings.Join(parts, ", "))
	}
	fmt.Fprintf(w, "\nWorst misses: %d good-fit churns with no risk alert before them\n", len(r.WorstMisses))
	if len(r.WorstMisses) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tCHURNED\tREASON\tALERTS ONLY AFTER")
	for _, m := range r.WorstMisses[:min(len(r.WorstMisses), 10)] {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Account, m.At.Format("2006-01-02 15:04"), orDash(m.Reason), orDash(strings.Join(m.Later, ", ")))
	}
	_ = tw.Flush()
	if len(r.WorstMisses) > 10 {
		fmt.Fprintf(w, "... and %d more (--json lists them all)\n", len(r.WorstMisses)-10)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
