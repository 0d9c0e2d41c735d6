package model

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/specfile"
)

// issueModel is the health issue's model file, which must be accepted as
// written.
const issueModel = `health:
  window: 30d
  bands: {red: 40, yellow: 70}          # below 40 red, below 70 yellow, else green
  key_features: [Report Built, Dashboard Shared, Alert Created, Source Connected]
  components:                           # weights; a component without inputs is left out and the rest re-normalised
    adoption:   {weight: 20}            # share of key_features used in the window
    engagement: {weight: 20}            # active days and events in the window, against the tenant's median account
    users:      {weight: 15, seats_trait: seats}   # active users in the window against licensed seats
    trend:      {weight: 15, recent: 7d, baseline: 28d}   # recent usage against the account's own baseline
    milestones: {weight: 15}            # onboarding status, from milestone tracking
    risk:       {weight: 15}            # cancel-intent score, as a penalty
    sentiment:  {weight: 10}            # CSM sentiment, while not expired
  changed: {drop: 15, within: 7d}       # signal "health changed" on a band change or a drop this large
cancel_intent:
  threshold: 50
  signals:
    - id: billing_page
      name: Viewed the billing or cancel page
      match: {type: page, where: [{property: path, op: prefix, value: /settings/billing}]}
      weight: 15
      half_life: 7d
    - id: export
      name: Bulk data export
      match: {event: Data Exported}
      weight: 30
      half_life: 14d
    - id: seats_removed
      name: Seats removed
      match: {event: Seats Removed}
      weight: 20
      half_life: 14d
    - id: usage_drop
      name: Usage dropped against the account's baseline
      computed: usage_drop              # computed, not sent: on while recent usage is this far below the baseline
      drop: 50%
      weight: 55
  cancellation_requested: {event: Cancellation Requested}   # an immediate signal
churn:
  event: Subscription Cancelled         # or the trait below changing to the value
  trait: {name: status, value: cancelled}
  reason_property: reason
fit:
  default: stretch
  rules:                                # first match wins
    - fit: bad
      when: [{trait: employees, op: lt, value: 5}]
    - fit: good
      when: [{trait: industry, op: in, value: [software, agency]}, {trait: employees, op: gte, value: 20}]
`

func TestTheIssuesModelIsAcceptedAsWritten(t *testing.T) {
	m, err := Parse([]byte(issueModel))
	if err != nil {
		t.Fatal(err)
	}
	h := m.Health
	if h.Window != 30*specfile.Day || h.Red != 40 || h.Yellow != 70 || len(h.KeyFeatures) != 4 || h.KeyFeatures[3] != "Source Connected" ||
		h.Weights[Adoption] != 20 || h.Weights[Sentiment] != 10 || h.SeatsTrait != "seats" || h.Recent != 7*specfile.Day || h.Baseline != 28*specfile.Day ||
		h.ChangedDrop != 15 || h.ChangedWithin != 7*specfile.Day {
		t.Errorf("health: %+v", h)
	}
	ci := m.CancelIntent
	if ci.Threshold != 50 || len(ci.Signals) != 4 || ci.CancellationRequested.Event != "Cancellation Requested" {
		t.Fatalf("cancel intent: %+v", ci)
	}
	bp := ci.Signals[0]
	if bp.Match == nil || bp.Match.Type != "page" || bp.Match.Where[0].Op != specfile.OpPrefix || bp.Weight != 15 || bp.HalfLife != 7*specfile.Day {
		t.Errorf("billing_page: %+v", bp)
	}
	if ud := ci.Signals[3]; ud.Computed != ComputedUsageDrop || ud.Drop != 0.5 || ud.Weight != 55 || ud.Match != nil {
		t.Errorf("usage_drop: %+v", ud)
	}
	if m.Churn != (Churn{Event: "Subscription Cancelled", TraitName: "status", TraitValue: "cancelled", ReasonProperty: "reason"}) {
		t.Errorf("churn: %+v", m.Churn)
	}
	for _, c := range []struct {
		traits map[string]any
		want   string
	}{
		{map[string]any{"employees": 3.0, "industry": "software"}, FitBad},
		{map[string]any{"employees": 50.0, "industry": "agency"}, FitGood},
		{map[string]any{"employees": 50.0, "industry": "retail"}, FitStretch},
		{map[string]any{}, FitStretch},
	} {
		if got := m.Fit.FitOf(c.traits); got != c.want {
			t.Errorf("fit of %v: %s, want %s", c.traits, got, c.want)
		}
	}
}

