#!/usr/bin/env bash
# Runs every Go fuzz target in the repo for a bounded time each. New inputs
# that fail land in the package's testdata/fuzz, which is committed.
set -euo pipefail
time="${1:-20s}"
cd "$(dirname "$0")/.."
found=0
while IFS= read -r file; do
  dir="$(dirname "$file")"
  for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)' "$file" | awk '{print $2}'); do
    found=1
    echo "== fuzz $dir $target ($time)"
    (cd "$dir" && go test -run '^$' -fuzz "^${target}\$" -fuzztime "$time" .)
  done
done < <(grep -rl --include='*_test.go' -E '^func Fuzz' pkg services 2>/dev/null || true)
[[ $found == 1 ]] || echo "no fuzz targets yet"
