// Package score is health and cancel intent as pure functions of an
// account's usage rollups, its cancel-intent events, its traits, its
// onboarding status, its CSM sentiment and the clock. Every component
// says, in words, which inputs made it; a component without inputs is
// left out and the others' weights re-normalised, never counted as zero.
package score

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/stickpoint/stickpoint/pkg/specfile"
	"github.com/stickpoint/stickpoint/services/health/internal/model"
)

// DayUsage is one rollup row: an account's events of one type and name on
// one UTC day, each messageId once, and the users who sent them.
type DayUsage struct {
	Day    time.Time
	Type   string
	Name   string
	Events int
	Users  []string
}

// Norms are the tenant's median active account over the window.
type Norms struct {
	ActiveDays float64
	Events     float64
}

// Hit is one event that matched a cancel-intent signal.
type Hit struct {
	Signal    string    `json:"signal"`
	At        time.Time `json:"at"`
	User      string    `json:"user,omitempty"`
	MessageID string    `json:"message_id"`
}

// Sentiment is a CSM's sentiment about an account.
type Sentiment struct {
	Score     int       `json:"score"`
	Note      string    `json:"note"`
	Author    string    `json:"author"`
	SetAt     time.Time `json:"set_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Inputs are everything an account's health depends on.
type Inputs struct {
	// Usage is the account's rollup rows; rows outside the spans the
	// model looks at are ignored.
	Usage []DayUsage
	// FirstEvent bounds the baseline: days before it are not "no usage".
	FirstEvent time.Time
	// Seats is the licensed seats trait; 0 when unknown.
	Seats float64
	// Onboarding is the onboarding status; "" when no journey applies.
	Onboarding string
	Hits       []Hit
	Sentiment  *Sentiment
	Norms      Norms
}

// Component is one part of health.
type Component struct {
	Name    string `json:"name"`
	Weight  int    `json:"weight"`
	Score   int    `json:"score"`
	Present bool   `json:"present"`
	// Inputs says what made the score, or why it is left out.
	Inputs string `json:"inputs"`
}

// Intent is the cancel-intent score and what makes it.
type Intent struct {
	Score     float64        `json:"score"`
	Threshold float64        `json:"threshold"`
	Signals   []IntentSignal `json:"signals,omitempty"`
}

// Over reports whether the score reaches the threshold.
func (i Intent) Over() bool { return i.Threshold > 0 && i.Score >= i.Threshold }

// IntentSignal is one signal's part of the cancel-intent score.
type IntentSignal struct {
	ID           string  `json:"id"`
	Name         string  `json:"name"`
	Contribution float64 `json:"contribution"`
	Share        float64 `json:"share"`
	// Hits are its events, newest first; empty for a computed signal.
	Hits []Hit `json:"hits,omitempty"`
	// Detail says why a computed signal is on.
	Detail string `json:"detail,omitempty"`
}

// Health is an account's score, band, components and cancel intent.
type Health struct {
	Score      int         `json:"score"`
	Band       string      `json:"band"`
	Components []Component `json:"components"`
	Intent     Intent      `json:"intent"`
	// ActiveUsers is the distinct users in the window.
	ActiveUsers int `json:"active_users"`
}

// Component returns the named component.
func (h Health) Component(name string) (Component, bool) {
	for _, c := range h.Components {
		if c.Name == name {
			return c, true
		}
	}
	return Component{}, false
}

// days is the UTC days [from, to], midnight to midnight.
type days struct{ from, to time.Time }

func (d days) has(t time.Time) bool { return !t.Before(d.from) && !t.After(d.to) }

// count is the number of days in the span.
func (d days) count() float64 { return float64(d.to.Sub(d.from)/specfile.Day) + 1 }

// lastDays is the n UTC days ending with today.
func lastDays(today time.Time, n time.Duration) days {
	return days{from: today.Add(-(n/specfile.Day - 1) * specfile.Day), to: today}
}

// Compute scores an account at now.
func Compute(m model.Model, in Inputs, now time.Time) Health {
	h := m.Health
	today := now.UTC().Truncate(specfile.Day)
	window := lastDays(today, h.Window)
	trend := trendOf(h, in, today)
	intent := intentOf(m, in, trend, now)
	comps := make([]Component, 0, len(model.ComponentNames))
	for _, name := range model.ComponentNames {
		if h.Weights[name] == 0 {
			continue
		}
		c := Component{Name: name, Weight: h.Weights[name]}
		switch name {
		case model.Adoption:
			c.Score, c.Present, c.Inputs = adoption(h.KeyFeatures, in.Usage, window)
		case model.Engagement:
			c.Score, c.Present, c.Inputs = engagement(in.Usage, window, in.Norms)
		case model.Users:
			c.Score, c.Present, c.Inputs = users(in.Usage, window, in.Seats, h.SeatsTrait)
		case model.Trend:
			c.Score, c.Present, c.Inputs = trend.score, trend.present, trend.words
		case model.Milestones:
			c.Score, c.Present, c.Inputs = milestones(in.Onboarding)
		case model.Risk:
			c.Score, c.Present, c.Inputs = risk(intent)
		case model.Sentiment:
			c.Score, c.Present, c.Inputs = sentiment(in.Sentiment, now)
		}
		comps = append(comps, c)
	}
	total, weights := 0.0, 0
	for _, c := range comps {
		if c.Present {
			total += float64(c.Weight * c.Score)
			weights += c.Weight
		}
	}
	out := Health{Components: comps, Intent: intent, ActiveUsers: len(activeUsers(in.Usage, window))}
	if weights > 0 {
		out.Score = int(math.Round(total / float64(weights)))
	}
	out.Band = Band(h, out.Score)
	return out
}

// Band is the band of a score.
func Band(h model.Health, score int) string {
	switch {
	case score < h.Red:
		return model.Red
	case score < h.Yellow:
		return model.Yellow
	}
	return model.Green
}

func percent(x float64) int { return int(math.Round(100 * math.Min(1, math.Max(0, x)))) }

func adoption(features []string, usage []DayUsage, window days) (int, bool, string) {
	if len(features) == 0 {
		return 0, false, "no key features in the model"
	}
	var used, unused []string
	for _, f := range features {
		if slices.ContainsFunc(usage, func(u DayUsage) bool { return u.Name == f && u.Type == "track" && u.Events > 0 && window.has(u.Day) }) {
			used = append(used, f)
		} else {
			unused = append(unused, f)
		}
	}
	words := fmt.Sprintf("used %d of %d key features in %s", len(used), len(features), specfile.FormatDuration(window.to.Sub(window.from)+specfile.Day))
	if len(used) > 0 {
		words += ": " + strings.Join(used, ", ")
	}
	if len(unused) > 0 {
		words += "; not used: " + strings.Join(unused, ", ")
	}
	return percent(float64(len(used)) / float64(len(features))), true, words
}

func engagement(usage []DayUsage, window days, norms Norms) (int, bool, string) {
	if norms.ActiveDays <= 0 || norms.Events <= 0 {
		return 0, false, "no active account in the tenant to compare with"
	}
	active := map[time.Time]bool{}
	events := 0
	for _, u := range usage {
		if window.has(u.Day) {
			active[u.Day] = true
			events += u.Events
		}
	}
	s := percent((math.Min(1, float64(len(active))/norms.ActiveDays) + math.Min(1, float64(events)/norms.Events)) / 2)
	return s, true, fmt.Sprintf("active %d of %d days with %d events; the tenant's median account: %s days, %s events",
		len(active), int(window.count()), events, trim(norms.ActiveDays), trim(norms.Events))
}

func trim(f float64) string { return strings.TrimSuffix(fmt.Sprintf("%.1f", f), ".0") }

func activeUsers(usage []DayUsage, window days) map[string]bool {
	out := map[string]bool{}
	for _, u := range usage {
		if window.has(u.Day) {
			for _, id := range u.Users {
				out[id] = true
			}
		}
	}
	return out
}

func users(usage []DayUsage, window days, seats float64, trait string) (int, bool, string) {
	if seats <= 0 {
		return 0, false, fmt.Sprintf("no seats: the account has no %q trait above 0", trait)
	}
	n := len(activeUsers(usage, window))
	return percent(float64(n) / seats), true, fmt.Sprintf("%d active users of %s seats", n, trim(seats))
}

// trendResult is recent usage against the account's own baseline.
type trendResult struct {
	score            int
	present          bool
	recent, baseline float64 // events per day
	words            string
}

// minBaselineDays is the least history a baseline needs.
const minBaselineDays = 7

// trendOf compares whole UTC days: the Recent days before today against
// the Baseline days before them (today is partial, and would read as a
// drop every morning).
func trendOf(h model.Health, in Inputs, today time.Time) trendResult {
	recent := lastDays(today.Add(-specfile.Day), h.Recent)
	base := days{from: recent.from.Add(-h.Baseline), to: recent.from.Add(-specfile.Day)}
	first := in.FirstEvent.UTC().Truncate(specfile.Day)
	if !in.FirstEvent.IsZero() && first.After(base.from) {
		base.from = first
	}
	if base.to.Before(base.from) || base.count() < minBaselineDays {
		return trendResult{words: fmt.Sprintf("no baseline yet: under %d days of usage before the %s before today", minBaselineDays, specfile.FormatDuration(h.Recent))}
	}
	var r, b float64
	for _, u := range in.Usage {
		switch {
		case recent.has(u.Day):
			r += float64(u.Events)
		case base.has(u.Day):
			b += float64(u.Events)
		}
	}
	t := trendResult{recent: r / recent.count(), baseline: b / base.count(), present: true}
	if t.baseline == 0 {
		return trendResult{words: fmt.Sprintf("no baseline: no usage in the %d days before the %s before today", int(base.count()), specfile.FormatDuration(h.Recent))}
	}
	ratio := t.recent / t.baseline
	t.score = percent(ratio)
	t.words = fmt.Sprintf("%s before today: %s events/day against %s in the %d days before (%d%%)",
		specfile.FormatDuration(h.Recent), trim(t.recent), trim(t.baseline), int(base.count()), int(math.Round(100*ratio)))
	return t
}

// onboardingScores are the milestones component's scores by status.
var onboardingScores = map[string]int{"completed": 100, "on_track": 100, "at_risk": 60, "late": 30, "stalled": 0}

func milestones(status string) (int, bool, string) {
	s, ok := onboardingScores[status]
	if !ok {
		return 0, false, "no journey applies to the account"
	}
	return s, true, "onboarding " + strings.ReplaceAll(status, "_", " ")
}

// risk is the cancel-intent penalty: 100 with no intent, 0 at the threshold.
func risk(i Intent) (int, bool, string) {
	s := percent(1 - i.Score/i.Threshold)
	if len(i.Signals) == 0 {
		return s, true, "no cancel-intent signals"
	}
	var names []string
	for _, sig := range i.Signals {
		names = append(names, sig.Name)
	}
	return s, true, fmt.Sprintf("cancel-intent score %s of threshold %s: %s", trim(i.Score), trim(i.Threshold), strings.Join(names, "; "))
}

func sentiment(s *Sentiment, now time.Time) (int, bool, string) {
	if s == nil {
		return 0, false, "no CSM sentiment"
	}
	if !now.Before(s.ExpiresAt) {
		return 0, false, fmt.Sprintf("CSM sentiment by %s expired on %s", s.Author, s.ExpiresAt.Format(time.DateOnly))
	}
	words := fmt.Sprintf("CSM sentiment %d by %s, until %s", s.Score, s.Author, s.ExpiresAt.Format(time.DateOnly))
	if s.Note != "" {
		words += fmt.Sprintf(": %q", s.Note)
	}
	return s.Score, true, words
}

// intentOf sums the cancel-intent signals: each event adds its signal's
// weight halved every half-life of its age, one signal at most twice its
// weight; a computed signal adds its weight while it is on.
func intentOf(m model.Model, in Inputs, t trendResult, now time.Time) Intent {
	out := Intent{Threshold: m.CancelIntent.Threshold}
	for _, sig := range m.CancelIntent.Signals {
		is := IntentSignal{ID: sig.ID, Name: sig.Name}
		if sig.Computed == model.ComputedUsageDrop {
			if !t.present || t.recent > (1-sig.Drop)*t.baseline {
				continue
			}
			is.Contribution = sig.Weight
			is.Detail = fmt.Sprintf("%s events/day in the %s before today against a baseline of %s (%d%% lower; on from %d%%)",
				trim(t.recent), specfile.FormatDuration(m.Health.Recent), trim(t.baseline), int(math.Round(100*(1-t.recent/t.baseline))), int(math.Round(100*sig.Drop)))
		} else {
			for _, hit := range in.Hits {
				if hit.Signal != sig.ID || hit.At.After(now) {
					continue
				}
				is.Contribution += sig.Weight * math.Pow(0.5, float64(now.Sub(hit.At))/float64(sig.HalfLife))
				is.Hits = append(is.Hits, hit)
			}
			is.Contribution = math.Min(is.Contribution, 2*sig.Weight)
			if is.Contribution < 0.05 {
				continue
			}
			sort.Slice(is.Hits, func(i, j int) bool { return is.Hits[i].At.After(is.Hits[j].At) })
		}
		is.Contribution = math.Round(is.Contribution*10) / 10
		out.Score += is.Contribution
		out.Signals = append(out.Signals, is)
	}
	for i := range out.Signals {
		out.Signals[i].Share = math.Round(1000*out.Signals[i].Contribution/out.Score) / 1000
	}
	out.Score = math.Round(out.Score*10) / 10
	return out
}

// Summary says why an account is where it is, in words a CSM reads at a
// glance: its band and score, then what pulls it down.
func (h Health) Summary() []string {
	out := []string{fmt.Sprintf("health %d (%s)", h.Score, h.Band)}
	for _, s := range h.Intent.Signals {
		out = append(out, s.Words())
	}
	for _, c := range h.Components {
		if c.Present && c.Score < 50 && c.Name != model.Risk {
			out = append(out, fmt.Sprintf("%s %d: %s", c.Name, c.Score, c.Inputs))
		}
	}
	return out
}

// Words says what a cancel-intent signal saw: how often, when and by whom.
func (s IntentSignal) Words() string {
	if len(s.Hits) == 0 {
		return fmt.Sprintf("%s: %s (%.0f%% of the cancel-intent score)", s.Name, s.Detail, 100*s.Share)
	}
	var who []string
	for _, h := range s.Hits {
		if h.User != "" && !slices.Contains(who, h.User) {
			who = append(who, h.User)
		}
	}
	words := fmt.Sprintf("%s once, on %s", s.Name, s.Hits[0].At.UTC().Format("2006-01-02 15:04"))
	if len(s.Hits) > 1 {
		words = fmt.Sprintf("%s %d times, last on %s", s.Name, len(s.Hits), s.Hits[0].At.UTC().Format("2006-01-02 15:04"))
	}
	if len(who) > 0 {
		words += " by " + strings.Join(who, ", ")
	}
	return words + fmt.Sprintf(" (%.0f%% of the cancel-intent score)", 100*s.Share)
}
