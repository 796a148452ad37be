#!/usr/bin/env bash
# Dashboard benchmarks (issue 5), release build, on loopback:
#   1. compressed size: the gzip bytes the daemon sends for the bundle's JS and
#      CSS (Accept-Encoding: gzip), and the uncompressed bytes.
#   2. first meaningful paint: headless Chromium loads `/` of a daemon running
#      the demo; time from navigation start to first contentful paint and to
#      the `mozi:first-data` mark (the overview's first daemon data rendered).
#      Median and p90 over N loads, cold (HTTP cache disabled) and warm.
# Needs node, /usr/bin/chromium and playwright-core in .tools/ (scripts/test.sh
# installs both).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20}
TARGET=${CARGO_TARGET_DIR:-target}
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN="$TARGET/release/moziplus"
fi
HOME_DIR=$(mktemp -d)
trap 'kill $DPID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$HOME_DIR"' EXIT
mkdir -p "$HOME_DIR/projects"
cp -r config agents prompt_templates skills "$HOME_DIR/"
PORT=${PORT:-18095}
MOZI_HOME="$HOME_DIR" "$BIN" serve --demo --bind 127.0.0.1:$PORT >"$HOME_DIR/daemon.log" 2>&1 &
DPID=$!
until curl -fs 127.0.0.1:$PORT/health >/dev/null; do sleep 0.1; done
BASE="http://127.0.0.1:$PORT"

if ! curl -fs "$BASE/" | grep -q '/assets/'; then
  echo "this binary has no dashboard bundle (built without Node?)" >&2
  exit 1
fi
GZ=0; RAW=0
for asset in $(curl -fs "$BASE/" | grep -oE '/assets/[^"]+\.(js|css)' | sort -u); do
  g=$(curl -fs -H 'Accept-Encoding: gzip' "$BASE$asset" | wc -c)
  r=$(curl -fs "$BASE$asset" | wc -c)
  echo "  $asset: $r bytes, gzip $g bytes"
  GZ=$((GZ + g)); RAW=$((RAW + r))
done
echo "bundle JS+CSS: $RAW bytes raw, $GZ bytes gzip ($((GZ / 1024)) KiB; budget 300 KiB)"

MOZI_URL="$BASE" MOZI_PLAYWRIGHT="${MOZI_PLAYWRIGHT:-$PWD/.tools}" N="$N" node bench/dashboard_paint.mjs
