#!/usr/bin/env bash
# Writes, as JSON lines of Segment calls for `stickpoint send`, four
# accounts on the journey of `stickpoint journeys template`, with
# timestamps relative to now:
#   done-co     created 40 days ago, reached every milestone  -> completed
#   first-co    created 30 days ago, only connected a source  -> stalled
#   idle10-co   created 10 days ago, did nothing              -> stalled
#   idle4-co    created 4 days ago, did nothing               -> late
# Usage: scripts/onboarding-demo.sh > onboarding-demo.jsonl
set -euo pipefail

ago() { date -u -d "$1 ago" +%Y-%m-%dT%H:%M:%SZ; }

group() { # account, created (ago), csm
  printf '{"type":"group","userId":"%s-admin","groupId":"%s","traits":{"name":"%s","plan":"pro","created_at":"%s","csm_email":"%s"},"timestamp":"%s"}\n' \
    "$1" "$1" "$1" "$(ago "$2")" "$3" "$(ago "$2")"
}

track() { # account, user, event, when (ago), properties
  printf '{"type":"track","userId":"%s","event":"%s","properties":%s,"context":{"groupId":"%s"},"timestamp":"%s"}\n' \
    "$2" "$3" "${5:-{\}}" "$1" "$(ago "$4")"
}

group done-co "40 days" ann@example.com
track done-co ann "Source Connected" "39 days"
track done-co ann "Report Built" "38 days" '{"kind":"chart"}'
track done-co bob "Report Built" "37 days" '{"kind":"table"}'
track done-co ann "Report Viewed" "36 days"
track done-co bob "Report Viewed" "36 days"
track done-co cat "Report Viewed" "35 days"
track done-co ann "Logged In" "34 days"
track done-co ann "Logged In" "33 days"
track done-co ann "Logged In" "31 days"

group first-co "30 days" ann@example.com
track first-co dan "Source Connected" "29 days"
track first-co dan "Report Built" "28 days" '{"kind":"pie"}'

group idle10-co "10 days" raj@example.com
group idle4-co "4 days" raj@example.com
