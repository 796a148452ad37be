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
if [ ! -d .tools/node_modules/playwright-core ]; then
  echo "test.sh: installing playwright-core into .tools/ (npm)"
  npm install --prefix .tools --no-audit --no-fund --loglevel=error playwright-core@1 >/dev/null
fi

# The official openai and anthropic Python SDKs drive the Responses/Messages
# gateway tests (tests/gateway_protocols.rs); pinned, in a local venv.
SDK_VENV=.tools/sdk-venv
if ! "$SDK_VENV/bin/python" -c 'import openai, anthropic; assert openai.__version__ == "3.51.0" and anthropic.__version__ == "2.10.0"' 2>/dev/null; then
  echo "test.sh: installing openai 3.51.0 and anthropic 2.10.0 into $SDK_VENV (pip)"
  python3 -m venv "$SDK_VENV"
  "$SDK_VENV/bin/pip" install --quiet --disable-pip-version-check openai==3.51.0 anthropic==2.10.0 </dev/null
fi
export MOZI_TEST_PYTHON="$PWD/$SDK_VENV/bin/python"

cargo test --locked "$@"
