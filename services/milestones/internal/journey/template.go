package journey

// Template is a commented example journey: `stickpoint journeys template`
// prints it, and the README shows it. Every optional field is shown with
// its default or an example.
const Template = `# A journey: the milestones a new account should reach, in order, and when.
# Put it with: stickpoint journeys put onboarding.yaml
id: onboarding                      # required; letters, digits, - and _
name: Self-serve onboarding         # default: the id
applies_to: {trait: plan, in: [pro, team]}   # optional; default every account.
                                    # An account follows the first journey that applies.
start: created_at        # account trait holding the start (a time); else the first event
stall_after: 7d          # no milestone reached for this long: stalled (default 7d)
at_risk_before: 2d       # next target this near and unmet: at risk (default 2d)
grace: 3d                # lateness allowed before late becomes stalled (default 3d)
stick_point: 90d         # account age after which it counts as established (default 90d)
milestones:              # required, 1 to 32, in the order they should be reached
  - id: connected                   # required, unique in the journey
    name: Data source connected     # default: the id
    event: Source Connected         # required: the track event (or page/screen name)
    target: 3d                      # required: how long after the start
                                    # threshold defaults to {count: 1}
  - id: first_report
    name: First report built
    event: Report Built
    where:                          # optional property filters, all must hold
      - {property: kind, op: in, value: [chart, table]}
      # ops: eq ne in exists gt gte lt lte prefix; property is a dotted path
    threshold: {count: 2}           # two such events (each messageId once)
    target: 7d
  - id: team
    name: Three teammates viewing reports
    event: Report Viewed
    threshold: {distinct_users: 3}
    target: 21d
    grace: 7d                       # this milestone's own grace
  - id: habit
    name: Weekly habit
    event: Logged In
    threshold: {distinct_days: 3, window: 7d}   # 3 distinct UTC days within any 7-day window
    target: 30d
`
