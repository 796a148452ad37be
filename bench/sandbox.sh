#!/usr/bin/env bash
# Sandboxed run start and `bb done` through the daemon (permissions: sandbox).
#
# A real `moziplus serve` and a command agent with `permissions: sandbox` on
# a git workspace, N tasks one after another. The agent's first line prints
# the clock (ns); the run's claim time is the task's `claimed_at` (taken
# just before the daemon starts the run), so "claim -> agent exec'd inside
# the sandbox" is the agent's clock minus `claimed_at` (same host clock).
# The agent then times its own `moziplus bb done` (through the daemon's
# socket: the database is hidden) and prints that too; both go to the
# session log (stderr), read after the run.
#
# PERMS=workspace runs the same agent unsandboxed (its `bb done` then opens
# the database itself), for the cost of the sandbox alone. WORKSPACE=dir
# gives the project a plain directory instead of a git repository (no
# `git worktree add` on the run: what `cargo bench --bench run_start`
# measures unsandboxed).
#
#   bench/sandbox.sh [path/to/moziplus] [N]
set -euo pipefail
PERMS=${PERMS:-sandbox}
WORKSPACE=${WORKSPACE:-git}
BIN=${1:-target/release/moziplus}
N=${2:-20}
BIN=$(readlink -f "$BIN")
HOME_DIR=$(mktemp -d /tmp/moziplus-bench-sandbox-XXXXXX)
trap 'kill "$DAEMON" 2>/dev/null || true; wait "$DAEMON" 2>/dev/null || true; rm -rf "$HOME_DIR"' EXIT
mkdir -p "$HOME_DIR/config" "$HOME_DIR/projects"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'daemon:\n  tick_interval: 1\n  task_timeout: 60\n  kill_grace: 1\n  max_per_agent: 1\n' > "$HOME_DIR/config/default.yaml"
cat > "$HOME_DIR/agent.sh" <<'EOF'
#!/bin/bash
# bash's own clock (µs), no `date` child: the first thing the agent does.
echo "START ${EPOCHREALTIME/./}000" >&2
t0=${EPOCHREALTIME/./}
"$MOZI_BIN" bb done >/dev/null
t1=${EPOCHREALTIME/./}
echo "BBDONE $(( (t1 - t0) * 1000 ))" >&2
EOF
chmod +x "$HOME_DIR/agent.sh"
printf 'agents:\n  - id: boxed\n    runtime: command\n    permissions: %s\n    command: ["%s"]\n' "$PERMS" "$HOME_DIR/agent.sh" > "$HOME_DIR/config/agents.yaml"
mz() { "$BIN" --home "$HOME_DIR" "$@"; }
mz project create --id p --name p >/dev/null
REPO="$HOME_DIR/projects/p/repo"
mkdir -p "$REPO" "$HOME_DIR/projects/p/config"
if [ "$WORKSPACE" = git ]; then
  git -C "$REPO" init -q -b main
  git -C "$REPO" -c user.email=b@b -c user.name=b commit -q --allow-empty -m base
fi
echo "workspace: repo" > "$HOME_DIR/projects/p/config/project.yaml"
for i in $(seq "$N"); do mz bb --project p create --title "bench $i" >/dev/null; done
MOZI_HOME="$HOME_DIR" "$BIN" --home "$HOME_DIR" serve --bind "127.0.0.1:$PORT" >"$HOME_DIR/daemon.log" 2>&1 &
DAEMON=$!
DB="$HOME_DIR/projects/p/blackboard.db"
for _ in $(seq 600); do
  done_count=$(mz bb --project p list --status done --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  [ "$done_count" -ge "$N" ] && break
  sleep 0.5
done
python3 - "$DB" "$PERMS" "$WORKSPACE" <<'EOF'
import glob, re, sqlite3, statistics, sys
db, perms, workspace = sys.argv[1], sys.argv[2], sys.argv[3]
con = sqlite3.connect(db)
start, bbdone = [], []
for task, claimed, log in con.execute(
        "SELECT t.id, t.claimed_at, s.log_path FROM task t JOIN session s ON s.task_id = t.id"):
    text = open(log).read()
    m = re.search(r"START (\d+)", text)
    d = re.search(r"BBDONE (\d+)", text)
    if m and claimed:
        start.append(int(m.group(1)) / 1e6 - claimed)
    if d:
        bbdone.append(int(d.group(1)) / 1e6)
def show(name, xs):
    xs.sort()
    print(f"  {name:<44} n={len(xs)} median {statistics.median(xs):7.2f} ms  "
          f"p95 {xs[int(round((len(xs)-1)*0.95))]:7.2f} ms  max {xs[-1]:7.2f} ms")
print(f"sandbox: permissions: {perms}, command agent, {workspace} workspace")
show(f"claim -> agent exec'd ({perms})", start)
show(f"bb done ({'through the daemon, from inside' if perms == 'sandbox' else 'on the database'})", bbdone)
EOF