func TestTheDefaultIsTheTemplateAndOmittedFieldsDefaultToIt(t *testing.T) {
	d := Default()
	if d.Health.Weights[Trend] != 15 || len(d.CancelIntent.Signals) != 4 || d.Fit.Default != FitStretch || len(d.Health.KeyFeatures) != 0 {
		t.Errorf("default: %+v", d)
	}
	empty, err := Parse([]byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(empty, d) {
		t.Errorf("an empty model is not the default:\n%+v\n%+v", empty, d)
	}
	if empty.Health.Window != d.Health.Window || empty.Health.Weights[Adoption] != 20 || empty.CancelIntent.Threshold != 50 || empty.Churn.Event != d.Churn.Event {
		t.Errorf("an empty model does not take the defaults: %+v", empty)
	}
}

func TestABadModelIsRefusedWholeNamingLineAndField(t *testing.T) {
	cases := map[string]string{
		"health: {bands: {red: 80, yellow: 70}}":                                                                           "line 1: health.bands: red (80) must be below yellow (70)",
		"health: {window: 36h}":                                                                                            "health.window: must be whole days",
		"health: {components: {adoption: {weight: 0}}}":                                                                    "at least one component needs a weight above 0",
		"health: {components: {speed: {weight: 5}}}":                                                                       "health.components.speed: unknown field",
		"health:\n  key_features: [A, A]":                                                                                  `line 2: health.key_features[1]: "A" is listed twice`,
		"cancel_intent: {signals: [{id: x, weight: 5}]}":                                                                   "give exactly one of match",
		"cancel_intent: {signals: [{id: x, weight: 5, computed: mood}]}":                                                   `unknown computed signal "mood"`,
		"cancel_intent: {signals: [{id: x, weight: 5, match: {type: email}}]}":                                             `"email" is not one of`,
		"cancel_intent: {signals: [{id: x, weight: 5, match: {where: []}}]}":                                               "needs an event, or a type",
		"cancel_intent: {signals: [{id: x, weight: 5, computed: usage_drop, drop: 150%}]}":                                 "is not a share",
		"cancel_intent:\n  signals:\n  - {id: x, weight: 5, match: {event: A}}\n  - {id: x, weight: 5, match: {event: B}}": `line 4: cancel_intent.signals[1].id: duplicate signal id "x" (first on line 3)`,
		"fit: {rules: [{fit: great, when: [{trait: a, op: eq, value: 1}]}]}":                                               `fit.rules[0].fit: "great" is not one of`,
		"fit: {rules: [{fit: good, when: [{property: a, op: eq, value: 1}]}]}":                                             "fit.rules[0].when[0].property: unknown field",
		"churn: {trait: {name: status}}":                                                                                   "churn.trait.value: required",
	}
	for src, want := range cases {
		_, err := Parse([]byte(src))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "health model is invalid") {
			t.Errorf("%s:\n got %v\nwant %q", src, err, want)
		}
	}
	// Every problem is listed, not just the first.
	_, err := Parse([]byte("health: {window: 1x}\nfit: {default: great}\n"))
	if err == nil || !strings.Contains(err.Error(), "line 1") || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("want both problems: %v", err)
	}
}

// The traits a model reads are all that its fit and seats need: decoding
// only those gives every account the fit it has with all of them.
func TestTraitsReadAreAllTheFitNeeds(t *testing.T) {
	m, err := Parse([]byte(strings.Replace(issueModel, "seats_trait: seats", "seats_trait: licences", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.TraitsRead(), []string{"licences", "employees", "industry"}; !slices.Equal(got, want) {
		t.Errorf("traits read %q, want %q", got, want)
	}
	r := rand.New(rand.NewPCG(4, 4))
	fits := map[string]int{}
	for range 300 {
		all := accounts.Traits{}
		for _, name := range []string{"employees", "industry", "licences", "plan", "name"} {
			if r.IntN(4) == 0 {
				continue
			}
			var v any = []string{"software", "agency", "retail"}[r.IntN(3)]
			if name == "employees" || name == "licences" {
				v = r.IntN(40)
			}
			all[name], _ = json.Marshal(v)
		}
		want := m.Fit.FitOf(all.Values())
		if got := m.Fit.FitOf(all.ValuesOf(m.TraitsRead())); got != want {
			t.Fatalf("%s: fit %q from the traits read, %q from all", all, got, want)
		}
		fits[want]++
	}
	if len(fits) != 3 {
		t.Errorf("fits %v: the traits test too little", fits)
	}
}
