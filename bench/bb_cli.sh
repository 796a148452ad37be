#!/usr/bin/env bash
# Benchmark of the blackboard CLI (issue 2, "Performance").
#
# On a project with 10,000 pending tasks, measures side by side in ONE
# hyperfine run:
#   (a) `moziplus bb claim T-xxxx` as a whole process,
#   (b) the physical floor: the sqlite3 shell running the same single
#       UPDATE … RETURNING the claim runs,
#   (c) a python3 sqlite3 one-liner doing the same UPDATE (the least the
#       current Python CLI can cost),
#   (d) `moziplus bb read` (board summary) on the 10,000 tasks,
#   (e) `moziplus --version`: the binary's own start-up, for the profile.
# and prints the medians and the ratios moziplus/sqlite3 and moziplus/python.
# Targets: claim median < 5 ms, read median < 10 ms.
#
# Each tool works on its own copy of the seeded database (moziplus on the
# project's, sqlite3 and python3 on byte-identical copies), so one tool's exit
# (which checkpoints and deletes the WAL when it is the last connection) does
# not change the state the next tool's run starts from.
#
# Every claim run claims a different pending task, with no shell in between
# (hyperfine -N measures fork+exec+wait of the program itself): hyperfine's
# --parameter-scan runs each command once per value of {n} = 100…(99+RUNS),
# the commands interleaved value by value (so background load hits them
# alike), and each claim command owns a disjoint id range:
#   moziplus claims T-1{n}, sqlite3 claims T-2{n}, python3 claims T-3{n}.
# Medians are computed over those single runs from hyperfine's JSON.
#
# Usage: bench/bb_cli.sh [RUNS]        (default 300 runs per command)
# Env:   CARGO_TARGET_DIR (default: <repo>/target), BIN=path measures that
#        moziplus binary instead of building one (A/B of two builds),
#        BIN_B=path adds a second binary's claim and read to the SAME run
#        (interleaved with the others, on its own copy of the seeded home)
#        and prints B/A of the medians,
#        KEEP=1 keeps the temp home,
#        HOLD_OPEN=1 keeps one extra connection open on the database during the
#        measurement, as a running `moziplus serve` will: the WAL then persists
#        between calls instead of being created and checkpointed by each one
#        (applies to all three databases alike).
set -euo pipefail

RUNS="${1:-300}"
BIN_GIVEN="${BIN:-}"
[ "$RUNS" -ge 2 ] && [ "$RUNS" -le 900 ] || { echo "RUNS must be 2..900 (ids T-1100..T-1999 etc.)" >&2; exit 2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${BIN:-$TARGET/release/moziplus}"
TASKS=10000

need() { command -v "$1" >/dev/null 2>&1; }
if ! need hyperfine || ! need sqlite3; then
    echo "installing hyperfine and sqlite3 with apt-get…" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq hyperfine sqlite3 >&2
fi
need python3 || { echo "python3 is required" >&2; exit 1; }

if [ -z "${BIN_GIVEN:-}" ]; then
    echo "building the release binary…" >&2
    (cd "$ROOT" && cargo build --release --quiet)
fi

WORK="$(mktemp -d -t moziplus-bench-XXXXXX)"
if [ "${KEEP:-0}" != 1 ]; then trap 'rm -rf "$WORK"' EXIT; fi
HOMEDIR="$WORK/home"
DB="$HOMEDIR/projects/bench/blackboard.db"

# A clean environment: no MOZI_* of the caller may leak into the runs.
for v in $(env | grep -o '^MOZI_[A-Za-z0-9_]*' || true); do unset "$v"; done

"$BIN" --home "$HOMEDIR" project create --id bench --name "Benchmark" >/dev/null

# 10,000 pending tasks consistent with crates/store/migrations/0001_blackboard.sql, each
# with its task.created event as the store would write it.
NOW_MS="$(($(date +%s) * 1000))"
sqlite3 "$DB" <<SQL
.timeout 5000
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $TASKS)
INSERT INTO task (id, seq, title, description, kind, status, priority, creator,
                  round, max_rounds, created_at, updated_at)
