#!/usr/bin/env bash
# Daemon benchmarks (issue 3), release build, on loopback:
#   1. inbox event -> agent process started: N create_task lines pushed one at
#      a time; latency = agent's first instruction time - time before the push
#      (includes the writer process itself). Median and p90 over N.
#   2. idle RSS of `moziplus serve` with 20 projects after a few ticks.
# The tick itself is measured in-process: cargo bench --bench tick.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-30}
cargo build --release --quiet
BIN="$PWD/target/release/moziplus"
HOME_DIR=$(mktemp -d)
trap 'kill $DPID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$HOME_DIR"' EXIT
mkdir -p "$HOME_DIR/config"
cat > "$HOME_DIR/config/default.yaml" <<YAML
daemon:
  tick_interval: 30
  max_global_agents: 5
  max_per_agent: 5
inbox:
  watch_interval: 1
YAML
cat > "$HOME_DIR/agent.sh" <<'SH'
#!/bin/sh
echo "$(date +%s%N) $MOZI_TASK" >> "$MOZI_HOME/started.log"
exec "$MOZI_BIN" bb done "$MOZI_TASK"
SH
chmod +x "$HOME_DIR/agent.sh"
printf 'agents:\n  - id: fast\n    runtime: command\n    command: ["%s"]\n' "$HOME_DIR/agent.sh" > "$HOME_DIR/config/agents.yaml"
export MOZI_HOME="$HOME_DIR"
for i in $(seq -w 1 20); do "$BIN" project create --id "p$i" --name "p$i" >/dev/null; done
PORT=${PORT:-18093}
"$BIN" serve --bind 127.0.0.1:$PORT >"$HOME_DIR/daemon.log" 2>&1 &
DPID=$!
until curl -fs 127.0.0.1:$PORT/health >/dev/null; do sleep 0.1; done
sleep 5
RSS_KB=$(awk '/VmRSS/ {print $2}' /proc/$DPID/status)
echo "idle RSS with 20 projects: $((RSS_KB / 1024)) MiB ($RSS_KB kB)"

: > "$HOME_DIR/pushed.log"; : > "$HOME_DIR/started.log"
for i in $(seq 1 "$N"); do
  t0=$(date +%s%N)
  "$BIN" inbox push "{\"type\":\"create_task\",\"project\":\"p01\",\"task\":{\"title\":\"lat $i\"}}"
  echo "$t0 $i" >> "$HOME_DIR/pushed.log"
  # wait for this run's start before the next push (one at a time)
  until [ "$(wc -l < "$HOME_DIR/started.log" 2>/dev/null || echo 0)" -ge "$i" ]; do sleep 0.01; done
  sleep 0.2
done
paste -d' ' "$HOME_DIR/pushed.log" "$HOME_DIR/started.log" | awk '{ printf "%.3f\n", ($3 - $1) / 1e6 }' | sort -n > "$HOME_DIR/lat.txt"
python3 - "$HOME_DIR/lat.txt" <<'PY'
import statistics, sys
v = [float(x) for x in open(sys.argv[1])]
v.sort()
print(f"inbox event -> agent started: median {statistics.median(v):.1f} ms, p90 {v[int(len(v)*0.9)-1]:.1f} ms, min {v[0]:.1f} ms, max {v[-1]:.1f} ms (n={len(v)})")
PY
