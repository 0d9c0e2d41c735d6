package journey

import (
	"strings"
	"testing"
	"time"

	"github.com/stickpoint/stickpoint/pkg/specfile"
)

// issueFile is the journey file of the milestones issue, which must be
// accepted as written.
const issueFile = `id: onboarding
name: Self-serve onboarding
applies_to: {trait: plan, in: [pro, team]}   # optional; default every account
start: created_at        # account trait holding the start; else the first event
stall_after: 7d          # no milestone reached for this long: stalled
at_risk_before: 2d       # next target this near and unmet: at risk
grace: 3d                # default lateness allowed before late becomes stalled
stick_point: 90d         # account age after which it counts as established
milestones:
  - id: connected
    name: Data source connected
    event: Source Connected
    target: 3d           # after the start; threshold defaults to {count: 1}
  - id: first_report
    name: First report built
    event: Report Built
    where:
      - {property: kind, op: in, value: [chart, table]}
    threshold: {count: 2}
    target: 7d
  - id: team
    name: Three teammates viewing reports
    event: Report Viewed
    threshold: {distinct_users: 3}
    target: 21d
    grace: 7d
  - id: habit
    name: Weekly habit
    event: Logged In
    threshold: {distinct_days: 3, window: 7d}   # 3 distinct UTC days within any 7-day window
    target: 30d
`

func TestTheIssueFileIsAcceptedAsWritten(t *testing.T) {
	j, err := Parse([]byte(issueFile))
	if err != nil {
		t.Fatal(err)
	}
	if j.ID != "onboarding" || j.Name != "Self-serve onboarding" || j.Start != "created_at" {
		t.Fatalf("header: %+v", j)
	}
	if j.AppliesTo == nil || j.AppliesTo.Trait != "plan" || strings.Join(j.AppliesTo.In, ",") != "pro,team" {
		t.Fatalf("applies_to: %+v", j.AppliesTo)
	}
	if j.StallAfter != 7*Day || j.AtRiskBefore != 2*Day || j.Grace != 3*Day || j.StickPoint != 90*Day {
		t.Fatalf("durations: %+v", j)
	}
	if len(j.Milestones) != 4 {
		t.Fatalf("milestones: %d", len(j.Milestones))
	}
	m := j.Milestones
	if m[0].Threshold != (Threshold{Kind: Count, N: 1}) || m[0].Target != 3*Day || m[0].Grace != 3*Day || m[0].Event != "Source Connected" {
		t.Errorf("connected: %+v", m[0])
	}
	if len(m[1].Where) != 1 || m[1].Where[0].Op != specfile.OpIn || len(m[1].Where[0].Values) != 2 || m[1].Where[0].Values[1] != "table" ||
		m[1].Threshold != (Threshold{Kind: Count, N: 2}) {
		t.Errorf("first_report: %+v", m[1])
	}
	if m[2].Threshold != (Threshold{Kind: DistinctUsers, N: 3}) || m[2].Grace != 7*Day || m[2].Target != 21*Day {
		t.Errorf("team: %+v", m[2])
	}
	if m[3].Threshold != (Threshold{Kind: DistinctDays, N: 3, Window: 7 * Day}) || m[3].Target != 30*Day {
		t.Errorf("habit: %+v", m[3])
	}
	if got := strings.Join(j.Events(), ","); got != "Source Connected,Report Built,Report Viewed,Logged In" {
		t.Errorf("events: %s", got)
	}
}