SELECT printf('T-%04d', i), i, 'benchmark task ' || i, 'seeded by bench/bb_cli.sh',
       'code', 'pending', 1 + (i % 4), 'bench', 1, 3, $NOW_MS + i, $NOW_MS + i
FROM n;
INSERT INTO event (created_at, level, kind, task_id, actor, payload)
SELECT created_at, 'optional', 'task.created', id, 'bench',
       json_object('title', title, 'kind', kind)
FROM task ORDER BY seq;
COMMIT;
SQL
echo "seeded $(sqlite3 "$DB" "SELECT COUNT(*) FROM task WHERE status='pending'") pending tasks" >&2
sqlite3 "$DB" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
DB_SQLITE="$WORK/floor-sqlite3.db"
DB_PY="$WORK/floor-python3.db"
cp "$DB" "$DB_SQLITE"
cp "$DB" "$DB_PY"
HOMEDIR_B="$WORK/home-b"
DB_B="$HOMEDIR_B/projects/bench/blackboard.db"
B_COMMANDS=()
if [ -n "${BIN_B:-}" ]; then
    cp -a "$HOMEDIR" "$HOMEDIR_B"
    B_COMMANDS=("$BIN_B --home $HOMEDIR_B bb --project bench claim T-1{n} --agent bench"
                "$BIN_B --home $HOMEDIR_B bb --project bench read")
fi

NOW_SQL="CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
# The statement moziplus' claim_task runs (crates/store/src/tasks.rs), as text;
# ID is replaced per command.
claim_sql() {
    local id="$1"
    echo "UPDATE task SET status = 'working', claimed_by = 'bench-floor', claimed_at = $NOW_SQL,
    updated_at = $NOW_SQL, lease_expires_at = $NOW_SQL + 600000, not_before = NULL
  WHERE id = $id AND status = 'pending'
    AND (not_before IS NULL OR not_before <= $NOW_SQL)
    AND (assignee IS NULL OR assignee = 'bench-floor')
    AND NOT EXISTS (SELECT 1 FROM dependency d JOIN task dt ON dt.id = d.depends_on
                    WHERE d.task_id = $id AND dt.status <> 'done')
  RETURNING id;" | tr '\n' ' '
}
# The cheapest python3 there is, so the comparison flatters nobody: the real
# interpreter rather than a version-manager shim (pyenv's costs ~100 ms), run
# with -I -S (isolated, no site-packages: a one-liner needs only the stdlib).
PY="$(python3 -c 'import sys; print(sys.executable)')"
PY_FLAGS="-I -S"
PY_CODE="import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=5, isolation_level=None); c.execute('PRAGMA synchronous=NORMAL'); print(c.execute(sys.argv[2], (sys.argv[3], sys.argv[3])).fetchall()); c.close()"

HOLDER_PID=""
if [ "${HOLD_OPEN:-0}" = 1 ]; then
    "$PY" -c "import sqlite3, sys, time
cs = [sqlite3.connect(f) for f in sys.argv[1:]]
for c in cs: c.execute('SELECT COUNT(*) FROM task').fetchall()
time.sleep(3600)" "$DB" "$DB_SQLITE" "$DB_PY" ${BIN_B:+"$DB_B"} &
    HOLDER_PID=$!
    trap 'kill "$HOLDER_PID" 2>/dev/null; [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"' EXIT
    # Wait until it has the WAL index open before the first measured run.
    for _ in $(seq 100); do [ -e "$DB-shm" ] && [ -e "$DB_SQLITE-shm" ] && [ -e "$DB_PY-shm" ] && break; sleep 0.05; done
    [ -e "$DB-shm" ] && [ -e "$DB_SQLITE-shm" ] && [ -e "$DB_PY-shm" ] || { echo "the holder did not open the databases" >&2; exit 1; }
    echo "holding the database open (pid $HOLDER_PID), as a running daemon would" >&2
fi

