#!/usr/bin/env bash
# Writes, as JSON lines of Segment calls for `stickpoint send`, 30 days of
# history for three accounts of 5 seats and 5 users each, with timestamps
# relative to now (the README's health walkthrough):
#   healthy-co     uses all four key features every weekday
#   collapsing-co  the same until 8 days ago, and nothing since
#   leaving-co     normal use, and in the last 3 days four billing-page
#                  views and a data export
# Usage: scripts/health-demo.sh > health-demo.jsonl
set -euo pipefail

features=("Report Built" "Dashboard Shared" "Alert Created" "Source Connected")

group() { # account, csm
  printf '{"type":"group","userId":"%s-u1","groupId":"%s","traits":{"name":"%s","plan":"pro","seats":5,"industry":"software","employees":50,"csm_email":"%s"},"timestamp":"%s"}\n' \
    "$1" "$1" "$1" "$2" "$(date -u -d '31 days ago' +%Y-%m-%dT09:00:00Z)"
}

use() { # account, first day ago, last day ago: every weekday in between
  local day ago u f
  for ((ago = $2; ago >= $3; ago--)); do
    [[ $(date -u -d "$ago days ago" +%u) -ge 6 ]] && continue
    day=$(date -u -d "$ago days ago" +%Y-%m-%d)
    for u in 1 2 3 4 5; do
      for f in "${features[@]}"; do
        printf '{"type":"track","userId":"%s-u%d","event":"%s","context":{"groupId":"%s"},"timestamp":"%sT1%d:00:00Z"}\n' "$1" "$u" "$f" "$1" "$day" "$u"
      done
    done
  done
}

at() { date -u -d "$1 ago" +%Y-%m-%dT%H:%M:%SZ; }

group healthy-co ann@example.com
use healthy-co 30 1
group collapsing-co ann@example.com
use collapsing-co 30 8
group leaving-co raj@example.com
use leaving-co 30 1
for when in "70 hours" "50 hours" "26 hours" "5 hours"; do
  printf '{"type":"page","userId":"leaving-co-u2","name":"Billing","properties":{"path":"/settings/billing/plans"},"context":{"groupId":"leaving-co"},"timestamp":"%s"}\n' "$(at "$when")"
done
printf '{"type":"track","userId":"leaving-co-u1","event":"Data Exported","properties":{"rows":250000},"context":{"groupId":"leaving-co"},"timestamp":"%s"}\n' "$(at "4 hours")"
