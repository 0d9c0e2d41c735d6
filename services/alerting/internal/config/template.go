package config

// Template is the configuration in force until a tenant puts one, and what
// `stickpoint alerting get` prints first: every alert-worthy signal raises
// an alert (seen with `stickpoint alerts list` and `alerts watch`), and
// nothing is delivered until channels are added.
const Template = `# Stickpoint alerting configuration. Put it with: stickpoint alerting put FILE
# Every field is described in the README ("Alerting").

owner_trait: csm_email        # the account trait naming its owner (CSM): e-mail recipient, Slack mention
# mrr_trait: mrr              # the trait {account: mrr} conditions read
# account_url: https://crm.example.com/accounts/{account_id}   # the link in each alert

channels: []                  # none yet: alerts are listed and watched, not delivered
# channels:
#   - id: team-hook
#     type: webhook           # a signed JSON POST (Stickpoint-Signature: t=...,v1=...)
#     url: https://example.com/hooks/stickpoint
#     secret: whsec_change_me
#   - id: cs-slack
#     type: slack             # a Slack incoming-webhook URL
#     url: https://hooks.slack.com/services/T000/B000/XXX
#   - id: owner-mail
#     type: email             # to the owner's address (owner_trait), or to: [list]
#     smtp: smtp.example.com:587
#     from: alerts@example.com
#     # username: alerts       # with password, for SMTP authentication
#     # password: secret
#     # starttls: opportunistic  # required, opportunistic or off
#     # timeout: 10s           # per attempt, any channel

rules:                        # the first rule matching a signal's kind (and when) raises its alert
  - kind: cancellation_requested
    severity: critical
  - kind: cancel_intent
    severity: high
    cooldown: 7d              # after a resolve, new evidence reopens the alert only after this
  - kind: onboarding_stalled
    severity: medium
    # when: [{trait: plan, op: in, value: [pro, team]}]   # also {account: fit|band|mrr, ...}
    # channels: [team-hook]
  - kind: onboarding_late
    severity: low
  - kind: health_red
    severity: medium

# escalation: {after: 24h, channels: [cs-slack]}   # not acknowledged within 24 h
`