LAST=$((99 + RUNS))
JSON="$WORK/hyperfine.json"
echo "hyperfine: $((5 + ${#B_COMMANDS[@]})) commands x $RUNS runs, interleaved…" >&2
hyperfine -N --style none --runs 1 --parameter-scan n 100 "$LAST" \
    --export-json "$JSON" \
    "$BIN --home $HOMEDIR bb --project bench claim T-1{n} --agent bench" \
    "sqlite3 -cmd '.timeout 5000' -cmd 'PRAGMA synchronous=NORMAL' $DB_SQLITE \"$(claim_sql "'T-2{n}'")\"" \
    "$PY $PY_FLAGS -c \"$PY_CODE\" $DB_PY \"$(claim_sql '?')\" T-3{n}" \
    "$BIN --home $HOMEDIR bb --project bench read" \
    "$BIN --version" \
    ${B_COMMANDS[@]+"${B_COMMANDS[@]}"}

# Every claim run claimed its own task, and only moziplus wrote events.
WORKING=0
for f in "$DB" "$DB_SQLITE" "$DB_PY"; do
    WORKING=$((WORKING + $(sqlite3 "$f" "SELECT COUNT(*) FROM task WHERE status = 'working'")))
done
EVENTS="$(sqlite3 "$DB" "SELECT COUNT(*) FROM event WHERE kind = 'task.claimed'")"
echo "tasks now working in the three copies: $WORKING (want $((3 * RUNS))); task.claimed events: $EVENTS (want $RUNS)" >&2
[ "$WORKING" -eq $((3 * RUNS)) ] && [ "$EVENTS" -eq "$RUNS" ] || { echo "a claim run did not claim its task" >&2; exit 1; }
if [ -n "${BIN_B:-}" ]; then
    WORKING_B="$(sqlite3 "$DB_B" "SELECT COUNT(*) FROM task WHERE status = 'working'")"
    [ "$WORKING_B" -eq "$RUNS" ] || { echo "a claim run of BIN_B did not claim its task ($WORKING_B of $RUNS)" >&2; exit 1; }
fi

[ -n "$HOLDER_PID" ] && echo "mode: HOLD_OPEN=1 (database held open by another connection)" || echo "mode: cold (no other connection to the database)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg)"
[ -n "${BIN_B:-}" ] && echo "A: $BIN; B: $BIN_B"
echo "versions: $("$BIN" --version), sqlite3 $(sqlite3 --version | cut -d' ' -f1), $("$PY" --version) ($PY $PY_FLAGS), $(hyperfine --version)"
python3 - "$JSON" "${BIN_B:+b}" <<'PY'
import json, statistics, sys
names = ["moziplus bb claim", "sqlite3 UPDATE…RETURNING", "python3 sqlite3 UPDATE…RETURNING",
         "moziplus bb read (10k tasks)", "moziplus --version (process start-up)"]
with_b = sys.argv[2] == "b"
if with_b:
    names += ["B: moziplus bb claim", "B: moziplus bb read (10k tasks)"]
results = json.load(open(sys.argv[1]))["results"]
times = {n: [] for n in names}
for i, r in enumerate(results):          # parameter by parameter, commands in order
    assert all(c == 0 for c in r["exit_codes"]), r["command"]
    times[names[i % len(names)]].extend(r["times"])
med = {n: statistics.median(t) * 1000 for n, t in times.items()}
print()
print("| command | median | mean ± σ | p10 | p90 | runs |")
print("|---|---|---|---|---|---|")
for n, t in times.items():
    ms = sorted(x * 1000 for x in t)
    q = statistics.quantiles(ms, n=10)
    print(f"| {n} | {med[n]:.2f} ms | {statistics.mean(ms):.2f} ± {statistics.stdev(ms):.2f} ms"
          f" | {q[0]:.2f} ms | {q[-1]:.2f} ms | {len(ms)} |")
claim, floor, py, read, _ = (med[n] for n in names[:5])
print()
print(f"claim: moziplus / sqlite3 = {claim / floor:.2f}x, moziplus / python3 = {claim / py:.2f}x")
print(f"targets: claim median {claim:.2f} ms (< 5 ms: {'met' if claim < 5 else 'MISSED'}), "
      f"read median {read:.2f} ms (< 10 ms: {'met' if read < 10 else 'MISSED'})")
if with_b:
    print(f"B/A medians: claim {med['B: moziplus bb claim'] / claim:.2f}x, "
          f"read {med['B: moziplus bb read (10k tasks)'] / read:.2f}x")
PY