func TestTheSameJourneyInJSON(t *testing.T) {
	j, err := Parse([]byte(`{"id":"onboarding","milestones":[{"id":"a","event":"A","target":"3d",
		"where":[{"property":"plan.seats","op":"gte","value":5}],"threshold":{"distinct_users":2}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	c := j.Milestones[0].Where[0]
	if strings.Join(c.Path, "/") != "plan/seats" || c.Value != 5.0 || j.Milestones[0].Threshold.Kind != DistinctUsers {
		t.Fatalf("%+v", j.Milestones[0])
	}
}

func TestOnlyIDAndMilestonesAreRequired(t *testing.T) {
	j, err := Parse([]byte("id: j\nmilestones:\n  - {id: m, event: E, target: 36h}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if j.Name != "j" || j.AppliesTo != nil || j.Start != DefaultStart || j.StallAfter != DefaultStallAfter ||
		j.AtRiskBefore != DefaultAtRiskBefore || j.Grace != DefaultGrace || j.StickPoint != DefaultStickPoint {
		t.Fatalf("defaults: %+v", j)
	}
	m := j.Milestones[0]
	if m.Name != "m" || m.Threshold != (Threshold{Kind: Count, N: 1}) || m.Target != 36*time.Hour || m.Grace != DefaultGrace {
		t.Fatalf("milestone defaults: %+v", m)
	}
}

func TestTheTemplateParses(t *testing.T) {
	if _, err := Parse([]byte(Template)); err != nil {
		t.Fatal(err)
	}
}

func TestBadFilesNameTheFieldAndLine(t *testing.T) {
	base := "id: j\nmilestones:\n"
	cases := []struct {
		name, file, want string
	}{
		{"unknown operator", base + "  - id: m\n    event: E\n    target: 1d\n    where: [{property: a, op: like, value: x}]\n",
			`line 6: milestones[0].where[0].op: unknown operator "like"`},
		{"zero threshold", base + "  - {id: m, event: E, target: 1d, threshold: {count: 0}}\n",
			`line 3: milestones[0].threshold.count: must be a whole number from 1`},
		{"negative threshold", base + "  - {id: m, event: E, target: 1d, threshold: {distinct_users: -2}}\n",
			`milestones[0].threshold.distinct_users: must be a whole number from 1`},
		{"duplicate milestone", base + "  - {id: m, event: E, target: 1d}\n  - {id: m, event: F, target: 2d}\n",
			`line 4: milestones[1].id: duplicate milestone id "m" (first on line 3)`},
		{"bad duration", base + "  - {id: m, event: E, target: 3 days}\n",
			`line 3: milestones[0].target: "3 days" is not a duration`},
		{"bad journey duration", "id: j\nstall_after: 1x\nmilestones: [{id: m, event: E, target: 1d}]\n",
			`line 2: stall_after: "1x" is not a duration`},
		{"unknown field", base + "  - {id: m, event: E, target: 1d, deadline: 2d}\n",
			`line 3: milestones[0].deadline: unknown field`},
		{"missing target", base + "  - {id: m, event: E}\n", `line 3: milestones[0].target: required`},
		{"missing milestones", "id: j\n", `line 1: milestones: required`},
		{"two thresholds", base + "  - {id: m, event: E, target: 1d, threshold: {count: 1, distinct_users: 2}}\n",
			`milestones[0].threshold: must give exactly one of`},
		{"days without window", base + "  - {id: m, event: E, target: 1d, threshold: {distinct_days: 2}}\n",
			`milestones[0].threshold.window: required with distinct_days`},
		{"days over window", base + "  - {id: m, event: E, target: 1d, threshold: {distinct_days: 8, window: 7d}}\n",
			`8 distinct days can't fit in a 7-day window`},
		{"gt takes a number", base + "  - {id: m, event: E, target: 1d, where: [{property: n, op: gt, value: abc}]}\n",
			`milestones[0].where[0].value: gt compares numbers`},
		{"bad id", "id: 'no spaces'\nmilestones: [{id: m, event: E, target: 1d}]\n", `line 1: id: "no spaces" is not an id`},
		{"not yaml", "id: [\n", `did not find expected`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.file))
			if err == nil {
				t.Fatalf("accepted:\n%s", c.file)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q\ndoes not contain %q", err, c.want)
			}
		})
	}
}

func TestLimits(t *testing.T) {
	var b strings.Builder
	b.WriteString("id: j\nmilestones:\n")
	for i := range MaxMilestones + 1 {
		b.WriteString("  - {id: m" + strings.Repeat("x", i%3) + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ", event: E, target: 1d}\n")
	}
	if _, err := Parse([]byte(b.String())); err == nil || !strings.Contains(err.Error(), "33 milestones is over the limit of 32") {
		t.Fatalf("too many milestones: %v", err)
	}
	big := "id: j\n# " + strings.Repeat("x", MaxFileBytes) + "\nmilestones: [{id: m, event: E, target: 1d}]\n"
	if _, err := Parse([]byte(big)); err == nil || !strings.Contains(err.Error(), "over the limit of 65536") {
		t.Fatalf("oversize file: %v", err)
	}
}

func TestEveryProblemIsReported(t *testing.T) {
	_, err := Parse([]byte("id: j\nmilestones:\n  - {id: m, event: E, target: 1q}\n  - {id: n, event: E, target: 1d, threshold: {count: 0}}\n"))
	if err == nil || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), "line 4") {
		t.Fatalf("want both problems: %v", err)
	}
}
