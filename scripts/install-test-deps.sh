#!/usr/bin/env bash
# Installs what the tests run against and the machine may lack: Debian's
# clickhouse-server (a real server process that tests start on free loopback
# ports) and the embedded engine's libchdb.so.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

have_server() {
  [[ -n "${STICKPOINT_CLICKHOUSE_SERVER:-}" ]] || command -v clickhouse-server >/dev/null || [[ -x /usr/sbin/clickhouse-server ]]
}
if ! have_server; then
  if ! command -v apt-get >/dev/null; then
    echo "install-test-deps: clickhouse-server is missing and apt-get is not available; install ClickHouse server or set STICKPOINT_CLICKHOUSE_SERVER" >&2
    exit 1
  fi
  sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo"
  echo "install-test-deps: installing clickhouse-server with apt-get" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq clickhouse-server >/dev/null
fi
"$here/fetch-chdb.sh"

# Real Segment and RudderStack SDKs for the ingest conformance tests.
clients="$here/../services/ingest/testdata/sdk-clients"
# package-lock.json pins every transitive package by version and integrity
# hash. `npm install --no-save` installs exactly that and leaves the lock
# untouched; `npm ci` would be the usual choice, but npm refuses this lock for
# lacking other platforms' optional packages (npm/cli#4828).
if [[ ! -d "$clients/node_modules/@segment/analytics-node" || ! -d "$clients/node_modules/@rudderstack/rudder-sdk-node" || "$clients/package.json" -nt "$clients/node_modules" || "$clients/package-lock.json" -nt "$clients/node_modules" ]]; then
  command -v npm >/dev/null || { echo "install-test-deps: npm is required for the SDK conformance tests" >&2; exit 1; }
  echo "install-test-deps: installing the Segment and RudderStack SDKs for conformance tests" >&2
  (cd "$clients" && npm install --no-save --silent >/dev/null && touch node_modules)
fi
