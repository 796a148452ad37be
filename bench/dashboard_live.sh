#!/usr/bin/env bash
# Dashboard live-update benchmark (issue 14), release build, on loopback.
#
# A project `bench` with 10,000 tasks, 15 agents heartbeating every 10 s (one
# `moziplus bb heartbeat` process per agent per beat, each agent holding one
# claimed task), and the board of that project open in headless Chromium.
# bench/dashboard_live.mjs then measures
#   (a) CLI write -> task card updated in the DOM: `bb claim` (card moves to
#       `working`) and `bb done` (card moves to `done`), the time from the CLI
#       process's start to the DOM mutation that shows the card in its new
#       column (a MutationObserver in the page stamps it); p50/p90/p99/max;
#   (b) task-list API requests (`GET /api/projects/bench/tasks?…`, each page
#       counted) per blackboard event, in a quiet window where only the
#       heartbeats write and over the write samples.
# The 10,000 tasks are seeded straight into the blackboard with sqlite3 in one
# transaction (the CLI would take minutes for them); everything measured goes
# through the real CLI and the real daemon.
#
# Env: N (write samples, default 200), IDLE (seconds of the quiet window,
# default 30), BIN (a prebuilt moziplus; default: cargo build --release),
# PORT. Needs node, /usr/bin/chromium, sqlite3 and playwright-core in .tools/
# (scripts/test.sh installs the browser tools).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200}
IDLE=${IDLE:-30}
AGENTS=15
BEAT=10
TASKS=10000
TARGET=${CARGO_TARGET_DIR:-target}
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN="$TARGET/release/moziplus"
fi
BIN=$(realpath "$BIN")
HOME_DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$HOME_DIR"
}
trap cleanup EXIT
export MOZI_HOME="$HOME_DIR"
"$BIN" project create --id bench --name bench >/dev/null
DB="$HOME_DIR/projects/bench/blackboard.db"

# 10,000 tasks: T-0001..T-0200 urgent and pending (the agents' and the
# samples' tasks, at the top of the board), the rest high/normal/low with a
# mix of statuses; 200-character descriptions like bench/api_load.rs.
NOW=$(date +%s%3N)
sqlite3 "$DB" <<SQL
.timeout 5000
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $TASKS)
INSERT INTO task (id, seq, title, description, kind, status, priority, creator, created_at, updated_at, finished_at)
SELECT printf('T-%04d', i), i,
       'task ' || i || ' with a reasonably long title to look real',
       replace(hex(zeroblob(100)), '0', 'x'),
       'manual',
       CASE WHEN i <= 200 THEN 'pending'
            WHEN i % 10 < 6 THEN 'done'
            WHEN i % 10 < 9 THEN 'pending'
            ELSE 'blocked' END,
       CASE WHEN i <= 200 THEN 1 ELSE 2 + i % 3 END,
       'bench', $NOW + i, $NOW + i,
       CASE WHEN i > 200 AND i % 10 < 6 THEN $NOW + i END
FROM n;
COMMIT;
SQL
echo "seeded $(sqlite3 "$DB" 'SELECT COUNT(*) FROM task') tasks"

PORT=${PORT:-18097}
"$BIN" serve --bind 127.0.0.1:$PORT >"$HOME_DIR/daemon.log" 2>&1 &
PIDS+=($!)
until curl -fs 127.0.0.1:$PORT/health >/dev/null; do sleep 0.1; done
BASE="http://127.0.0.1:$PORT"
if ! curl -fs "$BASE/" | grep -q '/assets/'; then
  echo "this binary has no dashboard bundle (built without Node?)" >&2
  exit 1
fi

# The agents: a01..a15 each claim one task and renew its lease every 10 s,
# their beats spread evenly over the 10 s.
for k in $(seq 1 $AGENTS); do
  agent=$(printf 'a%02d' "$k")
  task=$(printf 'T-%04d' "$k")
  "$BIN" bb -p bench --agent "$agent" claim "$task" >/dev/null
  (
    sleep "$(awk -v k="$k" -v a=$AGENTS -v b=$BEAT 'BEGIN { print (k - 1) * b / a }')"
    while true; do
      "$BIN" bb -p bench --agent "$agent" heartbeat "$task" >/dev/null 2>>"$HOME_DIR/heartbeat.err" || true
      sleep $BEAT
    done
  ) &
  PIDS+=($!)
done
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"

MOZI_URL="$BASE" MOZI_BIN="$BIN" MOZI_PROJECT=bench N="$N" IDLE="$IDLE" \
  FIRST_SAMPLE=$((AGENTS + 1)) LAST_SAMPLE=200 \
  MOZI_PLAYWRIGHT="${MOZI_PLAYWRIGHT:-$PWD/.tools}" node bench/dashboard_live.mjs
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -s "$HOME_DIR/heartbeat.err" ]; then
  echo "heartbeat errors:" >&2
  sort "$HOME_DIR/heartbeat.err" | uniq -c >&2
fi
