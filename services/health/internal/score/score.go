// Package score is health and cancel intent as pure functions of an
// account's usage rollups, its cancel-intent events, its traits, its
// onboarding status, its CSM sentiment and the clock. Every component
// says, in words, which inputs made it; a component without inputs is
// left out and the others' weights re-normalised, never counted as zero.
package score

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/stickpoint/stickpoint/pkg/specfile"
	"github.com/stickpoint/stickpoint/services/health/internal/model"
)

// DayUsage is one rollup row: an account's events on one UTC day, each
// messageId once; the names used (track events by name, pages and screens
// as "page:Name" and "screen:Name"); and the users who sent them.
type DayUsage struct {
	Day    time.Time
	Events int
	Names  []string
	Users  []string
	// UserSet, when not 0, is Users as bits of a numbering of the
	// account's users that its other days share (a backtest's memory
	// store numbers the first 64): Aggregate ORs the days' sets instead
	// of comparing the ids, which was most of its time.
	UserSet uint64
}

// Norms are the tenant's median active account over the window.
type Norms struct {
	ActiveDays float64
	Events     float64
}

// NormsOf are the norms of the tenant's accounts active in the window:
// the medians of their active days and of their events (the two middle
// values' mean for an even count; zero for none). It is exact, whatever
// the number of accounts: ClickHouse's median samples past 8,192 values.
func NormsOf(activeDays, events []float64) Norms {
	return Norms{ActiveDays: median(activeDays), Events: median(events)}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
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

// Usage is an account's usage as the score needs it, from its rollups
// (Aggregate here, or the same sums in SQL): over the window, and over
// the trend's two spans.
type Usage struct {
	ActiveDays int
	Events     int
	Users      int
	// Features are the key features used in the window.
	Features []string
	// Recent and Baseline are the events in the trend's spans.
	Recent, Baseline int
}

// Equal reports whether two usages are the same.
func (u Usage) Equal(o Usage) bool {
	return u.ActiveDays == o.ActiveDays && u.Events == o.Events && u.Users == o.Users && slices.Equal(u.Features, o.Features) &&
		u.Recent == o.Recent && u.Baseline == o.Baseline
}

// Equal reports whether two hits are the same.
func (h Hit) Equal(o Hit) bool {
	return h.Signal == o.Signal && h.At.Equal(o.At) && h.User == o.User && h.MessageID == o.MessageID
}

// Equal reports whether two sentiments are the same.
func (s Sentiment) Equal(o Sentiment) bool {
	return s.Score == o.Score && s.Note == o.Note && s.Author == o.Author && s.SetAt.Equal(o.SetAt) && s.ExpiresAt.Equal(o.ExpiresAt)
}

// Spans are the UTC days, midnight to midnight, each part of Usage covers.
type Spans struct{ Window, Recent, Baseline Days }

// Days is the UTC days From to To, both included.
type Days struct{ From, To time.Time }

func (d Days) has(t time.Time) bool { return !t.Before(d.From) && !t.After(d.To) }

// count is the number of days in the span.
func (d Days) count() float64 { return float64(d.To.Sub(d.From)/specfile.Day) + 1 }

// lastDays is the n UTC days ending with last.
func lastDays(last time.Time, n time.Duration) Days {
	return Days{From: last.Add(-(n/specfile.Day - 1) * specfile.Day), To: last}
}

// SpansOf is the spans of a model at now: the window ends today; the
// trend compares whole days, the Recent days before today against the
// Baseline days before them (today is partial, and would read as a drop
// every morning).
func SpansOf(h model.Health, now time.Time) Spans {
	today := now.UTC().Truncate(specfile.Day)
	recent := lastDays(today.Add(-specfile.Day), h.Recent)
	return Spans{Window: lastDays(today, h.Window), Recent: recent,
		Baseline: Days{From: recent.From.Add(-h.Baseline), To: recent.From.Add(-specfile.Day)}}
}

// Aggregate sums rollup rows into Usage.
func Aggregate(rows []DayUsage, keys []string, s Spans) Usage {
	// No maps and no copies of the users: this runs for every account at
	// every sweep of a backtest, and the copies were most of its time.
	var u Usage
	var users distinct
	var userSet uint64
	numbered := true               // every day's users are in a UserSet
	active := make([]int64, 0, 64) // the window's days, in Unix seconds
	for _, r := range rows {
		if s.Window.has(r.Day) {
			if d := r.Day.Unix(); !slices.Contains(active, d) {
				active = append(active, d)
			}
			u.Events += r.Events
			userSet |= r.UserSet
			numbered = numbered && (r.UserSet != 0 || len(r.Users) == 0)
			for _, n := range r.Names {
				if slices.Contains(keys, n) && !slices.Contains(u.Features, n) {
					u.Features = append(u.Features, n)
				}
			}
		}
		switch {
		case s.Recent.has(r.Day):
			u.Recent += r.Events
		case s.Baseline.has(r.Day):
			u.Baseline += r.Events
		}
	}
	u.ActiveDays, u.Users = len(active), bits.OnesCount64(userSet)
	if !numbered {
		for _, r := range rows {
			if s.Window.has(r.Day) {
				for _, id := range r.Users {
					users.add(id)
				}
			}
		}
		u.Users = users.count()
	}
	return u
}

// distinct counts distinct strings: in an array while they are few, as
// an account's users mostly are, in a map past that.
type distinct struct {
	few  [32]string
	n    int
	many map[string]struct{}
}

func (d *distinct) add(s string) {
	switch {
	case d.many != nil:
		d.many[s] = struct{}{}
	case slices.Contains(d.few[:d.n], s):
	case d.n < len(d.few):
		d.few[d.n] = s
		d.n++
	default:
		d.many = make(map[string]struct{}, 2*len(d.few))
		for _, f := range d.few {
			d.many[f] = struct{}{}
		}
		d.many[s] = struct{}{}
	}
}

func (d *distinct) count() int {
	if d.many != nil {
		return len(d.many)
	}
	return d.n
}

// Inputs are everything an account's health depends on.
type Inputs struct {
	Usage Usage
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

// Compute scores an account at now.
func Compute(m model.Model, in Inputs, now time.Time) Health {
	h := m.Health
	spans := SpansOf(h, now)
	trend := trendOf(h, in, spans)
	intent := intentOf(m, in, trend, now)
	comps := make([]Component, 0, len(model.ComponentNames))
	for _, name := range model.ComponentNames {
		if h.Weights[name] == 0 {
			continue
		}
		c := Component{Name: name, Weight: h.Weights[name]}
		switch name {
		case model.Adoption:
			c.Score, c.Present, c.Inputs = adoption(h.KeyFeatures, in, h.Window, now)
		case model.Engagement:
			c.Score, c.Present, c.Inputs = engagement(in, spans.Window, now)
		case model.Users:
			c.Score, c.Present, c.Inputs = users(in, h.SeatsTrait, now)
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
	out := Health{Components: comps, Intent: intent, ActiveUsers: in.Usage.Users}
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

func adoption(features []string, in Inputs, window time.Duration, now time.Time) (int, bool, string) {
	if len(features) == 0 {
		return 0, false, "no key features in the model"
	}
	if why := newcomer(in, now); why != "" {
		return 0, false, why
	}
	u := in.Usage
	var used, unused []string
	for _, f := range features {
		if slices.Contains(u.Features, f) {
			used = append(used, f)
		} else {
			unused = append(unused, f)
		}
	}
	words := fmt.Sprintf("used %d of %d key features in %s", len(used), len(features), specfile.FormatDuration(window))
	if len(used) > 0 {
		words += ": " + strings.Join(used, ", ")
	}
	if len(unused) > 0 {
		words += "; not used: " + strings.Join(unused, ", ")
	}
	return percent(float64(len(used)) / float64(len(features))), true, words
}

// newcomer says why an account's usage is not judged yet, or "" when it
// is. An account that has used nothing is judged by its onboarding while
// that is on track or at risk (the journey's targets say how soon use is
// due), and otherwise from a day after its first event: a sign-up's group
// call comes minutes or hours before its first use, and judging its empty
// window would score every new account red at sign-up, as if it had
// stopped using the product.
func newcomer(in Inputs, now time.Time) string {
	switch {
	case in.Usage.Events > 0:
		return ""
	case in.Onboarding == "on_track" || in.Onboarding == "at_risk":
		return "no usage yet, onboarding " + strings.ReplaceAll(in.Onboarding, "_", " ") + ": judged from its first use, or once onboarding is late"
	case in.FirstEvent.IsZero() || now.Sub(in.FirstEvent) < specfile.Day:
		return "no usage yet, under a day after its first event (its sign-up): judged from its first use or its first full day"
	}
	return ""
}

// lived is the part of the window since the account's first event: an
// account younger than the window is compared with what the tenant's
// median account does in as many days, not in the whole window.
func lived(window Days, first time.Time) Days {
	f := first.UTC().Truncate(specfile.Day)
	if !first.IsZero() && f.After(window.From) {
		window.From = f
	}
	if window.From.After(window.To) { // a first event stamped after today
		window.From = window.To
	}
	return window
}

func engagement(in Inputs, window Days, now time.Time) (int, bool, string) {
	u, norms := in.Usage, in.Norms
	if norms.ActiveDays <= 0 || norms.Events <= 0 {
		return 0, false, "no active account in the tenant to compare with"
	}
	if why := newcomer(in, now); why != "" {
		return 0, false, why
	}
	days := lived(window, in.FirstEvent)
	share := days.count() / window.count()
	normDays, normEvents := norms.ActiveDays*share, norms.Events*share
	s := percent((math.Min(1, float64(u.ActiveDays)/normDays) + math.Min(1, float64(u.Events)/normEvents)) / 2)
	if share < 1 {
		return s, true, "active " + strconv.Itoa(u.ActiveDays) + " of the " + strconv.Itoa(int(days.count())) + " days since its first event, with " +
			strconv.Itoa(u.Events) + " events; the tenant's median account in as many days: " + trim(normDays) + " days, " + trim(normEvents) + " events"
	}
	return s, true, "active " + strconv.Itoa(u.ActiveDays) + " of " + strconv.Itoa(int(window.count())) + " days with " + strconv.Itoa(u.Events) +
		" events; the tenant's median account: " + trim(norms.ActiveDays) + " days, " + trim(norms.Events) + " events"
}

// trim is f as fmt's %.1f, without a trailing ".0".
func trim(f float64) string { return strings.TrimSuffix(strconv.FormatFloat(f, 'f', 1, 64), ".0") }

func users(in Inputs, trait string, now time.Time) (int, bool, string) {
	if in.Seats <= 0 {
		return 0, false, fmt.Sprintf("no seats: the account has no %q trait above 0", trait)
	}
	if why := newcomer(in, now); why != "" {
		return 0, false, why
	}
	return percent(float64(in.Usage.Users) / in.Seats), true, strconv.Itoa(in.Usage.Users) + " active users of " + trim(in.Seats) + " seats"
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

// minDropBaseline is the least usage, in events per day, that usage_drop
// compares with: an account that never used the product daily (a stalled
// onboarding, a trial poked once) has no usage to drop, and its low use
// already shows in engagement and onboarding.
const minDropBaseline = 1.0

// trendOf compares the events per day of the trend's spans. The baseline
// starts no earlier than the account's first event.
func trendOf(h model.Health, in Inputs, s Spans) trendResult {
	recent, base := s.Recent, s.Baseline
	first := in.FirstEvent.UTC().Truncate(specfile.Day)
	if !in.FirstEvent.IsZero() && first.After(base.From) {
		base.From = first
	}
	if base.To.Before(base.From) || base.count() < minBaselineDays {
		return trendResult{words: fmt.Sprintf("no baseline yet: under %d days of usage before the %s before today", minBaselineDays, specfile.FormatDuration(h.Recent))}
	}
	t := trendResult{recent: float64(in.Usage.Recent) / recent.count(), baseline: float64(in.Usage.Baseline) / base.count(), present: true}
	if t.baseline == 0 {
		return trendResult{words: fmt.Sprintf("no baseline: no usage in the %d days before the %s before today", int(base.count()), specfile.FormatDuration(h.Recent))}
	}
	ratio := t.recent / t.baseline
	t.score = percent(ratio)
	// Joined, not formatted: the words are made at every scoring, and
	// fmt was most of the time of the health components.
	t.words = specfile.FormatDuration(h.Recent) + " before today: " + trim(t.recent) + " events/day against " + trim(t.baseline) +
		" in the " + strconv.Itoa(int(base.count())) + " days before (" + strconv.Itoa(int(math.Round(100*ratio))) + "%)"
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
			if !t.present || t.baseline < minDropBaseline || t.recent > (1-sig.Drop)*t.baseline {
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
