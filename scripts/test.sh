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

cargo test --locked "$@"
