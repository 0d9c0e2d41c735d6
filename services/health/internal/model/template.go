package model

// Template is the default model, commented: what `stickpoint health model
// get` prints until a tenant puts its own. Every field may be left out;
// the values below are the defaults.
const Template = `# Stickpoint health model: how health is scored, which behaviour shows an
# intent to cancel, what a churn is, and which accounts fit.
# Change it with: stickpoint health model put FILE (YAML or JSON).
# Durations: w, d, h, m, s, largest first (7d, 1d12h).

health:
  window: 30d                           # usage components look at the last 30 UTC days
  bands: {red: 40, yellow: 70}          # below 40 red, below 70 yellow, else green
  # The events that show the product's value is being used. Adoption is the
  # share of them used in the window; with none listed it is left out.
  key_features: []
  components:                           # weights; a component without inputs is left out and the rest re-normalised
    adoption:   {weight: 20}            # share of key_features used in the window
    engagement: {weight: 20}            # active days and events in the window, against the tenant's median account (in as many days, for a younger account)
    users:      {weight: 15, seats_trait: seats}   # active users in the window against licensed seats (the trait)
    trend:      {weight: 15, recent: 7d, baseline: 28d}   # recent usage against the account's own baseline
    milestones: {weight: 15}            # onboarding status, from milestone tracking (needs a journey)
    risk:       {weight: 15}            # cancel-intent score, as a penalty
    sentiment:  {weight: 10}            # CSM sentiment (stickpoint health sentiment), while not expired
  changed: {drop: 15, within: 7d}       # signal "health changed" on a band change or a drop this large

cancel_intent:
  threshold: 50                         # a cancel_intent signal when the score reaches this
  signals:                              # each event adds its weight, halved every half_life; one signal adds at most twice its weight
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
      computed: usage_drop              # on while recent usage (trend.recent) is this far below the baseline (trend.baseline)
      drop: 50%
      weight: 55
  cancellation_requested: {event: Cancellation Requested}   # an immediate signal

churn:
  event: Subscription Cancelled         # or the trait below changing to the value
  trait: {name: status, value: cancelled}
  reason_property: reason               # the event property (or trait) giving the reason

fit:
  default: stretch                      # good, stretch or bad
  rules: []                             # first match wins, e.g.
  #  - fit: bad
  #    when: [{trait: employees, op: lt, value: 5}]
  #  - fit: good
  #    when: [{trait: industry, op: in, value: [software, agency]}, {trait: employees, op: gte, value: 20}]
`
