package backtest

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// Month is the month of "alerts per 100 accounts per month".
const Month = 30 * 24 * time.Hour

// Changes of an alert that reach its owner: an opening and a reopening.
const (
	ChangeOpened   = "opened"
	ChangeReopened = "reopened"
)

// notRisk are the alert kinds that do not foresee a churn: the churn
// itself, and a cancellation request, which is the customer saying so.
var notRisk = []string{"churn_recorded", "cancellation_requested", "cancel_intent_cleared", "milestone_reached",
	"onboarding_completed", "onboarding_on_track"}

// IsRisk reports whether an alert of kind foresees a churn.
func IsRisk(kind string) bool { return !slices.Contains(notRisk, kind) }

// AlertEvent is one change of an alert, at its simulated time.
type AlertEvent struct {
	At       time.Time `json:"at"`
	AlertID  string    `json:"alert_id"`
	Account  string    `json:"account_id"`
	Kind     string    `json:"kind"`
	Change   string    `json:"change"`
	Severity string    `json:"severity"`
	Owner    string    `json:"owner,omitempty"`
	Summary  string    `json:"summary"`
	// Evidence is the signal behind the alert, in words.
	Evidence []string `json:"evidence,omitempty"`
	// Notify are the channels the change would have been sent to.
	Notify []string `json:"would_notify,omitempty"`
}

// Outcome is an account's outcome: churned at a time, or retained.
type Outcome struct {
	Churned bool
	At      time.Time
	Reason  string
}

// Account is what the report knows of an account.
type Account struct {
	ID  string
	Fit string
}

// Inputs are what a report is computed from.
type Inputs struct {
	From, To time.Time
	Accounts []Account
	// Outcomes by account; an account without one is retained.
	Outcomes map[string]Outcome
	Alerts   []AlertEvent
}

// Report is a backtest's result.
type Report struct {
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	Step     string    `json:"step"`
	Events   int       `json:"events"`
	Refused  int       `json:"refused_lines"`
	Accounts int       `json:"accounts"`
	Churned  int       `json:"churned"`
	Retained int       `json:"retained"`
	// OutcomesFrom says where churn came from: "outcomes file" or "churn rule".
	OutcomesFrom string `json:"outcomes_from"`

	Recall      Recall      `json:"recall"`
	Lead        Lead        `json:"lead_time"`
	FalseAlarms FalseAlarms `json:"false_alarms"`
	Precision   Share       `json:"precision"`
	WorstMisses []Miss      `json:"worst_misses"`
	// AlertsByKind counts alert openings and reopenings, by kind.
	AlertsByKind map[string]int `json:"alerts_by_kind"`
	// SignalsByKind counts the signals emitted, by kind.
	SignalsByKind map[string]int `json:"signals_by_kind"`
	// Took is how long the backtest ran (wall time).
	Took string `json:"took"`
}

// Share is a count of a whole, and its fraction.
type Share struct {
	Count int     `json:"count"`
	Of    int     `json:"of"`
	Share float64 `json:"share"`
}

func shareOf(n, of int) Share {
	s := Share{Count: n, Of: of}
	if of > 0 {
		s.Share = float64(n) / float64(of)
	}
	return s
}

// Recall is the share of churned accounts with a risk alert before they
// churned, overall and by the kind of alert.
type Recall struct {
	Overall Share  `json:"overall"`
	ByKind  []Kind `json:"by_kind"`
}

// Kind is a share for one alert kind.
type Kind struct {
	Kind string `json:"kind"`
	Share
}

// Lead is the time from an account's first risk alert to its churn, over
// the churns that had one: nearest-rank percentiles.
type Lead struct {
	N      int           `json:"n"`
	P25    time.Duration `json:"p25_ns"`
	Median time.Duration `json:"median_ns"`
	P75    time.Duration `json:"p75_ns"`
}

// FalseAlarms are the retained accounts that got a risk alert, and the
// load of alerts on CSMs.
type FalseAlarms struct {
	Share
	// PerHundredAccountsMonth is alert openings and reopenings, of every
	// kind but churn_recorded, per 100 accounts per 30 days.
	PerHundredAccountsMonth float64 `json:"alerts_per_100_accounts_per_month"`
}

// Miss is a good-fit churn no risk alert came before.
type Miss struct {
	Account string    `json:"account_id"`
	At      time.Time `json:"churned_at"`
	Reason  string    `json:"reason,omitempty"`
	// Later are the alert kinds that came only at or after the churn.
	Later []string `json:"alerts_after,omitempty"`
}

