#!/usr/bin/env bash
# `bb claim` through the daemon's API on a PostgreSQL store (issue 30).
#
# A daemon (release build) on a home whose blackboards are in PostgreSQL
# runs one sandboxed `command` agent. Inside its sandbox the agent has no
# store URL: its `moziplus bb` reaches the board through the daemon's API
# (`POST /api/runs/bb`), as an agent on any host does. The agent claims
# N other tasks one after another, each `moziplus bb claim` a whole process,
# timed inside the sandbox with `date +%s%N` (the two `date` calls' own cost
# is measured the same way and reported beside it).
#
# Usage: MOZI_BENCH_PG_URL=<admin url> bench/cluster_claim.sh [N]
#   e.g. MOZI_BENCH_PG_URL='postgres://postgres@localhost/postgres?host=/tmp/pg' bench/cluster_claim.sh 150
# Needs bubblewrap (the sandbox) and psql. Target: median < 10 ms.
set -euo pipefail
N=${1:-150}
: "${MOZI_BENCH_PG_URL:?set MOZI_BENCH_PG_URL to a PostgreSQL admin URL}"
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN=${BIN:-$PWD/target/release/moziplus}
DB="bench_claim_$$"
psql "$MOZI_BENCH_PG_URL" -qc "CREATE DATABASE $DB"
base=${MOZI_BENCH_PG_URL%%\?*}; query=${MOZI_BENCH_PG_URL#"$base"}
export MOZI_STORE__URL="${base%/*}/$DB$query"
HOME_DIR=$(mktemp -d)
PORT=$((20000 + $$ % 20000))
cleanup() {
  [ -n "${SERVE:-}" ] && kill "$SERVE" 2>/dev/null || true
  wait 2>/dev/null || true
  psql "$MOZI_BENCH_PG_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
  rm -rf "$HOME_DIR"
}
trap cleanup EXIT
mkdir -p "$HOME_DIR/config"
printf 'daemon:\n  tick_interval: 1\nserver:\n  bind: 127.0.0.1:%s\n' "$PORT" > "$HOME_DIR/config/default.yaml"
cat > "$HOME_DIR/config/agents.yaml" <<YAML
agents:
  - id: m
    runtime: command
    permissions: sandbox
    kinds: [bench]
    command: ["sh", "-c", "for i in \$(seq 1 $N); do s=\$(date +%s%N); moziplus bb claim T-\$(printf %04d \$i) >/dev/null || echo failed; e=\$(date +%s%N); echo claim_us \$(( (e-s)/1000 )); done; for i in \$(seq 1 50); do s=\$(date +%s%N); e=\$(date +%s%N); echo date_us \$(( (e-s)/1000 )); done; moziplus bb done"]
YAML
"$BIN" --home "$HOME_DIR" project create --id bench --name bench >/dev/null
for i in $(seq 1 "$N"); do
  "$BIN" --home "$HOME_DIR" bb --project bench create --title "t$i" --kind other --force >/dev/null
done
"$BIN" --home "$HOME_DIR" bb --project bench create --title driver --kind bench --priority urgent >/dev/null
"$BIN" --home "$HOME_DIR" serve > "$HOME_DIR/serve.log" 2>&1 &
SERVE=$!
for _ in $(seq 1 120); do
  sleep 1
  if "$BIN" --home "$HOME_DIR" bb --project bench list --status done 2>/dev/null | grep -q driver; then break; fi
done
LOG=$(find "$HOME_DIR/projects/bench/artifacts" -name 'S-*.log' | head -1)
python3 - "$LOG" <<'PY'
import re, statistics, sys
claims, dates, failed = [], [], 0
for line in open(sys.argv[1]):
    m = re.search(r"(claim_us|date_us) (\d+)", line)
    if m:
        (claims if m.group(1) == "claim_us" else dates).append(int(m.group(2)) / 1000)
    failed += "failed" in line
assert claims and not failed, f"{len(claims)} claims timed, {failed} failed"
claims.sort()
print(f"bb claim through the daemon's API, PostgreSQL store, sandboxed run: {len(claims)} claims, "
      f"median {statistics.median(claims):.2f} ms, p90 {claims[int(len(claims) * 0.9)]:.2f} ms "
      f"(the timing's two date calls alone: median {statistics.median(dates):.2f} ms) (target median < 10 ms)")
PY
