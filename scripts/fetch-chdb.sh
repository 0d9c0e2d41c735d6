#!/usr/bin/env bash
# Fetches libchdb.so, the embedded ClickHouse engine, from the npm package
# @chdb/lib-linux-x64-gnu (pinned, sha256-checked) into the user cache,
# once. The Go store finds it there (chstore.DefaultLibPath).
set -euo pipefail

VERSION=26.5.3 # keep in step with chstore.ChDBVersion
SHA256=b874e449710950da3abd7e20376f7bb3387d9e03adcc7082f022be18dfdf316a

cache="${XDG_CACHE_HOME:-$HOME/.cache}"
dest="${STICKPOINT_CHDB_LIB:-$cache/stickpoint/chdb/$VERSION/libchdb.so}"
if [[ -s "$dest" ]]; then
  exit 0
fi
command -v npm >/dev/null || { echo "fetch-chdb: npm is required to download @chdb/lib-linux-x64-gnu" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch-chdb: downloading @chdb/lib-linux-x64-gnu@$VERSION (about 166 MB, once)" >&2
(cd "$tmp" && npm pack --silent "@chdb/lib-linux-x64-gnu@$VERSION" >/dev/null)
tgz="$(ls "$tmp"/*.tgz)"
echo "$SHA256  $tgz" | sha256sum -c --quiet - || { echo "fetch-chdb: checksum mismatch for $tgz" >&2; exit 1; }
tar -xzf "$tgz" -C "$tmp" package/libchdb.so
mkdir -p "$(dirname "$dest")"
mv "$tmp/package/libchdb.so" "$dest.partial"
mv "$dest.partial" "$dest"
echo "fetch-chdb: installed $dest" >&2