// Compute is the report of a backtest's alerts against the outcomes. It is
// pure: the same inputs give the same report.
func Compute(in Inputs) Report {
	r := Report{From: in.From, To: in.To, Accounts: len(in.Accounts), AlertsByKind: map[string]int{},
		Recall: Recall{ByKind: []Kind{}}, WorstMisses: []Miss{}} // [] in JSON, not null
	// Each account's alert openings, oldest first.
	opened := map[string][]AlertEvent{}
	openings := 0
	for _, a := range in.Alerts {
		if a.Change != ChangeOpened && a.Change != ChangeReopened {
			continue
		}
		opened[a.Account] = append(opened[a.Account], a)
		if a.Kind != "churn_recorded" {
			r.AlertsByKind[a.Kind]++
			openings++
		}
	}
	for _, evs := range opened {
		sort.SliceStable(evs, func(i, j int) bool { return evs[i].At.Before(evs[j].At) })
	}
	kinds := map[string]int{} // churned accounts alerted in time, by kind
	var leads []time.Duration
	alertedChurned, alertedRetained := 0, 0
	for _, acc := range in.Accounts {
		o := in.Outcomes[acc.ID]
		if !o.Churned {
			r.Retained++
			if slices.ContainsFunc(opened[acc.ID], func(a AlertEvent) bool { return IsRisk(a.Kind) }) {
				alertedRetained++
			}
			continue
		}
		r.Churned++
		var first *AlertEvent
		seen := map[string]bool{}
		var later []string
		for i, a := range opened[acc.ID] {
			if !a.At.Before(o.At) {
				if !slices.Contains(later, a.Kind) {
					later = append(later, a.Kind)
				}
				continue
			}
			if !seen[a.Kind] {
				seen[a.Kind] = true
				kinds[a.Kind]++
			}
			if first == nil && IsRisk(a.Kind) {
				first = &opened[acc.ID][i]
			}
		}
		if first != nil {
			alertedChurned++
			leads = append(leads, o.At.Sub(first.At))
		} else if acc.Fit == "good" {
			r.WorstMisses = append(r.WorstMisses, Miss{Account: acc.ID, At: o.At, Reason: o.Reason, Later: later})
		}
	}
	r.Recall.Overall = shareOf(alertedChurned, r.Churned)
	for k, n := range kinds {
		r.Recall.ByKind = append(r.Recall.ByKind, Kind{Kind: k, Share: shareOf(n, r.Churned)})
	}
	sort.Slice(r.Recall.ByKind, func(i, j int) bool {
		a, b := r.Recall.ByKind[i], r.Recall.ByKind[j]
		return a.Count > b.Count || (a.Count == b.Count && a.Kind < b.Kind)
	})
	slices.Sort(leads)
	r.Lead = Lead{N: len(leads), P25: percentile(leads, 0.25), Median: percentile(leads, 0.5), P75: percentile(leads, 0.75)}
	r.FalseAlarms.Share = shareOf(alertedRetained, r.Retained)
	if months := float64(in.To.Sub(in.From)) / float64(Month); len(in.Accounts) > 0 && months > 0 {
		r.FalseAlarms.PerHundredAccountsMonth = float64(openings) / (float64(len(in.Accounts)) / 100) / months
	}
	r.Precision = shareOf(alertedChurned, alertedChurned+alertedRetained)
	sort.Slice(r.WorstMisses, func(i, j int) bool {
		a, b := r.WorstMisses[i], r.WorstMisses[j]
		return a.At.Before(b.At) || (a.At.Equal(b.At) && a.Account < b.Account)
	})
	return r
}

// percentile is the nearest-rank percentile of sorted values: the value
// at rank ceil(p*n).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p * float64(len(sorted))))
	return sorted[max(rank, 1)-1]
}

// ParseOutcomes reads an outcomes file: CSV with the header
// account,outcome,time; the outcome churned or retained; the time an
// RFC 3339 time or a date, required for a churn. Errors name the line.
func ParseOutcomes(r io.Reader) (map[string]Outcome, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	out := map[string]Outcome{}
	for line := 1; ; line++ {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("outcomes: %w", err)
		}
		if line == 1 {
			if len(rec) < 2 || strings.TrimSpace(rec[0]) != "account" || strings.TrimSpace(rec[1]) != "outcome" {
				return nil, fmt.Errorf("outcomes: line 1: the header must be account,outcome,time (got %q)", strings.Join(rec, ","))
			}
			continue
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		if len(rec) < 2 || strings.TrimSpace(rec[0]) == "" {
			return nil, fmt.Errorf("outcomes: line %d: want account,outcome,time", line)
		}
		id, what := strings.TrimSpace(rec[0]), strings.TrimSpace(rec[1])
		var at string
		if len(rec) > 2 {
			at = strings.TrimSpace(rec[2])
		}
		switch what {
		case "retained":
			out[id] = Outcome{}
		case "churned":
			t, err := parseTime(at)
			if err != nil {
				return nil, fmt.Errorf("outcomes: line %d: time: %w", line, err)
			}
			out[id] = Outcome{Churned: true, At: t}
		default:
			return nil, fmt.Errorf("outcomes: line %d: outcome %q is neither churned nor retained", line, what)
		}
	}
	return out, nil
}

// parseTime reads an RFC 3339 time or a date (midnight UTC).
func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, fmt.Errorf("required for a churn, as 2026-03-01 or 2026-03-01T12:00:00Z")
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is not a time like 2026-03-01 or 2026-03-01T12:00:00Z", s)
}

// ParseTime reads a --from or --to: an RFC 3339 time or a date.
func ParseTime(s string) (time.Time, error) { return parseTime(s) }
