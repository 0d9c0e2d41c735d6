package backtest

import (
	"strings"
	"testing"
	"time"
)

var day0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(days int) time.Time { return day0.Add(time.Duration(days) * 24 * time.Hour) }

// TestComputeByHand checks every figure against values worked out by hand.
func TestComputeByHand(t *testing.T) {
	in := Inputs{
		From: day0, To: at(30),
		Accounts: []Account{{"a", "good"}, {"b", "good"}, {"c", "good"}, {"d", "bad"}, {"e", "good"}, {"f", "good"}, {"g", "stretch"}, {"h", "good"}},
		Outcomes: map[string]Outcome{
			"a": {Churned: true, At: at(20)},
			"b": {Churned: true, At: at(25)},
			"c": {Churned: true, At: at(10), Reason: "price"}, // alerted only after: a worst miss
			"d": {Churned: true, At: at(12)},                  // bad fit, no alert: a miss, not a worst one
			"h": {Churned: true, At: at(28)},
		},
		Alerts: []AlertEvent{
			{At: at(11), Account: "a", Kind: "cancel_intent", Change: ChangeOpened},
			{At: at(15), Account: "a", Kind: "health_red", Change: ChangeOpened},
			{At: at(16), Account: "a", Kind: "health_red", Change: "auto_resolved"},
			{At: at(18), Account: "a", Kind: "health_red", Change: ChangeReopened},
			{At: at(5), Account: "b", Kind: "onboarding_stalled", Change: ChangeOpened},
			{At: at(11), Account: "c", Kind: "cancel_intent", Change: ChangeOpened},
			{At: at(27), Account: "h", Kind: "cancellation_requested", Change: ChangeOpened}, // not foresight
			{At: at(28), Account: "h", Kind: "churn_recorded", Change: ChangeOpened},         // not counted
			{At: at(3), Account: "e", Kind: "health_red", Change: ChangeOpened},              // a false alarm
			{At: at(4), Account: "e", Kind: "health_red", Change: "escalated"},               // not an opening
		},
	}
	r := Compute(in)
	if r.Accounts != 8 || r.Churned != 5 || r.Retained != 3 {
		t.Fatalf("accounts %d churned %d retained %d, want 8, 5, 3", r.Accounts, r.Churned, r.Retained)
	}
	// a and b had a risk alert before churning; c, d and h did not.
	if r.Recall.Overall != (Share{Count: 2, Of: 5, Share: 0.4}) {
		t.Errorf("recall %+v, want 2 of 5", r.Recall.Overall)
	}
	want := []Kind{
		{"cancel_intent", Share{1, 5, 0.2}}, {"health_red", Share{1, 5, 0.2}},
		{"onboarding_stalled", Share{1, 5, 0.2}}, {"cancellation_requested", Share{1, 5, 0.2}},
	}
	got := map[string]Share{}
	for _, k := range r.Recall.ByKind {
		got[k.Kind] = k.Share
	}
	if len(got) != len(want) {
		t.Errorf("recall by kind %+v, want %+v", r.Recall.ByKind, want)
	}
	for _, k := range want {
		if got[k.Kind] != k.Share {
			t.Errorf("recall of %s: %+v, want %+v", k.Kind, got[k.Kind], k.Share)
		}
	}
	// Leads: a 20-11 = 9 days, b 25-5 = 20 days. Nearest rank of 2:
	// p25 rank 1, median rank 1, p75 rank 2.
	d := 24 * time.Hour
	if r.Lead != (Lead{N: 2, P25: 9 * d, Median: 9 * d, P75: 20 * d}) {
		t.Errorf("lead %+v, want p25 9d, median 9d, p75 20d", r.Lead)
	}
	// Retained: e (alerted), f, g.
	if r.FalseAlarms.Share != (Share{1, 3, 1.0 / 3}) {
		t.Errorf("false alarms %+v, want 1 of 3", r.FalseAlarms.Share)
	}
	// Openings and reopenings but churn_recorded: a 3, b 1, c 1, h 1, e 1
	// = 7, over 8 accounts and 30 days: 7 / 0.08 / 1 = 87.5.
	if got := r.FalseAlarms.PerHundredAccountsMonth; got < 87.499 || got > 87.501 {
		t.Errorf("alerts per 100 accounts per month %v, want 87.5", got)
	}
	if r.Precision != (Share{2, 3, 2.0 / 3}) {
		t.Errorf("precision %+v, want 2 of 3", r.Precision)
	}
	if len(r.WorstMisses) != 2 || r.WorstMisses[0].Account != "c" || r.WorstMisses[1].Account != "h" {
		t.Fatalf("worst misses %+v, want c then h (good fit, no risk alert before)", r.WorstMisses)
	}
	if m := r.WorstMisses[0]; m.Reason != "price" || strings.Join(m.Later, ",") != "cancel_intent" {
		t.Errorf("c's miss %+v, want reason price and cancel_intent only after", m)
	}
	if r.AlertsByKind["health_red"] != 3 || r.AlertsByKind["churn_recorded"] != 0 {
		t.Errorf("alerts by kind %v, want 3 health_red openings and no churn_recorded", r.AlertsByKind)
	}
}

func TestComputeWithNothingToMeasure(t *testing.T) {
	r := Compute(Inputs{From: day0, To: at(1)})
	if r.Recall.Overall.Share != 0 || r.Lead.N != 0 || r.FalseAlarms.PerHundredAccountsMonth != 0 || r.Precision.Of != 0 {
		t.Errorf("an empty backtest reports zeros, got %+v", r)
	}
}

func TestParseOutcomes(t *testing.T) {
	got, err := ParseOutcomes(strings.NewReader("account,outcome,time\nacme,churned,2026-03-01\nglobex, retained,\ninitech,churned,2026-03-02T10:00:00Z\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || !got["acme"].Churned || !got["acme"].At.Equal(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)) ||
		got["globex"].Churned || !got["initech"].At.Equal(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("got %+v", got)
	}
	for src, want := range map[string]string{
		"acct,outcome,time\n":                          "line 1: the header must be account,outcome,time",
		"account,outcome,time\nacme,gone,2026-03-01\n": `line 2: outcome "gone" is neither churned nor retained`,
		"account,outcome,time\nacme,churned,\n":        "line 2: time: required for a churn",
		"account,outcome,time\nacme,churned,March\n":   `line 2: time: "March" is not a time`,
	} {
		if _, err := ParseOutcomes(strings.NewReader(src)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", src, err, want)
		}
	}
}
