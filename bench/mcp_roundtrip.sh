#!/usr/bin/env bash
# Benchmark of `moziplus mcp` (issue 15, "Performance"): the round trip of one
# MCP tool call over stdio, `done`, measured by the official MCP client
# library (the `mcp` package, tests/mcp/drive.py in bench mode): from the
# client's send of `tools/call` to its parsed result, on a live server
# started once (as an agent CLI starts it). Each call finishes a different
# task that the caller holds, so every call is a real submission (check the
# caller, write the status and its event, commit, wake the daemon, on the
# project service the server opened once at start), not a refusal.
# Target: median < 5 ms.
#
# Usage: bench/mcp_roundtrip.sh [CALLS]   (default 300)
# Env:   PY = a python with the `mcp` package (default .tools/mcp-venv, as
#        scripts/test.sh installs it); BIN = the moziplus binary to measure
#        (default: `cargo build --release`, in CARGO_TARGET_DIR or target/);
#        KEEP=1 keeps the temp home.
set -euo pipefail
cd "$(dirname "$0")/.."

CALLS="${1:-300}"
PY="${PY:-$PWD/.tools/mcp-venv/bin/python}"
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked --bin moziplus >&2
  BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/moziplus"
fi
"$PY" -c 'import mcp' || { echo "no mcp package in $PY (run scripts/test.sh)" >&2; exit 1; }

HOME_DIR=$(mktemp -d)
[ -n "${KEEP:-}" ] || trap 'rm -rf "$HOME_DIR"' EXIT
mkdir -p "$HOME_DIR/config" "$HOME_DIR/projects"
printf 'daemon:\n  task_timeout: 3600\n' > "$HOME_DIR/config/default.yaml"
printf 'agents: []\n' > "$HOME_DIR/config/agents.yaml"
export MOZI_HOME="$HOME_DIR" MOZI_PROJECT=bench MOZI_AGENT=benchop
"$BIN" project create --id bench --name bench >/dev/null

# CALLS tasks, each claimed by the caller (an operator: no daemon runs here).
tasks=()
for _ in $(seq "$CALLS"); do
  t=$("$BIN" bb create --title "bench task")
  "$BIN" bb claim "$t" >/dev/null
  tasks+=("$t")
done

REPORT="$HOME_DIR/report.json"
MOZI_BIN="$BIN" "$PY" tests/mcp/drive.py "$REPORT" bench "${tasks[@]}"
"$PY" - "$REPORT" "$BIN" <<'PY'
import json, statistics, sys
r = json.load(open(sys.argv[1]))
t = sorted(r["round_trips_ms"])
q = lambda p: t[min(len(t) - 1, int(p * len(t)))]
print(f"moziplus mcp, tool call `done` over stdio ({sys.argv[2]}), {len(t)} calls:")
print(f"  median {statistics.median(t):.2f} ms   p90 {q(0.9):.2f} ms   p99 {q(0.99):.2f} ms   min {t[0]:.2f} ms   max {t[-1]:.2f} ms")
print(f"  target median < 5 ms: {'met' if statistics.median(t) < 5 else 'MISSED'}")
PY
"$BIN" bb read --json | "$PY" -c 'import json,sys; c=json.load(sys.stdin)["counts"]; print("  board afterwards:", {k: v for k, v in c.items() if v})'
